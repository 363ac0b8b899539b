"""Adapters from other log shapes to the canonical input record (then :func:`distillguard.schema.normalize`).

* :func:`from_openai` — an OpenAI-style request/response log record (Chat Completions or Responses API,
  plain or in the Batch API's ``{"custom_id", "body"}`` / ``{"response": {"body"}}`` envelopes).
* :func:`from_otel` — one OTLP JSON ``ExportTraceServiceRequest`` (``{"resourceSpans": [...]}``); each
  GenAI span becomes one event.
* :func:`detect_shape` — which of ``canonical`` / ``openai`` / ``otel`` a parsed JSON record is.

Adapters raise :class:`~distillguard.schema.RecordError` naming the field path in the original record.
Field mappings are documented in docs/schema.md.
"""

from __future__ import annotations

from typing import Any, Iterator

import orjson

from distillguard.schema import RecordError

__all__ = ["detect_shape", "from_openai", "from_otel", "SHAPES"]

SHAPES = ("canonical", "openai", "otel")

# metadata keys copied to the canonical field of the same name
_META_FIELDS = ("account_id", "org_id", "api_key_id", "ip", "asn", "user_agent", "payment_fingerprint",
                "account_created_at", "request_id", "timestamp", "status_code")
_META_ALIASES = {"organization": "org_id", "organization_id": "org_id", "project_id": "org_id",
                 "api_key": "api_key_id", "key_id": "api_key_id", "client_ip": "ip", "remote_addr": "ip",
                 "user-agent": "user_agent", "payment_method": "payment_fingerprint",
                 "created": "timestamp", "time": "timestamp", "ts": "timestamp", "status": "status_code"}


def detect_shape(rec: Any) -> str:
    """``otel`` for OTLP JSON, ``openai`` for request/response log records, else ``canonical``."""
    if isinstance(rec, dict):
        if "resourceSpans" in rec or "resource_spans" in rec:
            return "otel"
        if "messages" not in rec and "prompt" not in rec and (
            "request" in rec or "custom_id" in rec or ("body" in rec and "account_id" not in rec)
            or ("response" in rec and isinstance(rec.get("response"), dict))
        ):
            return "openai"
    return "canonical"


# --------------------------------------------------------------------------------------------- OpenAI


def _obj(value: Any, field: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, (str, bytes)):  # some loggers keep bodies as JSON text
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RecordError(field, "invalid JSON text in body") from None
    if not isinstance(value, dict):
        raise RecordError(field, f"expected an object, got {type(value).__name__}")
    return value


def _body(part: Any, field: str) -> tuple[dict, dict]:
    """(body, envelope): a request/response may be the body itself or ``{"body": ..., "headers": ...}``."""
    env = _obj(part, field)
    if "body" in env:
        return _obj(env["body"], f"{field}.body"), env
    return env, {}


def _responses_input(inp: Any, field: str) -> list:
    """Responses API ``input`` (a string or a list of items) to chat messages."""
    if isinstance(inp, str):
        return [{"role": "user", "content": inp}]
    if not isinstance(inp, list):
        raise RecordError(field, f"expected a string or a list of input items, got {type(inp).__name__}")
    out = []
    for i, item in enumerate(inp):
        if not isinstance(item, dict):
            raise RecordError(f"{field}[{i}]", f"expected an input item object, got {type(item).__name__}")
        if "role" in item:
            out.append({"role": item["role"], "content": item.get("content")})
        # other item kinds (function_call_output, reasoning, ...) carry no prompt text; they are kept in
        # the raw messages only through the ``extra`` of the record
    return out


