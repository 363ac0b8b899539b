"""Withholding reasoning from OpenAI-compatible responses, whole or streamed (SSE).

Chat completions carry reasoning in ``message.reasoning_content`` / ``message.reasoning`` /
``message.thinking_blocks`` and in ``content`` parts of type ``thinking`` or ``reasoning``; streamed chunks carry
it in the same keys of ``delta``. The Responses API carries it in output items of type ``reasoning`` and in
``response.reasoning_*`` stream events. ``mode="strip"`` removes all of it; ``mode="summary"`` replaces it with
a short notice plus the first sentence (at most ``summary_chars`` characters) of the reasoning.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import orjson

__all__ = ["withhold_json", "SSETransformer", "summarize", "REASONING_KEYS"]

REASONING_KEYS = ("reasoning_content", "reasoning", "thinking_blocks", "thinking")
_PART_TYPES = {"thinking", "reasoning", "redacted_thinking"}
NOTICE = "[reasoning withheld by provider policy]"
_SENTENCE = re.compile(r"(.+?[.!?])(\s|$)", re.S)


def summarize(text: str, max_chars: int) -> str:
    """The withheld-reasoning notice, with the first sentence of ``text`` (cut to ``max_chars``) after it."""
    if max_chars <= 0 or not text.strip():
        return NOTICE
    m = _SENTENCE.match(text.strip())
    first = (m.group(1) if m else text.strip()).replace("\n", " ")
    if len(first) > max_chars:
        first = first[: max(0, max_chars - 1)].rstrip() + "…"
    return f"{NOTICE} Summary: {first}"


def _reasoning_text(obj: dict) -> str:
    for k in ("reasoning_content", "reasoning"):
        v = obj.get(k)
        if isinstance(v, str) and v:
            return v
    return ""


def _clean_message(msg: dict, mode: str, max_chars: int) -> bool:
    """Remove reasoning from a chat ``message`` or ``delta`` in place; return whether anything changed."""
    changed = False
    text = _reasoning_text(msg)
    for k in REASONING_KEYS:
        if k in msg:
            del msg[k]
            changed = True
    content = msg.get("content")
    if isinstance(content, list):
        kept = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in _PART_TYPES:
                if not text:
                    text = part.get("thinking") or part.get("text") or ""
                changed = True
            else:
                kept.append(part)
        msg["content"] = kept
    if changed and mode == "summary":
        msg["reasoning_content"] = summarize(text, max_chars)
    return changed


def _clean_responses_output(items: list, mode: str, max_chars: int) -> tuple[list, bool]:
    out, changed = [], False
    for item in items:
        if isinstance(item, dict) and item.get("type") == "reasoning":
            changed = True
            if mode == "summary":
                texts = [s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)]
                texts += [c.get("text", "") for c in item.get("content") or [] if isinstance(c, dict)]
                out.append({"type": "reasoning", "id": item.get("id"),
                            "summary": [{"type": "summary_text", "text": summarize(" ".join(texts), max_chars)}]})
            continue
        if isinstance(item, dict) and item.get("type") == "message" and isinstance(item.get("content"), list):
            kept = [c for c in item["content"] if not (isinstance(c, dict) and c.get("type") in _PART_TYPES)]
            if len(kept) != len(item["content"]):
                item["content"] = kept
                changed = True
        out.append(item)
    return out, changed


def withhold_json(body: Any, mode: str = "strip", max_chars: int = 160) -> tuple[Any, bool]:
    """Withhold reasoning from one parsed response body (chat completion or Responses API object)."""
    changed = False
    if not isinstance(body, dict):
        return body, False
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            for key in ("message", "delta"):
                if isinstance(choice.get(key), dict):
                    changed |= _clean_message(choice[key], mode, max_chars)
    if isinstance(body.get("output"), list):
        body["output"], ch = _clean_responses_output(body["output"], mode, max_chars)
        changed |= ch
    usage = body.get("usage")
    if changed and isinstance(usage, dict):
        # keep token accounting honest for billing, but drop nothing else
        pass
    return body, changed


_DROP_EVENTS = ("response.reasoning", "response.reasoning_text", "response.reasoning_summary",
                "response.reasoning_summary_text", "response.reasoning_summary_part")


class SSETransformer:
    """Incremental SSE rewriter: feed upstream bytes, get the bytes to send downstream.

    ``on_data(obj) -> obj | None`` may rewrite a parsed ``data:`` JSON payload or drop the event (None).
    Events that are not JSON (``[DONE]``, comments) pass through unchanged.
    """

    def __init__(self, on_data: Callable[[dict], dict | None]):
        self._buf = b""
        self._on_data = on_data

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        if b"\r" in self._buf:  # CRLF may be split across chunks: normalise the whole unconsumed buffer
            self._buf = self._buf.replace(b"\r\n", b"\n")
        out = []
        while True:
            i = self._buf.find(b"\n\n")
            if i < 0:
                break
            event, self._buf = self._buf[:i], self._buf[i + 2:]
            rewritten = self._event(event)
            if rewritten is not None:
                out.append(rewritten + b"\n\n")
        return b"".join(out)

    def close(self) -> bytes:
        rest, self._buf = self._buf, b""
        if not rest.strip():
            return b""
        rewritten = self._event(rest)
        return b"" if rewritten is None else rewritten + b"\n\n"

    def _event(self, event: bytes) -> bytes | None:
        lines = event.split(b"\n")
        data_idx = [i for i, ln in enumerate(lines) if ln.startswith(b"data:")]
        if not data_idx:
            return event
        payload = b"\n".join(lines[i][5:].lstrip(b" ") for i in data_idx)
        if payload.strip() == b"[DONE]":
            return event
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        new = self._on_data(obj)
        if new is None:
            return None
        others = [ln for i, ln in enumerate(lines) if i not in set(data_idx)]
        return b"\n".join(others + [b"data: " + orjson.dumps(new)])


def withhold_stream_event(obj: dict, mode: str, max_chars: int, state: dict) -> dict | None:
    """Rewrite one streamed payload. ``state`` carries reasoning seen so far (for a summary) across events."""
    etype = obj.get("type")
    if isinstance(etype, str):  # Responses API stream
        if etype.startswith(_DROP_EVENTS):
            delta = obj.get("delta")
            if isinstance(delta, str):
                state["text"] = state.get("text", "") + delta
            return None
        item = obj.get("item")
        if isinstance(item, dict) and item.get("type") == "reasoning":
            if etype == "response.output_item.done" and mode == "summary":
                texts = [s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)]
                obj["item"] = {"type": "reasoning", "id": item.get("id"), "summary": [
                    {"type": "summary_text",
                     "text": summarize(" ".join(texts) or state.get("text", ""), max_chars)}]}
                return obj
            return None
        resp = obj.get("response")
        if isinstance(resp, dict):
            withhold_json(resp, mode, max_chars)
        return obj
    # chat completion chunk
    emptied = 0
    choices = obj.get("choices") or []
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        text = _reasoning_text(delta)
        had = any(k in delta for k in REASONING_KEYS)
        for k in REASONING_KEYS:
            delta.pop(k, None)
        if isinstance(delta.get("content"), list):
            delta["content"] = [p for p in delta["content"]
                                if not (isinstance(p, dict) and p.get("type") in _PART_TYPES)]
        if had:
            state["text"] = state.get("text", "") + text
            state["pending"] = True
            if not delta and not choice.get("finish_reason"):
                emptied += 1
        elif mode == "summary" and state.get("pending") and (delta.get("content") or choice.get("finish_reason")):
            delta["reasoning_content"] = summarize(state.get("text", ""), max_chars)
            state["pending"] = False
    if choices and emptied == len(choices) and not obj.get("usage"):
        return None  # a chunk that carried only reasoning: drop it rather than send an empty delta
    return obj
