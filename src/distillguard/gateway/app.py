"""The ASGI reverse proxy: score on arrival, enforce the policy, forward to an OpenAI-compatible upstream.

Scored routes: ``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/completions`` (and the same without
``/v1``). Every other path is forwarded unchanged. Gateway routes: ``/metrics`` (Prometheus), ``/healthz``,
``/admin/...`` (token-protected), ``POST /beta/litellm_basic_guardrail_api`` (LiteLLM Generic Guardrail API).
See docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import httpx
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from distillguard.gateway.canary import CanaryInserter, ZeroWidthCanary
from distillguard.gateway.engine import Decision, Engine, resolve_account
from distillguard.gateway.policy import ACTIONS, Policy, default_policy
from distillguard.gateway.reasoning import SSETransformer, withhold_json, withhold_stream_event
from distillguard.gateway.state import StateError, StateStore, SQLiteState
from distillguard.gateway.transport import AiohttpTransport, aiohttp_available

__all__ = ["create_app", "Gateway", "error_body", "load_findings"]

log = logging.getLogger("distillguard.gateway")

#: largest scored request body accepted (bytes); larger ones get 413 without being scored or forwarded
MAX_BODY_BYTES = 16 * 1024 * 1024

SCORED_PATHS = {"/v1/chat/completions", "/v1/responses", "/v1/completions",
                "/chat/completions", "/responses", "/completions"}
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding", "content-encoding"}
_DROP_UP = _HOP | {"x-admin-token"}


def error_body(message: str, etype: str, code: str, request_id: str, **extra: Any) -> bytes:
    """An OpenAI-style error object; ``code`` is the machine-readable reason a front end acts on."""
    err = {"message": message, "type": etype, "code": code, "param": None, "request_id": request_id}
    err.update(extra)
    return orjson.dumps({"error": err})


def load_findings(path: str) -> list[dict]:
    """Rows of a findings ``accounts.csv`` (or a directory holding one): account_id, score, flagged, campaign_id."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / "accounts.csv"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse_findings_csv(text, str(p))


def parse_findings_csv(text: str, source: str = "<accounts.csv>") -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    need = {"account_id", "score"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise ValueError(f"{source}:1: header must include account_id and score; got {reader.fieldnames}")
    rows = []
    for i, r in enumerate(reader, start=2):
        if not r.get("account_id"):
            raise ValueError(f"{source}:{i}: account_id: missing")
        try:
            score = float(r["score"])
        except (TypeError, ValueError):
            raise ValueError(f"{source}:{i}: score: not a number: {r.get('score')!r}") from None
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"{source}:{i}: score: {score} outside [0, 1]")
        flagged = str(r.get("flagged", "")).strip().lower() in ("1", "true", "yes")
        rows.append({"account_id": r["account_id"], "score": score, "flagged": flagged,
                     "campaign_id": r.get("campaign_id") or None})
    return rows


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("distillguard_gateway_requests", "Requests decided", ["action", "enforced"],
                                registry=r)
        self.upstream_errors = Counter("distillguard_gateway_upstream_errors", "Upstream failures by kind",
                                       ["kind"], registry=r)
        self.retries = Counter("distillguard_gateway_upstream_retries", "Upstream retries", registry=r)
        self.failures = Counter("distillguard_gateway_component_failures", "Scorer/store failures",
                                ["component", "mode"], registry=r)
        self.withheld = Counter("distillguard_gateway_reasoning_withheld", "Responses with reasoning withheld",
                                registry=r)
        self.decision_s = Histogram("distillguard_gateway_decision_seconds", "Scoring + policy time",
                                    buckets=(.0002, .0005, .001, .002, .005, .01, .05), registry=r)
        self.audit_failures = Counter("distillguard_gateway_audit_failures", "Audit rows not stored",
                                      registry=r)


