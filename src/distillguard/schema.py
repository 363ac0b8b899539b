"""The canonical request event: field list, Arrow schema and validation.

One JSON object per API request goes in (see docs/schema.md); :func:`normalize` turns it into one flat
row of :data:`EVENT_SCHEMA`, or raises :class:`RecordError` naming the field at fault. Every reader and
adapter in :mod:`distillguard.io` ends in this function, so there is one definition of a valid event.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
import pyarrow as pa

__all__ = [
    "EVENT_SCHEMA",
    "EVENT_COLUMNS",
    "INPUT_FIELDS",
    "MAX_TEXT_BYTES",
    "RecordError",
    "normalize",
    "normalize_values",
    "parse_timestamp",
    "content_text",
    "to_canonical",
]

#: Largest prompt (system + user text) accepted, in bytes of UTF-8. Larger records are quarantined.
MAX_TEXT_BYTES = 1_000_000

_TS = pa.timestamp("us", tz="UTC")

#: The normalised event, one row per request. Text columns derived from ``messages``/``prompt``:
#: ``system_text`` (system and developer turns), ``user_text`` (every user turn, joined by a blank line).
EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("timestamp", _TS, nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("org_id", pa.string()),
        pa.field("api_key_id", pa.string()),
        pa.field("ip", pa.string()),
        pa.field("asn", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("payment_fingerprint", pa.string()),
        pa.field("account_created_at", _TS),
        pa.field("model", pa.string()),
        pa.field("messages", pa.string()),  # JSON text of the original list; null for prompt-only
        pa.field("system_text", pa.string()),
        pa.field("user_text", pa.string()),
        pa.field("n_messages", pa.int32()),
        pa.field("n_user_turns", pa.int32()),
        pa.field("tools", pa.string()),  # JSON text of the OpenAI tool list
        pa.field("n_tools", pa.int32()),
        pa.field("max_tokens", pa.int64()),
        pa.field("reasoning_effort", pa.string()),
        pa.field("response", pa.string()),
        pa.field("reasoning_content", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("reasoning_tokens", pa.int64()),
        pa.field("status_code", pa.int32()),
        pa.field("extra", pa.string()),  # JSON object of unknown input fields, kept verbatim
        pa.field("source", pa.string()),  # "path:line" the record came from
    ]
)
EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)

_STR_FIELDS = ("request_id", "org_id", "api_key_id", "ip", "user_agent", "payment_fingerprint",
               "model", "reasoning_effort", "response", "reasoning_content")
_INT_FIELDS = ("max_tokens", "input_tokens", "output_tokens", "reasoning_tokens", "status_code")

#: Every field of the input format (docs/schema.md). Anything else goes to ``extra``.
INPUT_FIELDS = frozenset(
    ("timestamp", "account_id", "messages", "prompt", "asn", "account_created_at", "tools")
    + _STR_FIELDS + _INT_FIELDS
)


@dataclass
class RecordError(ValueError):
    """A record that cannot become an event. ``field`` names the offending field."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def parse_timestamp(value: Any, field: str = "timestamp") -> datetime:
    """RFC 3339 text or epoch seconds (int/float; milliseconds when larger than 1e11) to aware UTC."""
    if isinstance(value, bool) or value is None:
        raise RecordError(field, "missing" if value is None else "expected RFC 3339 text or epoch seconds")
    if isinstance(value, datetime):  # already parsed (Parquet/Arrow timestamp columns)
        ts = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        try:
            return ts.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            raise RecordError(field, f"timestamp out of range: {value!r}") from None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise RecordError(field, f"not a finite number: {value!r}")
        secs = value / 1000.0 if abs(value) > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(secs, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise RecordError(field, f"epoch seconds out of range: {value!r}") from None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise RecordError(field, "empty")
        if text[-1] in "zZ":
            text = text[:-1] + "+00:00"
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            try:
                return parse_timestamp(float(text), field)
            except (ValueError, RecordError):
                raise RecordError(field, f"not RFC 3339 or epoch seconds: {value[:40]!r}") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        try:
            return ts.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            raise RecordError(field, f"timestamp out of range: {value[:40]!r}") from None
    raise RecordError(field, f"expected RFC 3339 text or epoch seconds, got {type(value).__name__}")


def content_text(content: Any, field: str) -> str:
    """The text of one OpenAI message ``content``: a string, or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if text is None and isinstance(part.get("input_text"), str):
                    text = part["input_text"]
                if text is not None and not isinstance(text, str):
                    raise RecordError(f"{field}[{i}].text", f"expected a string, got {type(text).__name__}")
                if text:
                    out.append(text)
            else:
                raise RecordError(f"{field}[{i}]", f"expected a content part object, got {type(part).__name__}")
        return "\n".join(out)
    raise RecordError(field, f"expected a string or a list of content parts, got {type(content).__name__}")


def _opt_str(rec: dict, name: str) -> str | None:
    v = rec.get(name)
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise RecordError(name, f"expected a string, got {type(v).__name__}")


def _opt_int(rec: dict, name: str) -> int | None:
    v = rec.get(name)
    if v is None:
        return None
    if isinstance(v, bool):
        raise RecordError(name, "expected an integer, got bool")
    if isinstance(v, int):
        if abs(v) >= 2**63:
            raise RecordError(name, "integer out of range")
        return v
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit() and len(v.strip()) < 19:
        return int(v)
    raise RecordError(name, f"expected an integer, got {type(v).__name__} {str(v)[:20]!r}")


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def normalize(rec: Any, source: str | None = None) -> dict:
    """Validate one input record (a parsed JSON object) and return a row of :data:`EVENT_SCHEMA`.

    Raises :class:`RecordError` with the field at fault. Unknown fields are kept in ``extra``.
    """
    return dict(zip(EVENT_COLUMNS, normalize_values(rec, source)))


_NoneType = type(None)
_STR_TYPES = frozenset((str, _NoneType))
_INT_TYPES = frozenset((int, _NoneType))
_INT_LIMIT = 2**63
_UTC = timezone.utc
_fromtimestamp = datetime.fromtimestamp
# UTF-8 needs at most 3 bytes per code unit here, so text this short cannot exceed the byte limit
_SAFE_CHARS = MAX_TEXT_BYTES // 3


def normalize_values(rec: Any, source: str | None = None) -> tuple:
    """:func:`normalize` as a tuple in :data:`EVENT_COLUMNS` order (the readers' fast path: no dict per row,
    and batches are built column-wise with ``zip(*rows)``)."""
    if not isinstance(rec, dict):
        raise RecordError("<record>", f"expected a JSON object, got {type(rec).__name__}")
    get = rec.get
    account = get("account_id")
    if type(account) is not str or not account:
        if account is None or account == "":
            raise RecordError("account_id", "missing")
        if isinstance(account, bool) or not isinstance(account, (str, int)):
            raise RecordError("account_id", f"expected a string, got {type(account).__name__}")
        account = str(account)
    ts_value = get("timestamp")
    if ts_value is None:
        raise RecordError("timestamp", "missing")
    tv = type(ts_value)
    if tv is float and 0.0 < ts_value < 1e11 or tv is int and 0 < ts_value < 100_000_000_000:
        ts = _fromtimestamp(ts_value, _UTC)  # the common cases of parse_timestamp, inlined
    else:
        ts = parse_timestamp(ts_value)

    messages = get("messages")
    prompt = get("prompt")
    system_parts: list[str] = []
    user_parts: list[str] = []
    n_messages = 0
    messages_json = None
    if messages is not None:
        if type(messages) is not list:
            raise RecordError("messages", f"expected a list of messages, got {type(messages).__name__}")
        for i, msg in enumerate(messages):
            if type(msg) is not dict:
                raise RecordError(f"messages[{i}]", f"expected a message object, got {type(msg).__name__}")
            role = msg.get("role")
            if type(role) is not str:
                raise RecordError(f"messages[{i}].role", "missing" if role is None else "expected a string")
            content = msg.get("content")
            text = content if type(content) is str else content_text(content, f"messages[{i}].content")
            if role == "user":
                user_parts.append(text)
            elif role == "system" or role == "developer":
                system_parts.append(text)
        n_messages = len(messages)
        messages_json = _dumps(messages)
    if prompt is not None:
        if type(prompt) is not str:
            raise RecordError("prompt", f"expected a string, got {type(prompt).__name__}")
        user_parts.append(prompt)
        if messages is None:
            n_messages = 1
    elif messages is None:
        raise RecordError("messages", "missing: one of messages or prompt is required")
    system_text = "\n\n".join(system_parts) if system_parts else None
    user_text = "\n\n".join(user_parts) if len(user_parts) != 1 else user_parts[0]
    if len(user_text) + len(system_text or "") > _SAFE_CHARS:
        size = (len(user_text.encode("utf-8", "surrogatepass"))
                + len((system_text or "").encode("utf-8", "surrogatepass")))
        if size > MAX_TEXT_BYTES:
            raise RecordError("messages" if messages is not None else "prompt",
                              f"prompt text is {size} bytes, over the {MAX_TEXT_BYTES}-byte limit")

    tools = get("tools")
    if tools is not None and type(tools) is not list:
        raise RecordError("tools", f"expected a list of tool definitions, got {type(tools).__name__}")
    created = get("account_created_at")
    created_ts = parse_timestamp(created, "account_created_at") if created is not None else None
    asn = get("asn")
    if asn is not None:
        if isinstance(asn, bool) or not isinstance(asn, (str, int)):
            raise RecordError("asn", f"expected a string or integer, got {type(asn).__name__}")
        asn = str(asn)

    strs = list(map(get, _STR_FIELDS))
    if not _STR_TYPES.issuperset(map(type, strs)):
        strs = [_opt_str(rec, name) for name in _STR_FIELDS]
    ints = list(map(get, _INT_FIELDS))
    if _INT_TYPES.issuperset(map(type, ints)):
        for v in ints:
            if v is not None and (v >= _INT_LIMIT or v <= -_INT_LIMIT):
                ints = [_opt_int(rec, name) for name in _INT_FIELDS]  # raises for the out-of-range one
                break
    else:
        ints = [_opt_int(rec, name) for name in _INT_FIELDS]
    request_id, org_id, api_key_id, ip, user_agent, payment, model, effort, response, reasoning = strs
    max_tokens, input_tokens, output_tokens, reasoning_tokens, status_code = ints
    if status_code is not None and not (0 <= status_code < 1000):
        raise RecordError("status_code", f"not an HTTP status: {status_code}")
    if INPUT_FIELDS.issuperset(rec):
        extra_json = None
    else:
        extra = {k: v for k, v in rec.items() if k not in INPUT_FIELDS}
        extra_json = _dumps(extra)
    tools_json = _dumps(tools) if tools is not None else None
    event_id = request_id or _content_hash_values(
        (account, model, messages_json, user_text, system_text, response, tools_json, extra_json), ts)
    return (event_id, request_id, ts, account, org_id, api_key_id, ip, asn, user_agent, payment, created_ts,
            model, messages_json, system_text, user_text, n_messages, len(user_parts), tools_json,
            len(tools) if tools is not None else 0, max_tokens, effort, response, reasoning, input_tokens,
            output_tokens, reasoning_tokens, status_code, extra_json, source)


_HASH_KEYS = ("account_id", "model", "messages", "user_text", "system_text", "response", "tools", "extra")


def _content_hash(row: dict) -> str:
    """Stable id for a record with no request_id: same content, same id (so re-ingest deduplicates)."""
    return _content_hash_values(tuple(row.get(k) for k in _HASH_KEYS), row["timestamp"])


def _content_hash_values(values: tuple, ts: datetime) -> str:
    h = hashlib.sha256()
    for v in values:
        h.update((v or "").encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    h.update(ts.isoformat().encode())
    return "h:" + h.hexdigest()[:32]


def to_canonical(row: dict) -> dict:
    """Inverse of :func:`normalize` for writing canonical JSONL (round-trips through ``normalize``)."""
    out: dict[str, Any] = {
        "timestamp": row["timestamp"].isoformat().replace("+00:00", "Z"),
        "account_id": row["account_id"],
    }
    if row.get("messages") is not None:
        out["messages"] = orjson.loads(row["messages"])
    else:
        out["prompt"] = row.get("user_text") or ""
    for name in _STR_FIELDS + _INT_FIELDS + ("asn",):
        if row.get(name) is not None:
            out[name] = row[name]
    if row.get("account_created_at") is not None:
        out["account_created_at"] = row["account_created_at"].isoformat().replace("+00:00", "Z")
    if row.get("tools") is not None:
        out["tools"] = orjson.loads(row["tools"])
    if row.get("extra"):
        for k, v in orjson.loads(row["extra"]).items():
            out.setdefault(k, v)
    return out