def _response_fields(resp: dict, field: str) -> dict:
    out: dict[str, Any] = {}
    choices = resp.get("choices")
    if choices is not None:
        if not isinstance(choices, list):
            raise RecordError(f"{field}.choices", f"expected a list, got {type(choices).__name__}")
        texts, reasons = [], []
        for i, ch in enumerate(choices):
            if not isinstance(ch, dict):
                raise RecordError(f"{field}.choices[{i}]", "expected a choice object")
            msg = ch.get("message") or ch.get("delta") or {}
            if not isinstance(msg, dict):
                raise RecordError(f"{field}.choices[{i}].message", "expected a message object")
            content = msg.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif ch.get("text") is not None:
                texts.append(str(ch["text"]))
            rc = msg.get("reasoning_content") or msg.get("reasoning")
            if isinstance(rc, str):
                reasons.append(rc)
        out["response"] = "\n".join(texts) if texts else None
        out["reasoning_content"] = "\n".join(reasons) if reasons else None
    output = resp.get("output")
    if isinstance(output, list):  # Responses API
        texts, reasons = [], []
        for item in output:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        texts.append(part["text"])
            elif item.get("type") == "reasoning":
                for key in ("content", "summary"):
                    for part in item.get(key) or []:
                        if isinstance(part, dict) and isinstance(part.get("text"), str):
                            reasons.append(part["text"])
        out["response"] = "\n".join(texts) if texts else out.get("response")
        out["reasoning_content"] = "\n".join(reasons) if reasons else out.get("reasoning_content")
    usage = resp.get("usage")
    if isinstance(usage, dict):
        out["input_tokens"] = usage.get("prompt_tokens", usage.get("input_tokens"))
        out["output_tokens"] = usage.get("completion_tokens", usage.get("output_tokens"))
        details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
        if isinstance(details, dict):
            out["reasoning_tokens"] = details.get("reasoning_tokens")
    if resp.get("id") is not None:
        out["response_id"] = resp["id"]
    if resp.get("created") is not None or resp.get("created_at") is not None:
        out["response_created"] = resp.get("created", resp.get("created_at"))
    if resp.get("model") is not None:
        out["response_model"] = resp["model"]
    return out


def from_openai(rec: Any) -> dict:
    """One OpenAI-style log record to a canonical input record.

    Accepted shapes: ``{"request": REQ, "response": RESP, "metadata": {...}}`` where REQ/RESP are bodies or
    ``{"body": ..., "status_code": ...}`` envelopes; Batch API input lines ``{"custom_id", "body"}`` and
    output lines ``{"custom_id", "response": {"status_code", "request_id", "body"}}``.
    """
    if not isinstance(rec, dict):
        raise RecordError("<record>", f"expected a JSON object, got {type(rec).__name__}")
    if "request" in rec:
        req, req_env = _body(rec["request"], "request")
    elif "body" in rec:
        req, req_env = _obj(rec["body"], "body"), {}
    else:
        req, req_env = {}, {}
    resp, resp_env = _body(rec.get("response"), "response")
    meta = _obj(rec.get("metadata"), "metadata")

    out: dict[str, Any] = {}
    # request body
    if "messages" in req:
        out["messages"] = req["messages"]
    elif "input" in req:
        msgs = _responses_input(req["input"], "request.input")
        if isinstance(req.get("instructions"), str):
            msgs.insert(0, {"role": "developer", "content": req["instructions"]})
        out["messages"] = msgs
    elif "prompt" in req:
        out["prompt"] = req["prompt"]
    for k in ("model", "tools"):
        if req.get(k) is not None:
            out[k] = req[k]
    mt = req.get("max_completion_tokens", req.get("max_output_tokens", req.get("max_tokens")))
    if mt is not None:
        out["max_tokens"] = mt
    effort = req.get("reasoning_effort")
    if effort is None and isinstance(req.get("reasoning"), dict):
        effort = req["reasoning"].get("effort")
    if effort is not None:
        out["reasoning_effort"] = effort
    user = req.get("safety_identifier") or req.get("user")
    # response body
    rf = _response_fields(resp, "response")
    for k in ("response", "reasoning_content", "input_tokens", "output_tokens", "reasoning_tokens"):
        if rf.get(k) is not None:
            out[k] = rf[k]
    if "model" not in out and rf.get("response_model") is not None:
        out["model"] = rf["response_model"]
    status = resp_env.get("status_code", rec.get("status_code"))
    if status is not None:
        out["status_code"] = status
    # metadata: top level first, then the metadata object (explicit beats derived)
    for src in (rec, meta, req_env):
        for k, v in src.items():
            name = _META_ALIASES.get(k, k)
            if name in _META_FIELDS and v is not None and name not in out:
                out[name] = v
    if "account_id" not in out and user is not None:
        out["account_id"] = user
    if "request_id" not in out:
        rid = resp_env.get("request_id") or rf.get("response_id") or rec.get("custom_id") or rec.get("id")
        if rid is not None:
            out["request_id"] = rid
    if "timestamp" not in out and rf.get("response_created") is not None:
        out["timestamp"] = rf["response_created"]
    # keep what the adapter did not map, so nothing is lost
    if req.get("user") is not None:
        out["openai_user"] = req["user"]
    if req.get("safety_identifier") is not None:
        out["safety_identifier"] = req["safety_identifier"]
    if rec.get("custom_id") is not None:
        out["custom_id"] = rec["custom_id"]
    for k, v in meta.items():
        name = _META_ALIASES.get(k, k)
        if name not in _META_FIELDS and v is not None:
            out.setdefault(f"meta.{k}", v)
    if "messages" not in out and "prompt" not in out:
        raise RecordError("request.messages", "missing: no messages, input or prompt in the request body")
    if "account_id" not in out:
        raise RecordError("metadata.account_id", "missing: no account_id, safety_identifier or user")
    return out


