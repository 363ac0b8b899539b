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
from typing import Any, AsyncGenerator

from distillguard.gateway.engine import Decision, Engine
from distillguard.gateway.generic_guardrail import REFUSING, refusal_reason
from distillguard.gateway.policy import Policy, default_policy, load_policy
from distillguard.gateway.reasoning import REASONING_KEYS, summarize
from distillguard.gateway.state import open_state

__all__ = ["DistillGuardGuardrail", "LITELLM_VERSION"]

LITELLM_VERSION = "1.81.16"


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


def _item_type(item: Any) -> Any:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


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
        """The provider's account header if LiteLLM saw it, else the key's user or team id, else the key hash,
        else the client-supplied end-user id."""
        headers = ((data.get("proxy_server_request") or {}).get("headers") or {})
        lower = {str(k).lower(): v for k, v in headers.items()} if isinstance(headers, dict) else {}
        v = lower.get(self.engine.policy.account_header)
        if v and v != "[present]":
            return str(v)[:256]
        for attr in ("user_id", "team_id"):
            val = getattr(user_api_key_dict, attr, None)
            if val:
                return str(val)[:256]
        token = getattr(user_api_key_dict, "token", None)
        if token:
            return "litellm:" + str(token)[:24]
        end_user = getattr(user_api_key_dict, "end_user_id", None) or data.get("user")
        return f"end-user:{end_user}"[:256] if end_user else "anonymous"

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
        d = await self.engine.decide_async(self._account(user_api_key_dict, data), data, rid, f"litellm:{call_type}")
        eff = d.effective
        if eff in REFUSING:
            status = {"throttle": 429, "unavailable": 503}.get(eff, 403)
            self._audit(d, status)
            headers = {"Retry-After": str(d.verdict.retry_after_s)} if eff == "throttle" else None
            code = {"throttle": "distillguard_throttled", "step_up": "step_up_required",
                    "unavailable": "distillguard_unavailable"}.get(eff, f"distillguard_blocked:{d.verdict.reason}")
            raise HTTPException(status_code=status, headers=headers,
                                detail={"error": refusal_reason(d), "code": code, "request_id": rid})
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
        output = getattr(response, "output", None)  # Responses API
        if d.effective == "withhold_reasoning" and isinstance(output, list):
            kept = [o for o in output if _item_type(o) != "reasoning"]
            if len(kept) != len(output):
                try:
                    response.output = kept
                except (AttributeError, TypeError, ValueError):
                    output[:] = kept
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
        from distillguard.gateway.app import default_canary  # phrasing canary when DISTILLGUARD_CANARY_SECRET is set

        self._c = default_canary()

    def insert(self, account_id: str, text: str, now: float) -> str:
        return self._c.insert(account_id, text, now)


ZeroWidth = _ZW()