@dataclass
class Gateway:
    upstream: str
    engine: Engine
    admin_token: str | None = None
    upstream_api_key: str | None = None
    guardrail_api_key: str | None = None
    canary: CanaryInserter = field(default_factory=ZeroWidthCanary)
    peer_intel: Any = None  # distillguard.intel.PeerIntel: peers' indicators raise matching accounts' campaign_risk
    transport: httpx.AsyncBaseTransport | None = None
    metrics: _Metrics = field(default_factory=_Metrics)
    _upstream: httpx.AsyncBaseTransport | None = None
    _owns_transport: bool = False
    _call_decisions: dict = field(default_factory=dict)

    @property
    def policy(self) -> Policy:
        return self.engine.policy

    @property
    def state(self) -> StateStore:
        return self.engine.state

    # ----------------------------------------------------------------- lifecycle
    async def startup(self) -> None:
        try:  # load the scorer's models/indexes now rather than on the first request
            self.engine.score({"messages": [{"role": "user", "content": "warm up"}]})
        except Exception as exc:  # a broken scorer is handled per request by fail_mode
            log.warning("scorer warm-up failed: %s", exc)
        if self._upstream is None:
            # requests go straight to the transport (no httpx.AsyncClient): the client layer costs about as much
            # CPU as the connection pool itself, and the proxy needs none of its features (auth, redirects, cookies)
            if self.transport is not None:
                self._upstream = self.transport
            elif aiohttp_available():
                self._upstream, self._owns_transport = AiohttpTransport(), True
            else:
                self._upstream = httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))
                self._owns_transport = True

    async def shutdown(self) -> None:
        if self._upstream is not None and self._owns_transport:
            await self._upstream.aclose()
        self._upstream = None
        self.state.close()

    # ----------------------------------------------------------------- audit
    def audit(self, d: Decision, path: str, status: int, upstream_status: int | None, attempts: int,
              t0: float, error: str | None = None) -> None:
        v = d.verdict
        row = {
            "request_id": d.request_id, "timestamp": time.time(), "account_id": d.account_id, "path": path,
            "model": d.inputs.get("model"), "rule": v.rule, "action": v.action, "enforced": int(v.enforced),
            "reason": v.reason, "status_code": status, "upstream_status": upstream_status,
            "attempts": attempts, "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
            "scores": orjson.dumps(d.scores(), default=str).decode(), "error": error or d.error,
        }
        self.metrics.requests.labels(v.action, str(bool(v.enforced)).lower()).inc()
        try:
            self.state.append_audit([row])
        except StateError as exc:
            self.metrics.audit_failures.inc()
            log.error("audit row for request %s not stored: %s", d.request_id, exc)

    def _scrub(self, data: bytes) -> bytes:
        key = self.upstream_api_key
        if key and key.encode() in data:
            data = data.replace(key.encode(), b"[redacted]")
        return data

    # ----------------------------------------------------------------- the proxy
    async def proxy(self, request: Request) -> Response:
        t0 = time.perf_counter()
        path = request.url.path
        if request.method != "POST" or path not in SCORED_PATHS:
            return await self._passthrough(request)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        declared = request.headers.get("content-length", "")
        too_big = declared.isdigit() and int(declared) > MAX_BODY_BYTES
        raw = b"" if too_big else await request.body()
        if too_big or len(raw) > MAX_BODY_BYTES:
            return Response(error_body(f"request body over {MAX_BODY_BYTES} bytes", "invalid_request_error",
                                       "request_too_large", request_id), 413, media_type="application/json")
        account = resolve_account(request.headers, self.policy, self.engine.key_hash_secret) or "anonymous"
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except (orjson.JSONDecodeError, ValueError):
            return Response(error_body("request body is not a JSON object", "invalid_request_error",
                                       "invalid_json", request_id), 400, media_type="application/json")
        td = time.perf_counter()
        if self.peer_intel is not None:
            await self.peer_intel.apply_request_async(self.engine, account, request.client.host if request.client
                                                      else None, request.headers.get("user-agent"), body)
        decision = await self.engine.decide_async(account, body, request_id, path)
        self.metrics.decision_s.observe(time.perf_counter() - td)
        if decision.error:
            comp = "scorer" if decision.error.startswith("scorer") else "store"
            mode = self.policy.fail_scorer if comp == "scorer" else self.policy.fail_store
            self.metrics.failures.labels(comp, mode).inc()
            log.warning("request %s: %s (fail-%s)", request_id, decision.error, mode)
        refusal = self._refusal(decision)
        if refusal is not None:
            self.audit(decision, path, refusal.status_code, None, 0, t0)
            return refusal
        return await self._forward(request, raw, body, decision, t0)

    def _refusal(self, d: Decision) -> Response | None:
        rid = d.request_id
        hdrs = {"x-request-id": rid, "x-distillguard-action": d.effective}
        eff = d.effective
        if eff == "unavailable":
            return Response(error_body("request could not be screened; try again later", "service_unavailable",
                                       "distillguard_unavailable", rid), 503, hdrs, media_type="application/json")
        if eff == "block":
            return Response(error_body("request blocked by provider policy", "permission_error",
                                       f"distillguard_blocked:{d.verdict.reason}", rid, reason=d.verdict.reason),
                            403, hdrs, media_type="application/json")
        if eff == "throttle":
            hdrs["retry-after"] = str(d.verdict.retry_after_s)
            return Response(error_body("rate limited by provider policy", "rate_limit_error",
                                       "distillguard_throttled", rid, retry_after_s=d.verdict.retry_after_s),
                            429, hdrs, media_type="application/json")
        if eff == "step_up":
            step = {"reason": d.verdict.reason, "account_id": d.account_id}
            if self.policy.step_up_url:
                step["url"] = self.policy.step_up_url
            return Response(error_body("additional verification is required for this account",
                                       "permission_error", "step_up_required", rid, step_up=step),
                            403, hdrs, media_type="application/json")
        return None

    def _upstream_request(self, request: Request, raw: bytes, rid: str, stream: bool) -> httpx.Request:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_UP]
        if self.upstream_api_key:
            headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
            headers.append(("authorization", f"Bearer {self.upstream_api_key}"))
        headers.append(("accept-encoding", "identity"))
        if not request.headers.get("x-request-id"):
            headers.append(("x-request-id", rid))
        pol = self.policy
        timeout = httpx.Timeout(connect=pol.upstream_connect_timeout_s,
                                read=pol.stream_idle_timeout_s if stream else pol.upstream_timeout_s,
                                write=pol.upstream_timeout_s, pool=pol.upstream_timeout_s)
        url = self.upstream.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        return httpx.Request(request.method, url, headers=headers, content=raw,
                             extensions={"timeout": timeout.as_dict()})

    async def _send(self, build) -> tuple[httpx.Response | None, int, str | None]:
        """Send with retries; returns (response or None, attempts, error kind). Retries happen only before any
        byte has gone downstream, so the client gets exactly one answer."""
        pol = self.policy
        attempts = 0
        assert self._upstream is not None, "Gateway.startup() was not run"
        while True:
            attempts += 1
            last = attempts > pol.retries
            try:
                resp = await self._upstream.handle_async_request(build())
            except httpx.TimeoutException:
                kind = "timeout"
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                kind = "connection"
            else:
                if resp.status_code in pol.retry_statuses and not last:
                    await resp.aclose()
                    self.metrics.upstream_errors.labels(f"http_{resp.status_code}").inc()
                    self.metrics.retries.inc()
                    await asyncio.sleep(pol.retry_backoff_s * attempts)
                    continue
                if resp.status_code >= 500:
                    self.metrics.upstream_errors.labels(f"http_{resp.status_code}").inc()
                return resp, attempts, None
            self.metrics.upstream_errors.labels(kind).inc()
            if last:
                return None, attempts, kind
            self.metrics.retries.inc()
            await asyncio.sleep(pol.retry_backoff_s * attempts)

    @staticmethod
    def _down_headers(resp: httpx.Response, rid: str, d: Decision) -> dict:
        h = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
        h["x-request-id"] = resp.headers.get("x-request-id") or rid
        h["x-distillguard-action"] = d.effective
        return h

    async def _forward(self, request: Request, raw: bytes, body: dict, d: Decision, t0: float) -> Response:
        rid, path = d.request_id, request.url.path
        stream = bool(body.get("stream"))
        resp, attempts, err = await self._send(lambda: self._upstream_request(request, raw, rid, stream))
        if resp is None:
            status = 504 if err == "timeout" else 502
            self.audit(d, path, status, None, attempts, t0, error=f"upstream {err}")
            return Response(error_body(f"upstream {err} after {attempts} attempt(s)", "upstream_error",
                                       f"upstream_{err}", rid), status, {"x-request-id": rid},
                            media_type="application/json")
        eff = d.effective
        withhold = eff == "withhold_reasoning"
        canary = eff == "canary"
        ctype = resp.headers.get("content-type", "")
        if "text/event-stream" in ctype:
            started: list[bool] = []

            async def abandoned() -> None:  # the client left before the first chunk: the body never ran
                if not started:
                    await resp.aclose()
                    self.audit(d, path, 499, resp.status_code, attempts, t0,
                               error="client disconnected before the stream started")

            return _AuditedStream(self._stream(resp, d, path, attempts, t0, withhold, canary, started), abandoned,
                                  status_code=resp.status_code, headers=self._down_headers(resp, rid, d))
        try:
            data = await resp.aread()
        except httpx.HTTPError as exc:
            await resp.aclose()
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
            self.metrics.upstream_errors.labels(kind).inc()
            status = 504 if kind == "timeout" else 502
            self.audit(d, path, status, resp.status_code, attempts, t0, error=f"upstream {kind} reading body")
            return Response(error_body(f"upstream {kind} while reading the response", "upstream_error",
                                       f"upstream_{kind}", rid), status, {"x-request-id": rid},
                            media_type="application/json")
        await resp.aclose()
        if (withhold or canary) and resp.status_code < 400 and "json" in ctype:
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            if obj is not None:
                changed = False
                if withhold:
                    obj, changed = withhold_json(obj, d.verdict.replace, self.policy.summary_chars)
                    if changed:
                        self.metrics.withheld.inc()
                if canary:
                    changed |= self._canary_json(obj, d.account_id)
                if changed:
                    data = orjson.dumps(obj)
        self.audit(d, path, resp.status_code, resp.status_code, attempts, t0)
        return Response(self._scrub(data), resp.status_code, self._down_headers(resp, rid, d))

    def _canary_json(self, obj: Any, account: str) -> bool:
        now = time.time()
        changed = False
        if not isinstance(obj, dict):
            return False
        for ch in obj.get("choices") or []:
            msg = ch.get("message") if isinstance(ch, dict) else None
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                msg["content"] = self.canary.insert(account, msg["content"], now)
                changed = True
            if isinstance(msg, dict) and isinstance(msg.get("reasoning_content"), str):  # reasoning, when not withheld
                msg["reasoning_content"] = self.canary.insert(account, msg["reasoning_content"], now)
                changed = True
        for item in obj.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "message":
                for c in item.get("content") or []:
                    if isinstance(c, dict) and c.get("type") == "output_text" and isinstance(c.get("text"), str):
                        c["text"] = self.canary.insert(account, c["text"], now)
                        changed = True
                        break
        return changed

    async def _stream(self, resp: httpx.Response, d: Decision, path: str, attempts: int, t0: float,
                      withhold: bool, canary: bool, started: list | None = None) -> AsyncIterator[bytes]:
        if started is not None:
            started.append(True)
        state: dict = {}
        now = time.time()

        def on_data(obj: dict) -> dict | None:
            if withhold:
                obj = withhold_stream_event(obj, d.verdict.replace, self.policy.summary_chars, state)
                if obj is None:
                    state["changed"] = True
                    return None
            # an inserter with ``streaming = True`` is stateless and may rewrite every delta (and reasoning deltas)
            every = getattr(self.canary, "streaming", False)
            if canary and (every or not state.get("canary_done")):
                for ch in obj.get("choices") or []:
                    delta = ch.get("delta") if isinstance(ch, dict) else None
                    for k in ("content", "reasoning_content") if every else ("content",):
                        if isinstance(delta, dict) and isinstance(delta.get(k), str) and delta[k]:
                            delta[k] = self.canary.insert(d.account_id, delta[k], now)
                            state["canary_done"] = True
                if obj.get("type") == "response.output_text.delta" and isinstance(obj.get("delta"), str):
                    obj["delta"] = self.canary.insert(d.account_id, obj["delta"], now)
                    state["canary_done"] = True
            return obj

        tf = SSETransformer(on_data) if (withhold or canary) else None
        error = None
        status = resp.status_code
        try:
            async for chunk in resp.aiter_raw():
                out = tf.feed(chunk) if tf else chunk
                if out:
                    yield self._scrub(out)
            if tf:
                tail = tf.close()
                if tail:
                    yield tail
        except httpx.HTTPError as exc:
            kind = "stream_timeout" if isinstance(exc, httpx.TimeoutException) else "stream_broken"
            self.metrics.upstream_errors.labels(kind).inc()
            error = f"upstream {kind}"
            status = 504 if kind == "stream_timeout" else 502
            yield b"data: " + error_body(f"upstream {kind.replace('_', ' ')}; response incomplete",
                                         "upstream_error", f"upstream_{kind}", d.request_id) + b"\n\n"
        except asyncio.CancelledError:
            error = "client disconnected"
            raise
        finally:
            await resp.aclose()
            if withhold and (state.get("changed") or state.get("text")):
                self.metrics.withheld.inc()
            self.audit(d, path, status, resp.status_code, attempts, t0, error=error)

    async def _passthrough(self, request: Request) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        raw = await request.body()
        resp, attempts, err = await self._send(lambda: self._upstream_request(request, raw, rid, False))
        if resp is None:
            status = 504 if err == "timeout" else 502
            return Response(error_body(f"upstream {err}", "upstream_error", f"upstream_{err}", rid), status,
                            media_type="application/json")
        try:
            data = await resp.aread()
        except httpx.HTTPError:
            await resp.aclose()
            return Response(error_body("upstream failed while reading the response", "upstream_error",
                                       "upstream_connection", rid), 502, media_type="application/json")
        await resp.aclose()
        h = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
        return Response(self._scrub(data), resp.status_code, h)

    # ----------------------------------------------------------------- admin API
    def _admin_ok(self, request: Request) -> Response | None:
        if not self.admin_token:
            return Response(error_body("admin API disabled (no admin token configured)", "not_found",
                                       "admin_disabled", ""), 404, media_type="application/json")
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-admin-token", "")
        if not hmac.compare_digest(given.encode(), self.admin_token.encode()):
            return Response(error_body("invalid admin token", "authentication_error", "admin_unauthorized", ""),
                            401, media_type="application/json")
        return None

    async def admin_account(self, request: Request) -> Response:
        if (bad := self._admin_ok(request)) is not None:
            return bad
        account = request.path_params["account_id"]
        now = time.time()
        try:
            st = self.state.get(account)
        except StateError as exc:
            return Response(error_body(str(exc), "service_unavailable", "state_unavailable", ""), 503,
                            media_type="application/json")
        feats = {k: v for k, v in st.features(now).items() if not k.startswith("_")}
        body = {"account_id": account, "tier": st.tier or self.policy.tier_of(account),
                "allowlisted": account in self.policy.allowlist, "campaign_id": st.campaign_id,
                "flagged": st.flagged, "override": st.active_override(now), "features": feats,
                "requests_total": st.requests_total, "last_seen": st.last_ts or None}
        return Response(orjson.dumps(body), media_type="application/json")

    async def admin_override(self, request: Request) -> Response:
        if (bad := self._admin_ok(request)) is not None:
            return bad
        account = request.path_params["account_id"]
        if request.method == "DELETE":
            self.state.set_override(account, None)
            return Response(orjson.dumps({"account_id": account, "override": None}), media_type="application/json")
        try:
            spec = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return Response(error_body("body is not JSON", "invalid_request_error", "invalid_json", ""), 400,
                            media_type="application/json")
        problems = _check_override(spec)
        if problems:
            return Response(error_body(problems, "invalid_request_error", "invalid_override", ""), 400,
                            media_type="application/json")
        now = time.time()
        override = None
        if spec.get("action"):
            ttl = spec.get("ttl_s")
            override = {"action": spec["action"], "reason": spec.get("reason") or "operator override",
                        "until": now + float(ttl) if ttl else None, "set_at": now,
                        "retry_after_s": int(spec.get("retry_after_s") or 60),
                        "replace": spec.get("replace") or "strip"}
        st = self.state.set_override(account, override, spec.get("tier"))
        return Response(orjson.dumps({"account_id": account, "override": st.override, "tier": st.tier}),
                        media_type="application/json")

    async def admin_campaign_risk(self, request: Request) -> Response:
        if (bad := self._admin_ok(request)) is not None:
            return bad
        raw = await request.body()
        try:
            if "csv" in request.headers.get("content-type", ""):
                rows = parse_findings_csv(raw.decode("utf-8"), "request body")
            else:
                obj = orjson.loads(raw)
                rows = parse_findings_csv(_rows_to_csv(obj.get("accounts") if isinstance(obj, dict) else None),
                                          "request body accounts")
        except (ValueError, UnicodeDecodeError) as exc:
            return Response(error_body(str(exc), "invalid_request_error", "invalid_findings", ""), 400,
                            media_type="application/json")
        n = self.state.set_campaign_risk(rows)
        return Response(orjson.dumps({"updated": n}), media_type="application/json")

    async def admin_audit(self, request: Request) -> Response:
        if (bad := self._admin_ok(request)) is not None:
            return bad
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            limit = 100
        rows = self.state.audit_rows(max(0, min(limit, 10_000)))
        return Response(orjson.dumps({"rows": rows}), media_type="application/json")

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return Response(orjson.dumps({"status": "ok", "mode": self.policy.mode}), media_type="application/json")

    # ----------------------------------------------------------------- LiteLLM Generic Guardrail API
    async def generic_guardrail(self, request: Request) -> Response:
        from distillguard.gateway.generic_guardrail import generic_guardrail_response

        if self.guardrail_api_key:
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), self.guardrail_api_key.encode()):
                return Response(error_body("invalid guardrail API key", "authentication_error", "unauthorized", ""),
                                401, media_type="application/json")
        try:
            payload = orjson.loads(await request.body())
            if not isinstance(payload, dict):
                raise ValueError
        except (orjson.JSONDecodeError, ValueError):
            return Response(error_body("body is not a JSON object", "invalid_request_error", "invalid_json", ""),
                            400, media_type="application/json")
        out = await generic_guardrail_response(self, payload)
        return Response(orjson.dumps(out), media_type="application/json")


