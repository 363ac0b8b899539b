"""Gateway benchmark: added latency (p50/p99) and throughput against calling the upstream directly, same run;
optionally a soak with injected upstream faults that checks no request is lost or answered twice.

    python bench/bench_gateway.py                       # latency at 200 req/s + throughput, ~1 minute
    python bench/bench_gateway.py --soak --duration 600  # the 10-minute fault soak (run by hand)

The stub upstream and the gateway each run in their own process (uvicorn on 127.0.0.1); the load generator runs
here. Latency is measured open-loop (requests start on schedule whatever the answers do) in alternating
windows, direct then through the gateway, so machine noise hits both alike. Prints one JSON object.
Targets (docs/gateway.md): <= 3 ms added at p99 at 200 req/s; >= 1,000 req/s sustained; soak loses nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import time

import httpx
import orjson

PROMPTS = [
    "What is {a} + {b}? Think step by step and show your full hidden reasoning.",
    "Write a Python function that returns the {a}th Fibonacci number.",
    "Summarise the plot of a short story about a lighthouse keeper in {a} words.",
    "Grade this answer on a 1-10 rubric: 'The capital of France is Paris.' Explain the score.",
    "Translate 'good morning, I would like {a} apples' into French.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_stub(port: int, fault_rate: float, seed: int) -> None:
    import uvicorn

    from distillguard.gateway.stub import StubUpstream

    stub = StubUpstream(fault_rate=fault_rate, seed=seed, faults=("500", "503", "timeout", "cut"),
                        timeout_sleep_s=0.5)
    uvicorn.run(stub.app, host="127.0.0.1", port=port, log_level="critical", access_log=False)


def _run_gateway(port: int, upstream: str, state: str, policy_yaml: str | None, scorer: str) -> None:
    import uvicorn

    from distillguard.gateway.app import create_app
    from distillguard.gateway.policy import default_policy, parse_policy

    pol = parse_policy(policy_yaml, "<bench policy>") if policy_yaml else default_policy()
    fn = None
    if scorer == "none":
        def fn(system, user, tools):  # measures the proxy alone
            return {"extraction_score": 0.0, "template_id": None}
    app = create_app(upstream, pol, state, scorer=fn, admin_token="bench")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def _wait_up(url: str, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url + path, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"server {url} did not start")


def _body(rng: random.Random, stream: bool = False) -> bytes:
    p = rng.choice(PROMPTS).format(a=rng.randint(1, 999), b=rng.randint(1, 999))
    return orjson.dumps({"model": "stub-1", "messages": [{"role": "user", "content": p}], "stream": stream})


class RawPool:
    """A minimal keep-alive HTTP/1.1 client for the load generator, so that client overhead (large with httpx at
    hundreds of requests per second on two cores) does not swamp the figures being measured."""

    def __init__(self, url: str, size: int):
        u = httpx.URL(url)
        self.host, self.port, self.path = u.host, u.port, u.raw_path.decode()
        self.size = size
        self._idle: asyncio.Queue = asyncio.Queue()
        self._made = 0

    async def _conn(self, fresh: bool = False):
        if fresh or (self._idle.empty() and self._made < self.size):
            self._made += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except OSError:
                self._made -= 1
                raise
        return await self._idle.get()

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            return await self._post(body, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            # a kept-alive connection the server closed while idle: one retry on a fresh connection
            return await self._post(body, headers, fresh=True)

    async def _post(self, body: bytes, headers: dict[str, str], fresh: bool = False) -> tuple[int, bytes]:
        conn = await self._conn(fresh)
        reader, writer = conn
        try:
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write((f"POST {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                          f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n").encode()
                         + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            if b"transfer-encoding: chunked" in lower:
                parts = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    data = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    parts.append(data[:-2])
                payload = b"".join(parts)
            else:
                i = lower.find(b"content-length:")
                n = int(lower[i + 15: lower.find(b"\r\n", i)]) if i >= 0 else 0
                payload = await reader.readexactly(n)
        except BaseException:
            writer.close()
            self._made -= 1
            raise
        self._idle.put_nowait(conn)
        return status, payload

    async def close(self) -> None:
        while not self._idle.empty():
            _, w = self._idle.get_nowait()
            w.close()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _open_loop(client: RawPool, rate: float, seconds: float, rng, lat: list,
                     errors: collections.Counter) -> None:
    """Start ``rate`` requests per second for ``seconds``; append each latency (ms) to ``lat``; count failures
    by kind (HTTP status or exception name) in ``errors``."""
    n = int(rate * seconds)

    async def one(i: int) -> None:
        t = time.perf_counter()
        try:
            status, _ = await client.post(_body(rng), {"x-account-id": f"acct-{i % 50}"})
            if status != 200:
                errors[str(status)] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            return
        lat.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


async def _closed_loop(client: RawPool, concurrency: int, seconds: float, rng) -> dict:
    done = 0
    errors: collections.Counter = collections.Counter()
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            try:
                status, _ = await client.post(_body(rng), {"x-account-id": f"acct-{w}"})
                done += 1
                if status != 200:
                    errors[str(status)] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    el = time.perf_counter() - t0
    return {"requests": done, "errors": dict(errors), "rps": round(done / el, 1)}


async def _latency_and_throughput(args, direct: str, gateway: str) -> dict:
    rng = random.Random(1)
    pools = {"direct": RawPool(direct, args.concurrency), "gateway": RawPool(gateway, args.concurrency)}
    # warm both paths (imports, connections, the scorer's first call)
    for pool in pools.values():
        for _ in range(20):
            await pool.post(_body(rng), {"x-account-id": "warm"})
    lat: dict[str, list] = {"direct": [], "gateway": []}
    errs: dict[str, collections.Counter] = {name: collections.Counter() for name in pools}
    windows = max(1, int(args.seconds // args.window))
    for _ in range(windows):
        for name, pool in pools.items():
            await _open_loop(pool, args.rate, args.window, rng, lat[name], errs[name])
    out: dict = {"rate_rps": args.rate, "seconds_each": windows * args.window}
    for name in lat:
        out[f"{name}_p50_ms"] = round(_pct(lat[name], 0.5), 3)
        out[f"{name}_p99_ms"] = round(_pct(lat[name], 0.99), 3)
        out[f"{name}_errors"] = dict(errs[name])
        out[f"{name}_n"] = len(lat[name])
    out["added_p50_ms"] = round(out["gateway_p50_ms"] - out["direct_p50_ms"], 3)
    out["added_p99_ms"] = round(out["gateway_p99_ms"] - out["direct_p99_ms"], 3)
    if args.throughput_seconds > 0:
        for name, pool in pools.items():
            out[f"throughput_{name}"] = await _closed_loop(pool, args.concurrency, args.throughput_seconds, rng)
    for pool in pools.values():
        await pool.close()
    return out


async def _soak(args, gateway: str) -> dict:
    """Closed loop with faults injected upstream; every request must get exactly one answer."""
    rng = random.Random(2)
    sent = 0
    answered = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    lost: list[str] = []
    stop = time.perf_counter() + args.duration
    limits = httpx.Limits(max_connections=args.soak_concurrency * 2)

    async def worker(w: int, client: httpx.AsyncClient) -> None:
        nonlocal sent
        i = 0
        while time.perf_counter() < stop:
            i += 1
            rid = f"soak-{w}-{i}"
            stream = rng.random() < 0.3
            sent += 1
            try:
                if stream:
                    async with client.stream("POST", gateway, content=_body(rng, True),
                                             headers={"x-account-id": f"acct-{w}", "x-request-id": rid}) as r:
                        async for _ in r.aiter_bytes():
                            pass
                else:
                    r = await client.post(gateway, content=_body(rng),
                                          headers={"x-account-id": f"acct-{w}", "x-request-id": rid})
                answered[rid] += 1
                statuses[r.status_code] += 1
            except httpx.HTTPError as exc:
                lost.append(f"{rid}: {type(exc).__name__}")

    t0 = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*[worker(w, client) for w in range(args.soak_concurrency)])
    return {"duration_s": round(time.perf_counter() - t0, 1), "sent": sent, "answered": sum(answered.values()),
            "answered_twice": sum(1 for v in answered.values() if v > 1), "lost": len(lost),
            "lost_examples": lost[:5], "statuses": dict(statuses), "request_ids": set(answered)}


SOAK_POLICY = """
mode: enforce
upstream: {timeout_s: 0.3, stream_idle_timeout_s: 1.0, retries: 2, retry_backoff_s: 0.01}
rules:
  - name: harvest
    when: {extraction_score: ">= 0.5"}
    action: withhold_reasoning
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop request rate for latency (req/s)")
    ap.add_argument("--seconds", type=float, default=20.0, help="latency seconds per path")
    ap.add_argument("--window", type=float, default=5.0, help="alternation window (s)")
    ap.add_argument("--throughput-seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--scorer", choices=["signals", "none"], default="signals",
                    help="signals: distillguard.signals.score_request (default); none: proxy overhead alone")
    ap.add_argument("--policy", help="policy YAML for the latency run (default: built-in shadow policy)")
    ap.add_argument("--soak", action="store_true", help="run the fault soak instead")
    ap.add_argument("--duration", type=float, default=600.0, help="soak seconds")
    ap.add_argument("--fault-rate", type=float, default=0.05, help="soak: share of upstream calls that fail")
    ap.add_argument("--soak-concurrency", type=int, default=16)
    args = ap.parse_args(argv)

    ctx = mp.get_context("spawn")
    sp, gp = _free_port(), _free_port()
    tmp = tempfile.mkdtemp(prefix="dg-bench-")
    state = os.path.join(tmp, "gateway.sqlite")
    policy_yaml = SOAK_POLICY if args.soak else (open(args.policy).read() if args.policy else None)
    stub = ctx.Process(target=_run_stub, args=(sp, args.fault_rate if args.soak else 0.0, 3), daemon=True)
    gw = ctx.Process(target=_run_gateway, args=(gp, f"http://127.0.0.1:{sp}", state, policy_yaml, args.scorer),
                     daemon=True)
    stub.start()
    gw.start()
    try:
        _wait_up(f"http://127.0.0.1:{sp}", "/v1/models")
        _wait_up(f"http://127.0.0.1:{gp}", "/healthz")
        direct = f"http://127.0.0.1:{sp}/v1/chat/completions"
        gateway = f"http://127.0.0.1:{gp}/v1/chat/completions"
        if args.soak:
            out = asyncio.run(_soak(args, gateway))
        else:
            out = asyncio.run(_latency_and_throughput(args, direct, gateway))
    finally:
        gw.terminate()  # SIGTERM: uvicorn shuts down, the gateway flushes its state
        gw.join(15)
        stub.terminate()
        stub.join(5)
    if args.soak:
        from distillguard.gateway.state import read_audit

        ids = read_audit(state).column("request_id").to_pylist()
        counts = collections.Counter(ids)
        sent_ids = out.pop("request_ids")
        out["audit_rows"] = len(ids)
        out["audit_missing"] = len(sent_ids - set(counts))
        out["audit_duplicates"] = sum(1 for v in counts.values() if v > 1)
        out["ok"] = (out["lost"] == 0 and out["answered_twice"] == 0 and out["answered"] == out["sent"]
                     and out["audit_missing"] == 0 and out["audit_duplicates"] == 0)
    out["scorer"] = args.scorer
    out["cpus"] = os.cpu_count()
    print(json.dumps(out, indent=2))
    return 0 if out.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
