"""Faults: upstream 5xx, resets, timeouts and slow or broken streams; scorer and store failures (open/closed)."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from distillguard.gateway.app import create_app
from distillguard.gateway.policy import parse_policy
from distillguard.gateway.stub import ANSWER, StubUpstream
from gateway_fixtures import LoopbackServer, keyword_scorer

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
OK = {"id": "x", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}]}


def policy(extra: str = "", retries: int = 1, **up) -> object:
    ups = ", ".join(f"{k}: {v}" for k, v in up.items())
    return parse_policy(f"mode: enforce\nupstream: {{retries: {retries}, retry_backoff_s: 0{', ' + ups if ups else ''}}}\n"
                        + extra)


class Script:
    """MockTransport handler that plays a script of outcomes and counts the calls it gets."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        out = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(out, Exception):
            raise out
        if isinstance(out, int):
            return httpx.Response(out, json={"error": {"message": f"status {out}"}})
        return httpx.Response(200, json=out)


def app_with(script, pol, scorer=keyword_scorer, state=None):
    return create_app("http://upstream.test", pol, state, scorer=scorer, transport=httpx.MockTransport(script))


def call(app, body=BODY, account="acct"):
    with TestClient(app) as c:
        return c.post("/v1/chat/completions", content=orjson.dumps(body), headers={"x-account-id": account})


def audit(app):
    return app.state.gateway.state.audit_rows()


def test_5xx_retried_then_success_answers_once():
    s = Script(503, OK)
    app = app_with(s, policy(retries=1))
    r = call(app)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "fine"
    assert s.calls == 2
    rows = audit(app)
    assert len(rows) == 1 and rows[0]["attempts"] == 2 and rows[0]["status_code"] == 200


def test_5xx_passed_through_when_not_retried():
    s = Script(503)
    r = call(app_with(s, policy(retries=0)))
    assert r.status_code == 503 and r.json()["error"]["message"] == "status 503" and s.calls == 1
    s = Script(500)  # 500 is not in retry_statuses: passed through at once
    app = app_with(s, policy(retries=3))
    r = call(app)
    assert r.status_code == 500 and s.calls == 1 and audit(app)[0]["upstream_status"] == 500


def test_5xx_retries_exhausted_passes_last_answer():
    s = Script(502, 502, 502)
    r = call(app_with(s, policy(retries=2)))
    assert r.status_code == 502 and s.calls == 3


def test_connection_reset_retried_and_reported():
    s = Script(httpx.ReadError("connection reset by peer"), OK)
    assert call(app_with(s, policy(retries=1))).status_code == 200 and s.calls == 2
    s = Script(httpx.RemoteProtocolError("Server disconnected without sending a response."))
    app = app_with(s, policy(retries=1))
    r = call(app)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_connection" and s.calls == 2
    assert len(audit(app)) == 1 and audit(app)[0]["error"] == "upstream connection"


TRANSPORTS = {"aiohttp": lambda: None, "httpx": lambda: httpx.AsyncHTTPTransport()}  # None: the default (aiohttp)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_upstream_timeout_real_socket(transport):
    stub = StubUpstream(timeout_sleep_s=2.0)
    with LoopbackServer(stub.app) as up:
        app = create_app(up.url, policy(retries=1, timeout_s=0.3), scorer=keyword_scorer,
                         transport=TRANSPORTS[transport]())
        with TestClient(app) as c:
            t0 = time.monotonic()
            r = c.post("/v1/chat/completions", content=orjson.dumps(BODY),
                       headers={"x-account-id": "a", "x-stub-fault": "timeout", "x-request-id": "rq-timeout"})
            elapsed = time.monotonic() - t0
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert elapsed < 1.9 and stub.hits["rq-timeout"] == 2  # two 0.3 s attempts, not the upstream's 2 s
    assert [row["attempts"] for row in audit(app)] == [2]


def test_slow_stream_within_and_beyond_idle_timeout():
    stub = StubUpstream()
    with LoopbackServer(stub.app) as up:
        ok = create_app(up.url, policy(retries=0, stream_idle_timeout_s=2), scorer=keyword_scorer)
        with TestClient(ok) as c:
            r = c.post("/v1/chat/completions", content=orjson.dumps(dict(BODY, stream=True)),
                       headers={"x-account-id": "a", "x-stub-fault": "slow"})
        assert r.status_code == 200 and r.text.rstrip().endswith("[DONE]") and "error" not in r.text
        slow = create_app(up.url, policy(retries=0, stream_idle_timeout_s=0.01), scorer=keyword_scorer)
        with TestClient(slow) as c:
            r = c.post("/v1/chat/completions", content=orjson.dumps(dict(BODY, stream=True)),
                       headers={"x-account-id": "a", "x-stub-fault": "slow", "x-request-id": "rq-slow"})
    assert r.status_code == 200  # headers were already sent; the stream ends with an error event
    assert "upstream_stream_timeout" in r.text and "[DONE]" not in r.text
    assert stub.hits["rq-slow"] == 1, "a started stream is never retried"
    rows = audit(slow)
    assert len(rows) == 1 and rows[0]["error"] == "upstream stream_timeout" and rows[0]["status_code"] == 504


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_stream_cut_midway_reports_error_once(transport):
    stub = StubUpstream()
    with LoopbackServer(stub.app) as up:
        app = create_app(up.url, policy(retries=2), scorer=keyword_scorer, transport=TRANSPORTS[transport]())
        with TestClient(app) as c:
            r = c.post("/v1/chat/completions", content=orjson.dumps(dict(BODY, stream=True)),
                       headers={"x-account-id": "a", "x-stub-fault": "cut", "x-request-id": "rq-cut"})
    assert "upstream_stream_broken" in r.text and ANSWER.split()[0] not in r.text.split("upstream")[-1]
    assert stub.hits["rq-cut"] == 1
    assert len(audit(app)) == 1 and audit(app)[0]["error"] == "upstream stream_broken"


