"""Adapters: OpenAI-style request/response logs and OTLP JSON GenAI spans, on realistic samples."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pyarrow as pa
import pytest
from io_fixtures import FIXTURES

from distillguard.io import read_events
from distillguard.io.adapters import detect_shape, from_openai, from_otel
from distillguard.schema import EVENT_SCHEMA, RecordError


def rows(path, **kw):
    s = read_events(path, **kw)
    t = pa.Table.from_batches(list(s), schema=EVENT_SCHEMA)
    return t.to_pylist(), s


def test_openai_chat_completion_log_with_metadata():
    out, s = rows(FIXTURES / "openai_logs.jsonl")
    r = out[0]
    assert r["event_id"] == "req_8f2a01"  # the response envelope's request id
    assert (r["account_id"], r["org_id"], r["api_key_id"]) == ("acct-100", "org-3", "sk-proj-xx12")
    assert (r["ip"], r["asn"], r["payment_fingerprint"]) == ("198.51.100.23", "64496", "pf-77aa")
    assert r["timestamp"] == datetime(2026, 3, 1, 9, tzinfo=timezone.utc)  # metadata beats response.created
    assert r["model"] == "frontier-2" and r["max_tokens"] == 4096 and r["reasoning_effort"] == "high"
    assert r["system_text"] == "You are a helpful assistant." and r["user_text"].startswith("Prove that")
    assert r["response"].startswith("Assume sqrt(2)") and r["reasoning_content"] == "Classic proof by contradiction."
    assert (r["input_tokens"], r["output_tokens"], r["reasoning_tokens"], r["status_code"]) == (52, 610, 420, 200)
    extra = orjson.loads(r["extra"])
    assert extra["openai_user"] == "enduser-77" and extra["meta.region"] == "eu-west"


def test_openai_safety_identifier_becomes_account_and_created_the_time():
    out, _ = rows(FIXTURES / "openai_logs.jsonl")
    r = out[1]
    assert r["account_id"] == "sid-4f9e" and r["event_id"] == "chatcmpl-A2"
    assert r["timestamp"] == datetime.fromtimestamp(1772355660, timezone.utc)
    assert r["n_tools"] == 1 and r["response"] == "find . -name '*.py' | xargs wc -l"


def test_openai_responses_api_shape():
    out, _ = rows(FIXTURES / "openai_logs.jsonl")
    r = out[2]
    assert r["system_text"] == "Grade strictly." and r["user_text"].startswith("Score this answer")
    assert (r["reasoning_effort"], r["max_tokens"]) == ("medium", 512)
    assert (r["response"], r["reasoning_content"]) == ("10", "Correct and concise.")
    assert (r["input_tokens"], r["output_tokens"], r["reasoning_tokens"]) == (30, 70, 64)


def test_openai_batch_input_line_and_reject_without_account():
    out, s = rows(FIXTURES / "openai_logs.jsonl")
    r = out[3]
    assert (r["event_id"], r["account_id"], r["org_id"], r["max_tokens"]) == (
        "job-17-item-3", "acct-enterprise-1", "org-batch", 5)
    [rej] = s.quarantine.records
    assert rej.line == 5 and rej.field == "metadata.account_id" and rej.kind == "missing_field"
    assert s.summary.ingested == 4 and s.summary.rejected == 1


def test_openai_forced_format_and_body_as_json_text():
    rec = {"request": {"body": orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).decode()},
           "metadata": {"account_id": "a", "timestamp": 0}}
    assert from_openai(rec)["messages"] == [{"role": "user", "content": "x"}]
    with pytest.raises(RecordError) as e:
        from_openai({"request": {"body": "{not json"}, "metadata": {"account_id": "a"}})
    assert e.value.field == "request.body"


def test_otel_genai_spans():
    out, s = rows(FIXTURES / "otel_traces.jsonl")
    assert s.summary.skipped == 1  # the HTTP span of the same trace is not a request event
    r = out[0]
    assert (r["event_id"], r["account_id"], r["model"]) == ("chatcmpl-OT1", "acct-200", "frontier-2")
    assert r["timestamp"] == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    assert r["system_text"] == "You are a competition maths solver."
    assert r["user_text"].startswith("Find all integers n")
    assert (r["response"], r["reasoning_content"]) == ("n = 0, 1, -1", "Try small n...")
    assert (r["input_tokens"], r["output_tokens"], r["reasoning_tokens"]) == (61, 800, 512)
    assert r["ip"] == "192.0.2.44"
    extra = orjson.loads(r["extra"])
    assert extra["session.id"] == "sess-1" and extra["service.name"] == "llm-gateway"
    assert r["source"].endswith("otel_traces.jsonl:1#span0")
    # enduser.id; no gen_ai.response.id: the span id is the request id
    assert out[1]["account_id"] == "acct-201" and out[1]["event_id"].endswith(":eee19b7ec3c1b175")
    # structured (arrayValue/kvlistValue) messages and user.id on the resource
    assert out[2]["account_id"] == "acct-300" and out[2]["user_text"] == "structured, not a JSON string"
    [rej] = s.quarantine.records
    assert rej.line == 1 and rej.field.endswith("spans[3].attributes.user.id")


def test_otel_pretty_printed_document():
    out, s = rows(FIXTURES / "otel_trace_pretty.json")
    assert [r["account_id"] for r in out] == ["acct-201"] and s.summary.rejected == 0


def test_shape_detection_and_forced_shape():
    assert detect_shape({"resourceSpans": []}) == "otel"
    assert detect_shape({"request": {}, "response": {}}) == "openai"
    assert detect_shape({"account_id": "a", "messages": []}) == "canonical"
    # forcing canonical on an OpenAI log rejects it instead of guessing
    out, s = rows(FIXTURES / "openai_logs.jsonl", fmt="canonical")
    assert out == [] and s.summary.rejected == 5 and set(s.summary.by_reason) == {"missing_field"}


def test_otel_bad_shapes_are_record_errors():
    with pytest.raises(RecordError):
        list(from_otel({"resourceSpans": "nope"}))
    [(k, field, err)] = list(from_otel({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"spanId": "1", "attributes": [{"key": "gen_ai.input.messages", "value": {"stringValue": "[oops"}}]}]}]}]}))
    assert isinstance(err, RecordError) and err.field.endswith("gen_ai.input.messages")
