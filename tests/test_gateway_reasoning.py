"""Reasoning withholding on response bodies and SSE streams, and the canary inserter."""

from __future__ import annotations

import copy

import orjson

from distillguard.gateway.canary import CanaryInserter, ZeroWidthCanary
from distillguard.gateway.reasoning import NOTICE, SSETransformer, summarize, withhold_json, withhold_stream_event

CHAT = {"choices": [{"index": 0, "message": {
    "role": "assistant", "reasoning_content": "Secret plan. More steps.", "thinking_blocks": [{"thinking": "x"}],
    "content": [{"type": "thinking", "thinking": "deep thoughts"}, {"type": "text", "text": "Answer."}]}}]}
RESP = {"object": "response", "output": [
    {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "Hidden steps here. Then more."}],
     "encrypted_content": "opaque"},
    {"type": "message", "content": [{"type": "output_text", "text": "Answer."}]}]}


def test_strip_chat_fields_and_thinking_parts():
    body, changed = withhold_json(copy.deepcopy(CHAT))
    msg = body["choices"][0]["message"]
    assert changed and set(msg) == {"role", "content"} and msg["content"] == [{"type": "text", "text": "Answer."}]
    untouched, changed = withhold_json({"choices": [{"message": {"role": "assistant", "content": "hi"}}]})
    assert not changed and untouched["choices"][0]["message"] == {"role": "assistant", "content": "hi"}


def test_summary_keeps_first_sentence_only():
    body, _ = withhold_json(copy.deepcopy(CHAT), "summary", 100)
    assert body["choices"][0]["message"]["reasoning_content"] == f"{NOTICE} Summary: Secret plan."
    assert summarize("x" * 500 + ".", 20).endswith("…") and len(summarize("x" * 500 + ".", 20)) < len(NOTICE) + 40
    assert summarize("anything", 0) == NOTICE


def test_responses_api_items():
    body, changed = withhold_json(copy.deepcopy(RESP))
    assert changed and [o["type"] for o in body["output"]] == ["message"]
    body, _ = withhold_json(copy.deepcopy(RESP), "summary", 200)
    item = body["output"][0]
    assert item["type"] == "reasoning" and "encrypted_content" not in item
    assert item["summary"][0]["text"].endswith("Hidden steps here.")


def _sse(events: list[dict]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_sse_transformer_splits_across_chunk_boundaries():
    chunks = [{"choices": [{"index": 0, "delta": {"reasoning_content": w}, "finish_reason": None}]}
              for w in ("Step one. ", "Step two. ")]
    chunks += [{"choices": [{"index": 0, "delta": {"content": "Done."}, "finish_reason": None}]},
               {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    raw = _sse(chunks).replace(b"\n\n", b"\r\n\r\n", 1)  # mixed line endings
    state: dict = {}
    tf = SSETransformer(lambda o: withhold_stream_event(o, "summary", 50, state))
    out = b"".join(tf.feed(raw[i:i + 7]) for i in range(0, len(raw), 7)) + tf.close()
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    payloads = [orjson.loads(e[6:]) for e in events[:-1]]
    assert len(payloads) == 2, "chunks that carried only reasoning are dropped"
    first = payloads[0]["choices"][0]["delta"]
    assert first["content"] == "Done." and first["reasoning_content"] == f"{NOTICE} Summary: Step one."
    assert b"Step two" not in out


def test_stream_responses_events_dropped():
    state: dict = {}
    assert withhold_stream_event({"type": "response.reasoning_summary_text.delta", "delta": "x"}, "strip", 0,
                                 state) is None
    assert withhold_stream_event({"type": "response.output_item.added", "item": {"type": "reasoning"}}, "strip",
                                 0, state) is None
    done = withhold_stream_event({"type": "response.completed", "response": copy.deepcopy(RESP)}, "strip", 0, state)
    assert [o["type"] for o in done["response"]["output"]] == ["message"]
    text = {"type": "response.output_text.delta", "delta": "Answer."}
    assert withhold_stream_event(dict(text), "strip", 0, state) == text


def test_canary_round_trip_and_protocol():
    c = ZeroWidthCanary(b"k1")
    assert isinstance(c, CanaryInserter)
    now = 1_790_000_000.0
    marked = c.insert("acct-1", "First sentence. Second one.", now)
    assert marked.replace("\u200b", "").replace("\u200c", "") == "First sentence. Second one."
    assert marked.index("\u200b" if "\u200b" in marked else "\u200c") == len("First sentence.")
    assert ZeroWidthCanary.extract(marked) == [c.code("acct-1", now)]
    assert c.code("acct-1", now) != c.code("acct-2", now) != ZeroWidthCanary(b"k2").code("acct-1", now)
    assert c.code("acct-1", now) != c.code("acct-1", now + 86_400)  # rotates daily
    assert c.insert("a", "", now) == ""
