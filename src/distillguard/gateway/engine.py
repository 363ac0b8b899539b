"""The decision engine shared by the reverse proxy, the LiteLLM guardrail and the Generic Guardrail API.

``Engine.decide`` scores one request with :func:`distillguard.signals.score_request` (the same implementation
the batch pipeline uses), folds it into the account's online state, evaluates the policy and returns a
:class:`Decision`. Failures of the scorer or the state store follow the policy's ``fail_mode``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from distillguard.gateway.batching import BatchScorer, signals_batch
from distillguard.gateway.policy import Policy, Verdict
from distillguard.schema import RecordError, content_text
from distillguard.gateway.state import StateError, StateStore

__all__ = ["Engine", "Decision", "ScorerError", "request_texts", "resolve_account", "default_scorer"]

Scorer = Callable[[str, str, Any], dict]


class ScorerError(RuntimeError):
    """The per-request scorer failed or is unavailable."""


def default_scorer() -> Scorer:
    """:func:`distillguard.signals.score_request`, imported on first use."""
    try:
        from distillguard.signals import score_request  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ScorerError(f"distillguard.signals.score_request is unavailable: {exc}") from exc
    return score_request


def _text(content: Any) -> str:
    """Text of a message ``content`` (schema.content_text); malformed parts are skipped, not fatal, here."""
    try:
        return content_text(content, "content")
    except RecordError:
        if isinstance(content, list):
            return "\n".join(_text(p) for p in content if isinstance(p, (str, dict)))
        return ""


def request_texts(body: dict) -> tuple[str, str, list | None]:
    """(system_text, user_text, tools) of a chat completions or Responses API request body."""
    system: list[str] = []
    user: list[str] = []

    def take(item: Any, default_role: str | None) -> None:
        if isinstance(item, str):
            user.append(item)
        elif isinstance(item, dict):
            role = item.get("role", default_role)
            if role in ("system", "developer"):
                system.append(_text(item.get("content")))
            elif role == "user":
                user.append(_text(item.get("content")))

    if isinstance(body.get("messages"), list):
        for m in body["messages"]:
            if isinstance(m, dict):
                take(m, None)
    if isinstance(body.get("instructions"), str):
        system.append(body["instructions"])
    inp = body.get("input")
    for item in ([inp] if isinstance(inp, str) else inp if isinstance(inp, list) else []):
        take(item, "user")
    if isinstance(body.get("prompt"), str):
        user.append(body["prompt"])
    tools = body.get("tools") if isinstance(body.get("tools"), list) else None
    return "\n\n".join(s for s in system if s), "\n\n".join(u for u in user if u), tools


def resolve_account(headers: Any, policy: Policy, secret: bytes | None = None) -> str | None:
    """Account id from the configured header, else a keyed hash of the bearer API key, else None."""
    v = headers.get(policy.account_header)
    if v:
        return v.strip()[:256]
    auth = headers.get("authorization") or ""
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        key = auth[7:].strip().encode()
        if secret is None:
            secret = os.environ.get(policy.key_hash_secret_env, "distillguard-default-key-hash").encode()
        return "key:" + hmac.new(secret, key, hashlib.sha256).hexdigest()[:24]
    return None


@dataclass
class Decision:
    request_id: str
    account_id: str
    verdict: Verdict
    inputs: dict = field(default_factory=dict)
    error: str | None = None  # scorer/store failure that led to a fail-open or fail-closed outcome
    fail_closed: bool = False

    @property
    def action(self) -> str:
        return self.verdict.action

    @property
    def effective(self) -> str:
        """What the gateway actually does: the action when enforced, else allow."""
        if self.fail_closed:
            return "unavailable"
        return self.verdict.effective_action

    def scores(self) -> dict:
        return {k: v for k, v in self.inputs.items() if not k.startswith("_")}


@contextmanager
def _scorer_errors():
    """Any scorer exception becomes :class:`ScorerError` (which the fail mode handles)."""
    try:
        yield
    except ScorerError:
        raise
    except Exception as exc:
        raise ScorerError(f"{type(exc).__name__}: {exc}") from exc


class Engine:
    #: identical prompts (retries, eval reruns, shared templates with identical fillers) are scored once
    CACHE_SIZE = 4096

    def __init__(self, policy: Policy, state: StateStore, scorer: Scorer | None = None,
                 key_hash_secret: bytes | None = None, batch: bool = True):
        """``scorer=None`` scores with ``distillguard.signals`` (micro-batched on the async path unless
        ``batch=False``); a given scorer is called once per request."""
        self.policy = policy
        self.state = state
        self._scorer = scorer
        self.key_hash_secret = key_hash_secret
        self._cache: OrderedDict[bytes, dict] = OrderedDict()
        self.batcher: BatchScorer | None = BatchScorer(signals_batch) if scorer is None and batch else None

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = default_scorer()
        return self._scorer

    @staticmethod
    def _key(system: str, user: str, tools: Any) -> bytes:
        return hashlib.blake2b(b"\x1f".join((system.encode("utf-8", "surrogatepass"),
                                             user.encode("utf-8", "surrogatepass"),
                                             orjson.dumps(tools) if tools else b"")), digest_size=16).digest()

    def _remember(self, key: bytes, sig: Any) -> dict:
        if not isinstance(sig, dict):
            raise ScorerError(f"score_request returned {type(sig).__name__}, expected dict")
        self._cache[key] = sig
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return sig

    def _cached(self, key: bytes) -> dict | None:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        return hit

    def _lookup(self, body: dict) -> tuple[str, str, Any, bytes, dict | None]:
        system, user, tools = request_texts(body)
        key = self._key(system, user, tools)
        return system, user, tools, key, self._cached(key)

    def score(self, body: dict) -> dict:
        """Signals of one request body, scored inline."""
        system, user, tools, key, hit = self._lookup(body)
        if hit is not None:
            return hit
        with _scorer_errors():
            return self._remember(key, self.scorer(system, user, tools))

    async def score_async(self, body: dict) -> dict:
        """Signals of one request body; with the default scorer, batched with concurrent requests."""
        if self.batcher is None:
            return self.score(body)
        system, user, tools, key, hit = self._lookup(body)
        if hit is not None:
            return hit
        with _scorer_errors():
            return self._remember(key, await self.batcher.score(system, user, tools))

    def decide(self, account_id: str, body: dict, request_id: str, path: str = "",
               now: float | None = None) -> Decision:
        """Score inline, update state, evaluate the policy."""
        try:
            sig, error = self.score(body), None
        except ScorerError as exc:
            sig, error = None, f"scorer: {exc}"
        return self._decide_with(sig, error, account_id, body, request_id, path, now)

    async def decide_async(self, account_id: str, body: dict, request_id: str, path: str = "",
                           now: float | None = None) -> Decision:
        """As :meth:`decide`, scoring through the micro-batcher (for the proxy and async hooks)."""
        try:
            sig, error = await self.score_async(body), None
        except ScorerError as exc:
            sig, error = None, f"scorer: {exc}"
        return self._decide_with(sig, error, account_id, body, request_id, path, now)

    def _decide_with(self, sig: dict | None, error: str | None, account_id: str, body: dict, request_id: str,
                     path: str, now: float | None) -> Decision:
        now = time.time() if now is None else now
        pol = self.policy
        inputs: dict[str, Any] = {
            "account_id": account_id, "path": path, "model": str(body.get("model") or ""),
            "stream": bool(body.get("stream")), "allowlisted": account_id in pol.allowlist,
        }
        if sig is None:
            if pol.fail_scorer == "closed":
                return self._failed(request_id, account_id, inputs, error or "scorer failed")
            sig = {}
        extraction = float(sig.get("extraction_score") or 0.0)
        template_id = sig.get("template_id")
        inputs.update(
            extraction_score=extraction,
            extraction_reason=str(sig.get("extraction_reason") or ""),
            capability=str(sig.get("capability") or "other"),
            template_id=str(template_id or ""),
            benchmark=str(sig.get("benchmark") or ""),
            benchmark_score=float(sig.get("benchmark_score") or 0.0),
        )
        override = None
        tier = pol.tier_of(account_id)
        try:
            st = self.state.update(account_id, now, extraction, template_id)
            feats = st.features(now, template_id)
            override = st.active_override(now)
            if st.tier:
                tier = st.tier
            inputs.update(feats)
            inputs.update(campaign_id=st.campaign_id or "", flagged=st.flagged)
        except StateError as exc:
            error = (error + "; " if error else "") + f"store: {exc}"
            if pol.fail_store == "closed":
                return self._failed(request_id, account_id, inputs, error)
        inputs["tier"] = tier
        if override:
            verdict = Verdict(override["action"], "override", override.get("reason") or "operator override",
                              True, int(override.get("retry_after_s") or 60), override.get("replace") or "strip")
        else:
            verdict = pol.evaluate(inputs)
        return Decision(request_id, account_id, verdict, inputs, error)

    def _failed(self, request_id: str, account_id: str, inputs: dict, error: str) -> Decision:
        v = Verdict("block", "fail_closed", error, True)
        return Decision(request_id, account_id, v, inputs, error, fail_closed=True)
