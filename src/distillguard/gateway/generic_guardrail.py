"""LiteLLM Generic Guardrail API: ``POST /beta/litellm_basic_guardrail_api`` served by the gateway.

LiteLLM (``guardrail: generic_guardrail_api``) sends the request's texts (and, in 1.81, its structured messages and
the caller's key metadata) before the call and the response texts after it; we answer ``NONE``, ``BLOCKED`` (block,
throttle, step-up, fail-closed) or ``GUARDRAIL_INTERVENED`` (canary inserted into the response text). The API
carries text only, so withholding reasoning fields needs the in-process :mod:`~distillguard.gateway.litellm_guardrail`.

The account is the LiteLLM key's identity: ``user_api_key_user_id``, else ``user_api_key_team_id``, else the key
hash; the client-supplied end-user id is used only when the caller has no key identity at all.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from distillguard.gateway.engine import Decision

if TYPE_CHECKING:  # pragma: no cover
    from distillguard.gateway.app import Gateway

__all__ = ["generic_guardrail_response", "refusal_reason", "REFUSING"]

REFUSING = {"block", "throttle", "step_up", "unavailable"}
_PLACEHOLDER = "[present]"  # LiteLLM's stand-in for header values it does not forward


def _account_from_payload(payload: dict, gw: "Gateway") -> str:
    headers = payload.get("request_headers") or {}
    if isinstance(headers, dict):
        lower = {str(k).lower(): v for k, v in headers.items()}
        v = lower.get(gw.policy.account_header)
        if isinstance(v, str) and v and v != _PLACEHOLDER:
            return v[:256]
    rd = payload.get("request_data") or {}
    for key in ("user_api_key_user_id", "user_api_key_team_id"):
        if isinstance(rd.get(key), str) and rd[key]:
            return rd[key][:256]
    if isinstance(rd.get("user_api_key_hash"), str) and rd["user_api_key_hash"]:
        return "litellm:" + rd["user_api_key_hash"][:24]
    if isinstance(rd.get("user_api_key_end_user_id"), str) and rd["user_api_key_end_user_id"]:
        return "end-user:" + rd["user_api_key_end_user_id"][:256]
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


def refusal_reason(d: Decision) -> str:
    eff = d.effective
    if eff == "unavailable":
        return "distillguard_unavailable: request could not be screened"
    if eff == "throttle":
        return f"distillguard_throttled: retry after {d.verdict.retry_after_s} s"
    if eff == "step_up":
        return f"step_up_required: {d.verdict.reason}"
    return f"distillguard_blocked:{d.verdict.reason}"


async def generic_guardrail_response(gw: "Gateway", payload: dict) -> dict:
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
    d = await gw.engine.decide_async(account, _body_from_payload(payload), call_id, path)
    eff = d.effective
    gw.audit(d, path, 403 if eff in REFUSING else 200, None, 0, t0)
    if eff in REFUSING:
        return {"action": "BLOCKED", "blocked_reason": refusal_reason(d)}
    if eff == "canary":
        if len(gw._call_decisions) > 10_000:
            gw._call_decisions.clear()
        gw._call_decisions[call_id] = d
    return {"action": "NONE"}