# --------------------------------------------------------------------------------------------- OTel


def _any_value(v: Any) -> Any:
    """Decode an OTLP JSON AnyValue (``{"stringValue": ...}`` etc.)."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        iv = v["intValue"]
        try:
            return int(iv)
        except (TypeError, ValueError):
            return iv
    if "doubleValue" in v:
        return v["doubleValue"]
    if "boolValue" in v:
        return v["boolValue"]
    if "arrayValue" in v:
        return [_any_value(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return {kv.get("key"): _any_value(kv.get("value")) for kv in (v["kvlistValue"] or {}).get("values") or []
                if isinstance(kv, dict)}
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _attrs(lst: Any, field: str) -> dict:
    if lst is None:
        return {}
    if isinstance(lst, dict):  # some exporters flatten attributes to an object
        return dict(lst)
    if not isinstance(lst, list):
        raise RecordError(field, f"expected a list of attributes, got {type(lst).__name__}")
    out = {}
    for i, kv in enumerate(lst):
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise RecordError(f"{field}[{i}]", "expected an attribute {key, value}")
        out[kv["key"]] = _any_value(kv.get("value"))
    return out


def _json_attr(v: Any, field: str) -> Any:
    if isinstance(v, str):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            raise RecordError(field, "invalid JSON text in attribute") from None
    return v


def _parts_text(parts: Any, field: str, kinds: tuple[str, ...] = ("text",)) -> str:
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise RecordError(field, f"expected a list of parts, got {type(parts).__name__}")
    out = []
    for p in parts:
        if isinstance(p, dict) and p.get("type", "text") in kinds:
            c = p.get("content", p.get("text"))
            if isinstance(c, str):
                out.append(c)
        elif isinstance(p, str) and "text" in kinds:
            out.append(p)
    return "\n".join(out)


def _otel_messages(v: Any, field: str) -> list:
    msgs = _json_attr(v, field)
    if not isinstance(msgs, list):
        raise RecordError(field, f"expected a list of messages, got {type(msgs).__name__}")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RecordError(f"{field}[{i}]", "expected a message object")
        if "parts" in m:
            out.append({"role": m.get("role"), "content": _parts_text(m["parts"], f"{field}[{i}].parts")})
        else:  # older flat form {"role", "content"}
            out.append({"role": m.get("role"), "content": m.get("content")})
    return out


def _nanos_to_epoch(v: Any, field: str) -> float:
    try:
        return int(v) / 1e9
    except (TypeError, ValueError):
        raise RecordError(field, f"expected unix nanoseconds, got {str(v)[:30]!r}") from None


def _otel_span(span: dict, res_attrs: dict, field: str) -> dict | None:
    attrs = _attrs(span.get("attributes"), f"{field}.attributes")
    if not any(k.startswith("gen_ai.") for k in attrs):
        return None  # not a GenAI span (an HTTP or DB span in the same trace): not a request event
    out: dict[str, Any] = {}
    system_parts = []
    if attrs.get("gen_ai.system_instructions") is not None:
        si = _json_attr(attrs["gen_ai.system_instructions"], f"{field}.attributes.gen_ai.system_instructions")
        system_parts.append(_parts_text(si, f"{field}.attributes.gen_ai.system_instructions"))
    msgs = []
    if attrs.get("gen_ai.input.messages") is not None:
        msgs = _otel_messages(attrs["gen_ai.input.messages"], f"{field}.attributes.gen_ai.input.messages")
    if system_parts:
        msgs = [{"role": "system", "content": t} for t in system_parts] + msgs
    if attrs.get("gen_ai.input.messages") is None and not system_parts:
        raise RecordError(f"{field}.attributes.gen_ai.input.messages", "missing")
    out["messages"] = msgs
    if attrs.get("gen_ai.output.messages") is not None:
        outs = _json_attr(attrs["gen_ai.output.messages"], f"{field}.attributes.gen_ai.output.messages")
        texts, reasons = [], []
        if isinstance(outs, list):
            for m in outs:
                if isinstance(m, dict) and isinstance(m.get("parts"), list):
                    texts.append(_parts_text(m["parts"], field, ("text",)))
                    reasons.append(_parts_text(m["parts"], field, ("reasoning", "thinking")))
                elif isinstance(m, dict) and isinstance(m.get("content"), str):
                    texts.append(m["content"])
        out["response"] = "\n".join(t for t in texts if t) or None
        out["reasoning_content"] = "\n".join(t for t in reasons if t) or None
    account = (attrs.get("user.id") or attrs.get("enduser.id") or res_attrs.get("user.id")
               or res_attrs.get("enduser.id"))
    if account is not None:
        out["account_id"] = account
    else:
        raise RecordError(f"{field}.attributes.user.id", "missing: no user.id or enduser.id")
    if span.get("startTimeUnixNano") is not None:
        out["timestamp"] = _nanos_to_epoch(span["startTimeUnixNano"], f"{field}.startTimeUnixNano")
    mapping = {
        "gen_ai.request.model": "model", "gen_ai.usage.input_tokens": "input_tokens",
        "gen_ai.usage.output_tokens": "output_tokens",
        "gen_ai.usage.reasoning.output_tokens": "reasoning_tokens",
        "gen_ai.request.max_tokens": "max_tokens", "gen_ai.response.id": "request_id",
        "client.address": "ip", "user_agent.original": "user_agent",
        "http.response.status_code": "status_code", "gen_ai.openai.request.reasoning_effort": "reasoning_effort",
        "gen_ai.request.reasoning_effort": "reasoning_effort",
    }
    for src, dst in mapping.items():
        v = attrs.get(src, res_attrs.get(src))
        if v is not None and dst not in out:
            out[dst] = v
    if "model" not in out and attrs.get("gen_ai.response.model") is not None:
        out["model"] = attrs["gen_ai.response.model"]
    if "request_id" not in out and span.get("spanId"):
        out["request_id"] = f"otel:{span.get('traceId', '')}:{span['spanId']}"
    if attrs.get("gen_ai.tool.definitions") is not None:
        out["tools"] = _json_attr(attrs["gen_ai.tool.definitions"], f"{field}.attributes.gen_ai.tool.definitions")
    # keep other attributes (session.id, gen_ai.operation.name, ...) under their own names
    for k, v in attrs.items():
        if k not in mapping and k not in ("user.id", "enduser.id", "gen_ai.input.messages",
                                          "gen_ai.output.messages", "gen_ai.system_instructions",
                                          "gen_ai.tool.definitions", "gen_ai.response.model"):
            out.setdefault(k, v)
    if res_attrs.get("service.name") is not None:
        out.setdefault("service.name", res_attrs["service.name"])
    status = span.get("status")
    if isinstance(status, dict) and status.get("code") not in (None, 0, 1, "STATUS_CODE_UNSET", "STATUS_CODE_OK"):
        out.setdefault("otel.status", status)
    return out


def from_otel(rec: Any) -> Iterator[tuple[int, str, dict | RecordError | None]]:
    """Yield ``(span_index, field_path, canonical record | RecordError | None)`` for each span; ``None``
    marks a span without ``gen_ai.*`` attributes (an HTTP or DB span of the same trace)."""
    if not isinstance(rec, dict):
        raise RecordError("<record>", f"expected a JSON object, got {type(rec).__name__}")
    rss = rec.get("resourceSpans", rec.get("resource_spans"))
    if not isinstance(rss, list):
        raise RecordError("resourceSpans", f"expected a list, got {type(rss).__name__}")
    k = 0
    for i, rs in enumerate(rss):
        if not isinstance(rs, dict):
            yield k, f"resourceSpans[{i}]", RecordError(f"resourceSpans[{i}]", "expected an object")
            k += 1
            continue
        try:
            res_attrs = _attrs((rs.get("resource") or {}).get("attributes"), f"resourceSpans[{i}].resource.attributes")
        except RecordError as e:
            yield k, f"resourceSpans[{i}]", e
            k += 1
            continue
        for j, ss in enumerate(rs.get("scopeSpans", rs.get("scope_spans")) or []):
            spans = ss.get("spans") if isinstance(ss, dict) else None
            for s, span in enumerate(spans or []):
                field = f"resourceSpans[{i}].scopeSpans[{j}].spans[{s}]"
                try:
                    if not isinstance(span, dict):
                        raise RecordError(field, "expected a span object")
                    out = _otel_span(span, res_attrs, field)
                except RecordError as e:
                    yield k, field, e
                    k += 1
                    continue
                yield k, field, out  # None: not a GenAI span (counted as skipped, not an event)
                k += 1
