"""LiteLLM integration: a ``CustomGuardrail`` class and the Generic Guardrail API handler.

Pinned to ``litellm[proxy]==1.81.16`` (the ``litellm`` extra). Two ways to use distillguard from a LiteLLM proxy:

1. In-process guardrail. Put ``examples/litellm/distillguard_guardrail.py`` next to the proxy's config.yaml and
   declare ``guardrail: distillguard_guardrail.DistillGuardGuardrail`` with ``mode: [pre_call, post_call]``.
   Pre-call it scores and decides (block, throttle and step-up raise an HTTP error to the caller); post-call it
   withholds reasoning or inserts a canary, streamed responses included. Configure it with the environment
   variables ``DISTILLGUARD_POLICY`` (policy YAML) and ``DISTILLGUARD_STATE`` (SQLite path or ``redis://`` URL),
   or the guardrail's ``litellm_params`` ``policy`` / ``state``.
2. Generic Guardrail API. Run ``distillguard gateway`` and point LiteLLM's ``generic_guardrail_api`` guardrail at it;
   :func:`generic_guardrail_response` answers ``POST /beta/litellm_basic_guardrail_api``. That API only carries
   text, so it can block, throttle, ask for step-up and insert canaries, but cannot strip reasoning fields.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncGenerator

from distillguard.gateway.engine import Decision, Engine
from distillguard.gateway.policy import Policy, default_policy, load_policy
from distillguard.gateway.reasoning import REASONING_KEYS, summarize
from distillguard.gateway.state import open_state

if TYPE_CHECKING:  # pragma: no cover
    from distillguard.gateway.app import Gateway

__all__ = ["generic_guardrail_response", "DistillGuardGuardrail", "LITELLM_VERSION"]

LITELLM_VERSION = "1.81.16"
_REFUSING = {"block", "throttle", "step_up", "unavailable"}


def _account_from_payload(payload: dict, gw: "Gateway") -> str:
    headers = payload.get("request_headers") or {}
    if isinstance(headers, dict):
        lower = {str(k).lower(): v for k, v in headers.items()}
        v = lower.get(gw.policy.account_header)
        if isinstance(v, str) and v:
            return v[:256]
    rd = payload.get("request_data") or {}
    for key in ("user_api_key_end_user_id", "user_api_key_user_id", "user_api_key_team_id"):
        if isinstance(rd.get(key), str) and rd[key]:
            return rd[key][:256]
    if isinstance(rd.get("user_api_key_hash"), str) and rd["user_api_key_hash"]:
        return "litellm:" + rd["user_api_key_hash"][:24]
    return "anonymous"


def _body_from_payload(payload: dict) -> dict:
    msgs = payload.get("structured_messages")
    if isinstance(msgs, list) and msgs:
        messages = [m for m in msgs if isinstance(m, dict)]
    else:
        messages = [{"role": "user", "content": t} for t in payload.get("texts") or [] if isinstance(t, str)]
    body: dict[str, Any] = {"messages": messages, "model": payload.get("model") or ""}
    if isinstance(payload.get("tools"), list):
        body["tools"] = payload["tools"]
    return body


def _reason_text(d: Decision) -> str:
    eff = d.effective
    if eff == "unavailable":
        return "distillguard_unavailable: request could not be screened"
    if eff == "throttle":
        return f"distillguard_throttled: retry after {d.verdict.retry_after_s} s"
    if eff == "step_up":
        return f"step_up_required: {d.verdict.reason}"
    return f"distillguard_blocked:{d.verdict.reason}"


def generic_guardrail_response(gw: "Gateway", payload: dict) -> dict:
    """Answer one Generic Guardrail API call (request or response phase)."""
    t0 = time.perf_counter()
    call_id = str(payload.get("litellm_call_id") or uuid.uuid4().hex)
    input_type = payload.get("input_type", "request")
    path = "litellm:" + str(input_type)
    if input_type == "response":
        d = gw._call_decisions.pop(call_id, None)
        if d is None or d.effective != "canary":
            return {"action": "NONE"}
        texts = payload.get("texts") or []
        now = time.time()
        new = [gw.canary.insert(d.account_id, t, now) if isinstance(t, str) and i == 0 else t
               for i, t in enumerate(texts)]
        return {"action": "GUARDRAIL_INTERVENED", "texts": new}
    account = _account_from_payload(payload, gw)
    d = gw.engine.decide(account, _body_from_payload(payload), call_id, path)
    eff = d.effective
    gw.audit(d, path, 403 if eff in _REFUSING else 200, None, 0, t0)
    if eff in _REFUSING:
        return {"action": "BLOCKED", "blocked_reason": _reason_text(d)}
    if eff == "canary":
        if len(gw._call_decisions) > 10_000:
            gw._call_decisions.clear()
        gw._call_decisions[call_id] = d
    return {"action": "NONE"}


# ------------------------------------------------------------------------------------------ CustomGuardrail

try:
    from litellm.integrations.custom_guardrail import CustomGuardrail as _Base
except ImportError:  # litellm not installed: the class still imports, and fails clearly when instantiated
    _Base = object  # type: ignore[assignment,misc]


def _strip_message(msg: Any, mode: str, max_chars: int) -> bool:
    changed = False
    text = ""
    for k in REASONING_KEYS:
        v = msg.get(k) if isinstance(msg, dict) else getattr(msg, k, None)
        if v:
            if isinstance(v, str) and not text:
                text = v
            changed = True
        if isinstance(msg, dict):
            msg.pop(k, None)
        elif hasattr(msg, k):
            try:
                setattr(msg, k, None)
                if hasattr(msg, "__dict__"):
                    msg.__dict__.pop(k, None)
            except (AttributeError, TypeError, ValueError):
                pass
    if changed and mode == "summary":
        if isinstance(msg, dict):
            msg["reasoning_content"] = summarize(text, max_chars)
        else:
            setattr(msg, "reasoning_content", summarize(text, max_chars))
    return changed


class DistillGuardGuardrail(_Base):  # type: ignore[misc,valid-type]
    """LiteLLM ``CustomGuardrail`` deciding through the same engine as the gateway."""

    def __init__(self, policy: str | Policy | None = None, state: Any = None, scorer=None, **kwargs):
        if _Base is object:
            raise ImportError("DistillGuardGuardrail needs LiteLLM: pip install 'distillguard[litellm]'")
        policy = policy or os.environ.get("DISTILLGUARD_POLICY")
        if isinstance(policy, str):
            policy = load_policy(policy)
        state = state or os.environ.get("DISTILLGUARD_STATE") or "distillguard-litellm.sqlite"
        store = open_state(state) if isinstance(state, str) else state
        self.engine = Engine(policy or default_policy(), store, scorer)
        self._decisions: dict[str, Decision] = {}
        super().__init__(**kwargs)

    def _account(self, user_api_key_dict: Any, data: dict) -> str:
        headers = ((data.get("proxy_server_request") or {}).get("headers") or {})
        lower = {str(k).lower(): v for k, v in headers.items()} if isinstance(headers, dict) else {}
        v = lower.get(self.engine.policy.account_header)
        if v:
            return str(v)[:256]
        for attr in ("end_user_id", "user_id", "team_id"):
            val = getattr(user_api_key_dict, attr, None)
            if val:
                return str(val)
        token = getattr(user_api_key_dict, "token", None) or getattr(user_api_key_dict, "api_key", None)
        return "litellm:" + str(token)[:24] if token else "anonymous"

    def _audit(self, d: Decision, status: int) -> None:
        row = {"request_id": d.request_id, "timestamp": time.time(), "account_id": d.account_id,
               "path": "litellm", "model": d.inputs.get("model"), "rule": d.verdict.rule,
               "action": d.verdict.action, "enforced": int(d.verdict.enforced), "reason": d.verdict.reason,
               "status_code": status, "upstream_status": None, "attempts": 0, "latency_ms": None,
               "scores": None, "error": d.error}
        try:
            self.engine.state.append_audit([row])
        except Exception:  # audit must never break the call path
            pass

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type):
        from fastapi import HTTPException

        rid = str(data.get("litellm_call_id") or uuid.uuid4().hex)
        d = self.engine.decide(self._account(user_api_key_dict, data), data, rid, f"litellm:{call_type}")
        eff = d.effective
        if eff in _REFUSING:
            status = {"throttle": 429, "unavailable": 503}.get(eff, 403)
            self._audit(d, status)
            headers = {"Retry-After": str(d.verdict.retry_after_s)} if eff == "throttle" else None
            code = {"throttle": "distillguard_throttled", "step_up": "step_up_required",
                    "unavailable": "distillguard_unavailable"}.get(eff, f"distillguard_blocked:{d.verdict.reason}")
            raise HTTPException(status_code=status, headers=headers,
                                detail={"error": _reason_text(d), "code": code, "request_id": rid})
        self._audit(d, 200)
        if eff in ("withhold_reasoning", "canary"):
            if len(self._decisions) > 10_000:
                self._decisions.clear()
            self._decisions[rid] = d
        return data

    def _pop(self, data: dict) -> Decision | None:
        return self._decisions.pop(str(data.get("litellm_call_id") or ""), None)

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict, response):
        d = self._pop(data)
        if d is None:
            return response
        pol = self.engine.policy
        for choice in getattr(response, "choices", None) or []:
            msg = getattr(choice, "message", None)
            if msg is None:
                continue
            if d.effective == "withhold_reasoning":
                _strip_message(msg, d.verdict.replace, pol.summary_chars)
            elif d.effective == "canary" and isinstance(getattr(msg, "content", None), str):
                msg.content = ZeroWidth.insert(d.account_id, msg.content, time.time())
        return response

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response,
                                                      request_data: dict) -> AsyncGenerator:
        d = self._pop(request_data)
        pol = self.engine.policy
        async for chunk in response:
            if d is not None and d.effective == "withhold_reasoning":
                for choice in getattr(chunk, "choices", None) or []:
                    delta = getattr(choice, "delta", None)
                    if delta is not None:
                        _strip_message(delta, "strip", pol.summary_chars)
            yield chunk


class _ZW:
    def __init__(self) -> None:
        from distillguard.gateway.canary import ZeroWidthCanary

        self._c = ZeroWidthCanary()

    def insert(self, account_id: str, text: str, now: float) -> str:
        return self._c.insert(account_id, text, now)


ZeroWidth = _ZW()
