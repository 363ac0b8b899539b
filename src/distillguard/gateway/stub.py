"""A small OpenAI-compatible upstream for tests, the benchmark and demos (loopback only).

Answers ``/v1/chat/completions`` and ``/v1/responses``, whole or streamed, with reasoning in
``reasoning_content`` (chat) or a ``reasoning`` output item (Responses API). Faults are injected per request
with the ``x-stub-fault`` header (``500``, ``503``, ``timeout`` = sleep ``x-stub-sleep`` seconds before
answering, ``reset`` = fail inside the server before answering (uvicorn then answers 500), ``slow`` = stream with pauses, ``cut`` = end a stream early), or
at random with ``StubUpstream(fault_rate=...)``. ``StubUpstream.hits`` counts requests received by request id.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["StubUpstream", "REASONING", "ANSWER"]

REASONING = "First I add the two numbers. Then I check the carry. The total is 42."
ANSWER = "The answer is 42."


class _Reset(Exception):
    pass


class StubUpstream:
    def __init__(self, fault_rate: float = 0.0, seed: int = 0, faults: tuple[str, ...] = ("500", "reset", "timeout"),
                 timeout_sleep_s: float = 2.0):
        self.hits: collections.Counter = collections.Counter()
        self.auth_seen: list[str] = []
        self.fault_rate = fault_rate
        self.faults = faults
        self.timeout_sleep_s = timeout_sleep_s
        self._rng = random.Random(seed)
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ])

    def _fault(self, request: Request) -> str | None:
        f = request.headers.get("x-stub-fault")
        if f:
            return f
        if self.fault_rate and self._rng.random() < self.fault_rate:
            return self._rng.choice(self.faults)
        return None

    async def _pre(self, request: Request) -> tuple[dict, str | None, Response | None]:
        body = orjson.loads(await request.body())
        rid = request.headers.get("x-request-id", "")
        self.hits[rid] += 1
        self.auth_seen.append(request.headers.get("authorization", ""))
        fault = self._fault(request)
        if fault in ("500", "502", "503", "504"):
            return body, fault, Response(orjson.dumps({"error": {"message": "upstream failure", "type": "server_error"}}),
                                         int(fault), media_type="application/json")
        if fault == "timeout":
            await asyncio.sleep(float(request.headers.get("x-stub-sleep", self.timeout_sleep_s)))
        if fault == "reset":
            return body, fault, _ResetResponse()
        return body, fault, None

    async def models(self, request: Request) -> Response:
        return Response(orjson.dumps({"object": "list", "data": [{"id": "stub-1", "object": "model"}]}),
                        media_type="application/json")

    async def chat(self, request: Request) -> Response:
        body, fault, early = await self._pre(request)
        if early is not None:
            return early
        created = int(time.time())
        model = body.get("model", "stub-1")
        if body.get("stream"):
            return StreamingResponse(self._chat_stream(model, created, fault), media_type="text/event-stream")
        out = {
            "id": "chatcmpl-stub", "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30,
                      "completion_tokens_details": {"reasoning_tokens": 12}},
        }
        return Response(orjson.dumps(out), media_type="application/json")

    async def _chat_stream(self, model: str, created: int, fault: str | None):
        def chunk(delta: dict, finish: str | None = None) -> bytes:
            c = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + orjson.dumps(c) + b"\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for word in REASONING.split(" "):
            yield chunk({"reasoning_content": word + " "})
            if fault == "slow":
                await asyncio.sleep(float(0.05))
        if fault == "cut":
            raise _Reset()
        for word in ANSWER.split(" "):
            yield chunk({"content": word + " "})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    async def responses(self, request: Request) -> Response:
        body, fault, early = await self._pre(request)
        if early is not None:
            return early
        model = body.get("model", "stub-1")
        reasoning_item = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": REASONING}]}
        msg_item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]}
        resp = {"id": "resp_stub", "object": "response", "created_at": int(time.time()), "model": model,
                "status": "completed", "output": [reasoning_item, msg_item], "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": [],
                "usage": {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30,
                          "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 12}}}
        if not body.get("stream"):
            return Response(orjson.dumps(resp), media_type="application/json")

        async def events():
            seq = 0

            def ev(obj: dict) -> bytes:
                nonlocal seq
                obj["sequence_number"] = seq
                seq += 1
                return b"event: " + obj["type"].encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"

            start = dict(resp, status="in_progress", output=[])
            yield ev({"type": "response.created", "response": start})
            yield ev({"type": "response.output_item.added", "output_index": 0,
                      "item": {"type": "reasoning", "id": "rs_1", "summary": []}})
            yield ev({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0,
                      "summary_index": 0, "delta": REASONING})
            yield ev({"type": "response.output_item.done", "output_index": 0, "item": reasoning_item})
            yield ev({"type": "response.output_item.added", "output_index": 1,
                      "item": dict(msg_item, status="in_progress", content=[])})
            yield ev({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1,
                      "content_index": 0, "delta": ANSWER})
            yield ev({"type": "response.output_item.done", "output_index": 1, "item": msg_item})
            yield ev({"type": "response.completed", "response": resp})

        return StreamingResponse(events(), media_type="text/event-stream")


class _ResetResponse(Response):
    """Raises inside the ASGI server before any response starts (under uvicorn: a bare 500)."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope, receive, send) -> None:
        raise ConnectionResetError("stub: injected connection reset")