def _boom(system, user, tools):
    raise RuntimeError("model server for signals is down")


@pytest.mark.parametrize("mode,status,calls", [("open", 200, 1), ("closed", 503, 0)])
def test_scorer_failure_follows_fail_mode(mode, status, calls):
    s = Script(OK)
    app = app_with(s, policy(f"fail_mode: {{scorer: {mode}}}\n"), scorer=_boom)
    r = call(app)
    assert r.status_code == status and s.calls == calls
    if mode == "closed":
        assert r.json()["error"]["code"] == "distillguard_unavailable"
    rows = audit(app)
    assert len(rows) == 1 and "model server for signals is down" in rows[0]["error"]
    metrics = TestClient(app).get("/metrics").text
    assert f'distillguard_gateway_component_failures_total{{component="scorer",mode="{mode}"}} 1.0' in metrics


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("mode,status,calls", [("open", 200, 1), ("closed", 503, 0)])
def test_store_failure_follows_fail_mode(mode, status, calls, kind):
    import fakeredis

    from distillguard.gateway.state import RedisState

    s = Script(OK)
    server = fakeredis.FakeServer()
    state = RedisState(fakeredis.FakeRedis(server=server)) if kind == "redis" else None
    app = app_with(s, policy(f"fail_mode: {{store: {mode}}}\n"), state=state)

    def outage(on: bool) -> None:
        if kind == "redis":
            server.connected = not on
        else:
            app.state.gateway.state.broken = "disk I/O error" if on else None

    outage(True)
    r = call(app)
    assert r.status_code == status and s.calls == calls
    if mode == "closed":
        assert r.json()["error"]["code"] == "distillguard_unavailable"
    metrics = TestClient(app).get("/metrics").text
    assert "distillguard_gateway_audit_failures_total 1.0" in metrics  # the store could not take the row
    assert f'component_failures_total{{component="store",mode="{mode}"}} 1.0' in metrics
    outage(False)
    assert call(app).status_code == 200
    assert [row["status_code"] for row in audit(app)] == [200]


def test_concurrent_requests_with_random_faults_each_answered_once():
    import random

    rng = random.Random(7)
    seen = collections.Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        rid = request.headers["x-request-id"]
        seen[rid] += 1
        roll = rng.random()
        if roll < 0.15:
            raise httpx.ReadError("reset")
        if roll < 0.3:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json=OK)

    app = create_app("http://upstream.test", policy(retries=2), scorer=keyword_scorer,
                     transport=httpx.MockTransport(handler))

    async def run() -> list[httpx.Response]:
        gw = app.state.gateway
        await gw.startup()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
                return await asyncio.gather(*[
                    c.post("/v1/chat/completions", content=orjson.dumps(BODY),
                           headers={"x-account-id": f"a{i % 7}", "x-request-id": f"r{i}"}) for i in range(200)])
        finally:
            gw.state.flush()

    responses = asyncio.run(run())
    assert len(responses) == 200
    statuses = collections.Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 502, 503} and statuses[200] > 150
    rows = audit(app)
    assert len(rows) == 200 and len({r["request_id"] for r in rows}) == 200
    for r in rows:
        assert r["attempts"] == seen[r["request_id"]] <= 3


@pytest.mark.parametrize("mode,status", [("open", 200), ("closed", 503)])
def test_batched_scorer_failure_follows_fail_mode(mode, status):
    s = Script(OK)
    app = create_app("http://upstream.test", policy(f"fail_mode: {{scorer: {mode}}}\n"),
                     transport=httpx.MockTransport(s))
    batcher = app.state.gateway.engine.batcher
    assert batcher is not None, "the default scorer is batched"

    def broken(items):
        raise MemoryError("arrow kernel out of memory")

    batcher.batch_fn = broken
    r = call(app)
    assert r.status_code == status
    assert "arrow kernel out of memory" in audit(app)[0]["error"]


@pytest.mark.parametrize("spec", ["2.4", "2.3"])
def test_client_gone_before_stream_starts_still_audited_and_upstream_closed(spec):
    """The client disconnects when the response headers are sent, so the stream body never starts: the
    upstream response is still closed and the request still gets exactly one audit row."""
    closed = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'

        async def aclose(self):
            closed.append(True)

    def handler(request):
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    app = create_app("http://upstream.test", policy(), scorer=keyword_scorer, transport=httpx.MockTransport(handler))
    raw = orjson.dumps(dict(BODY, stream=True))
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"x-account-id", b"gone"),
                         (b"x-request-id", b"rq-gone"), (b"content-length", str(len(raw)).encode())]}
    sent_body = []

    async def receive():
        if not sent_body:
            sent_body.append(True)
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        if message["type"] == "http.response.start":
            raise OSError("client went away")

    async def run():
        async with app.router.lifespan_context(app):
            with pytest.raises(Exception):
                await app(scope, receive, send)

    asyncio.run(run())
    rows = audit(app)
    assert len(rows) == 1 and rows[0]["request_id"] == "rq-gone"
    assert rows[0]["status_code"] == 499 and "before the stream started" in rows[0]["error"]
    assert closed == [True]