class _AuditedStream(StreamingResponse):
    """A streaming response that still closes the upstream and writes the audit row when the client goes away
    before the body iterator has started (its ``finally`` would never run then)."""

    def __init__(self, content: AsyncIterator[bytes], on_exit, **kw: Any):
        super().__init__(content, **kw)
        self._on_exit = on_exit

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_exit()


def _rows_to_csv(rows: Any) -> str:
    if not isinstance(rows, list):
        raise ValueError("expected {\"accounts\": [{\"account_id\", \"score\", \"flagged\", \"campaign_id\"}, ...]}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["account_id", "score", "flagged", "campaign_id"], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        if not isinstance(r, dict):
            raise ValueError("each account must be an object")
        w.writerow(r)
    return buf.getvalue()


def _check_override(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return "expected a JSON object"
    action = spec.get("action")
    if action is not None and action not in ACTIONS:
        return f"action: must be one of {', '.join(ACTIONS)} or null"
    ttl = spec.get("ttl_s")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
        return "ttl_s: expected a positive number of seconds"
    if spec.get("replace") not in (None, "strip", "summary"):
        return "replace: must be strip or summary"
    if spec.get("tier") is not None and not isinstance(spec.get("tier"), str):
        return "tier: expected a string"
    return None


def default_canary() -> CanaryInserter:
    """The phrasing canary of :mod:`distillguard.intel.canary` when ``DISTILLGUARD_CANARY_SECRET`` is set (the
    secret ``distillguard attribute`` needs later), else :class:`ZeroWidthCanary`."""
    import os

    secret = os.environ.get("DISTILLGUARD_CANARY_SECRET")
    if secret:
        from distillguard.intel.canary import PhrasingCanary

        return PhrasingCanary(secret)
    return ZeroWidthCanary()


def create_app(upstream: str, policy: Policy | None = None, state: StateStore | str | None = None,
               scorer=None, admin_token: str | None = None, upstream_api_key: str | None = None,
               transport: httpx.AsyncBaseTransport | None = None, canary: CanaryInserter | None = None,
               findings: str | None = None, guardrail_api_key: str | None = None,
               key_hash_secret: bytes | None = None, peer_intel=None) -> Starlette:
    """Build the gateway ASGI app. ``state``: a store, a SQLite path or a ``redis://`` URL."""
    from distillguard.gateway.state import open_state

    policy = policy or default_policy()
    if state is None:
        store: StateStore = SQLiteState(":memory:")
    elif isinstance(state, str):
        store = open_state(state)
    else:
        store = state
    if findings:
        store.set_campaign_risk(load_findings(findings))
    gw = Gateway(upstream=upstream, engine=Engine(policy, store, scorer, key_hash_secret), admin_token=admin_token,
                 upstream_api_key=upstream_api_key, transport=transport, guardrail_api_key=guardrail_api_key,
                 canary=canary or default_canary(), peer_intel=peer_intel)
    routes = [
        Route("/metrics", gw.metrics_endpoint, methods=["GET"]),
        Route("/healthz", gw.healthz, methods=["GET"]),
        Route("/admin/accounts/{account_id:path}/override", gw.admin_override, methods=["PUT", "POST", "DELETE"]),
        Route("/admin/accounts/{account_id:path}", gw.admin_account, methods=["GET"]),
        Route("/admin/campaign-risk", gw.admin_campaign_risk, methods=["POST"]),
        Route("/admin/audit", gw.admin_audit, methods=["GET"]),
        Route("/beta/litellm_basic_guardrail_api", gw.generic_guardrail, methods=["POST"]),
        Route("/{path:path}", gw.proxy, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        await gw.startup()
        try:
            yield
        finally:
            await gw.shutdown()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    return app
