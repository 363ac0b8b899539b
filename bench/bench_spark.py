"""Scan throughput: Spark local[1] / local[2] beside the DuckDB path on the same traffic.

    .venv/bin/python bench/bench_spark.py --path /tmp/scan1m/events.jsonl --cores 1 2
    .venv/bin/python bench/bench_spark.py --events 1000000 5000000 --cores 1 2 --workdir /tmp/dg_bench_spark

``--path`` scans existing JSON-lines files; ``--events`` simulates the ``demo`` scenario scaled to about that
many events (reused when already there). Each engine runs in its own process (a Spark master cannot change
inside one process); the bench prints events/s of the whole scan (read, signals, features, edges,
campaigns, findings), the stage timings, the CPU seconds of the scan (the process and everything it
started: JVM, Python workers) and whether every Spark run found the DuckDB run's flags and campaigns.
``--json`` also writes the rows to a file. Figures on a shared machine are indicative only: compare CPU
seconds, and read wall figures beside the load average printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEMO_EVENTS_AT_SCALE_1 = 80_000  # the demo scenario's size at scale 1 (about; the simulator reports the truth)


def _data(workdir: Path, n: int) -> tuple[Path, int]:
    d = workdir / f"sim_{n}"
    meta = d / "bench_meta.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        return Path(m["path"]), m["n_events"]
    from distillguard.sim import simulate

    t = time.perf_counter()
    res = simulate(d, scenario="demo", seed=7, scale=n / DEMO_EVENTS_AT_SCALE_1)
    meta.write_text(json.dumps({"path": str(res.events_path), "n_events": res.n_events}))
    print(f"simulated {res.n_events:,} events in {time.perf_counter() - t:.0f}s -> {res.events_path}", flush=True)
    return res.events_path, res.n_events


def tree_cpu_s(root: int | None = None) -> float:
    """CPU seconds (user + system, with reaped children) of process ``root`` and all its live descendants
    (for Spark: the driver, its JVM and the JVM's Python workers)."""
    root = root or os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    kids: dict[int, list[int]] = {}
    used: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(name))
        used[int(name)] = sum(int(x) for x in fields[11:15])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0)
        todo += kids.get(pid, [])
    return total / tick


def _one(engine: str, cores: int, path: str, conf: dict, dump: str | None = None) -> dict:
    """Run one scan in this process and return its figures (``dump``: write flags and campaigns there)."""
    t0 = time.perf_counter()
    if engine == "duckdb":
        from distillguard.detect import Scanner

        scanner = Scanner()
        startup = 0.0
    else:
        from distillguard.engine.spark import SparkScanner, spark_session

        # spark_session adds the local-mode settings (distillguard.engine.spark.local_conf)
        spark = spark_session(f"local[{cores}]", conf)
        spark.sparkContext.setLogLevel("ERROR")
        scanner = SparkScanner(spark=spark)
        startup = time.perf_counter() - t0
    cpu0 = tree_cpu_s()
    res = scanner.scan([path])
    cpu = tree_cpu_s() - cpu0
    total = time.perf_counter() - t0
    n = res.timings.get("events") or res.accounts.num_rows
    if engine == "duckdb":
        n = int(sum(1 for _ in open(path, "rb")))
    if dump:
        acc = res.accounts.sort_by("account_id")
        Path(dump).write_text(json.dumps({
            "flagged": [a for a, f in zip(acc.column("account_id").to_pylist(), acc.column("flagged").to_pylist()) if f],
            "campaign_of": {a: c for a, c in zip(acc.column("account_id").to_pylist(),
                                                 acc.column("campaign_id").to_pylist()) if c},
            "campaigns": [[c["campaign_id"], sorted(c["accounts"]), c["flagged"]] for c in res.campaigns]}))
    return {"engine": engine, "cores": cores if engine == "spark" else os.cpu_count(), "events": n,
            "startup_s": round(startup, 1), "scan_s": round(res.timings["total_s"], 1), "total_s": round(total, 1),
            "cpu_s": round(cpu, 1), "events_per_s": round(n / res.timings["total_s"], 1),
            "stages": {k: round(v, 1) for k, v in res.timings.items() if k.endswith("_s") and k != "total_s"},
            "accounts": res.accounts.num_rows, "flagged": int(sum(res.accounts.column("flagged").to_pylist())),
            "campaigns": len(res.campaigns), "loadavg_end": round(os.getloadavg()[0], 1)}


def _parity(dumps: dict[tuple[str, int], Path]) -> list[str]:
    """Lines saying whether each Spark run found the DuckDB run's flags, campaign ids and campaign members."""
    base = dumps.get(("duckdb", 0))
    if base is None or not base.exists():
        return []
    want = json.loads(base.read_text())
    out = []
    for (engine, cores), p in dumps.items():
        if engine == "duckdb" or not p.exists():
            continue
        got = json.loads(p.read_text())
        diffs = [k for k in ("flagged", "campaign_of", "campaigns") if got[k] != want[k]]
        if not diffs:
            out.append(f"parity spark cores={cores}: same flagged accounts ({len(want['flagged'])}), campaign ids "
                       f"and campaign members ({len(want['campaigns'])} campaigns) as duckdb")
        else:
            fl = set(want["flagged"]) ^ set(got["flagged"])
            out.append(f"parity spark cores={cores}: DIFFERENT {diffs}: {len(fl)} accounts flagged by one engine only; "
                       f"campaigns {len(want['campaigns'])} vs {len(got['campaigns'])}")
    return out


def _driver_probe(n_accounts: int, n_edges: int) -> dict:
    """Peak driver memory of the driver-side graph work (edge table in Arrow, Leiden communities) for a
    random graph of ``n_accounts`` accounts and ``n_edges`` edges (run in a fresh process)."""
    import resource

    import numpy as np
    import pyarrow as pa

    from distillguard.linking import EDGE_SCHEMA
    from distillguard.linking.campaigns import find_campaigns

    rng = np.random.default_rng(0)
    names = np.char.add("acct-", np.char.zfill(np.arange(n_accounts).astype(str), 9))
    # clustered graph: most edges inside groups of 20 accounts, like rings behind shared infrastructure
    a = rng.integers(0, n_accounts, n_edges)
    b = np.where(rng.random(n_edges) < 0.9, (a // 20) * 20 + rng.integers(0, 20, n_edges), rng.integers(0, n_accounts, n_edges))
    b = np.minimum(b, n_accounts - 1)
    keep = a != b
    a, b = a[keep], b[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    kinds = np.array(["ip", "payment", "template", "sync"])[rng.integers(0, 4, len(lo))]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    edges = pa.table({"src": names[lo].tolist(), "dst": names[hi].tolist(), "kind": kinds.tolist(),
                      "weight": rng.random(len(lo)) * 0.8 + 0.2, "count": np.ones(len(lo), np.int64),
                      "detail": ["ip 10.0.0.1 (3 customers)"] * len(lo)}, schema=EDGE_SCHEMA)
    scores = pa.table({"account_id": names.tolist(), "score": rng.random(n_accounts) * 0.5})
    t = time.perf_counter()
    res = find_campaigns(edges, scores)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"accounts": n_accounts, "edges": int(edges.num_rows), "peak_mb_over_base": round((peak - base) / 1024, 1),
            "seconds": round(dt, 1), "campaigns": int(res.membership.column("campaign_id").unique().__len__())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", nargs="+", help="existing JSON-lines files to scan (instead of --events)")
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--engines", nargs="+", default=["duckdb", "spark"])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dg_bench_spark"))
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--conf", nargs="+", default=[], metavar="KEY=VALUE",
                    help="extra Spark settings, e.g. spark.sql.codegen.wholeStage=true (over local_conf's)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per scan before it is given up")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--driver-probe", nargs=2, type=int, metavar=("ACCOUNTS", "EDGES"),
                    help="measure driver memory of the graph stage for a random graph of this size, then exit")
    ap.add_argument("--one", nargs=3, metavar=("ENGINE", "CORES", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    args = ap.parse_args()
    conf = {"spark.driver.memory": args.driver_memory, **dict(kv.split("=", 1) for kv in args.conf)}
    if args.driver_probe:
        print(json.dumps(_driver_probe(*args.driver_probe)))
        return
    if args.one:
        engine, cores, path = args.one
        print("RESULT " + json.dumps(_one(engine, int(cores), path, conf, args.dump)), flush=True)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.path:
        inputs = [(Path(p), None) for p in args.path]
    else:
        inputs = [_data(args.workdir, n) for n in args.events]
    for path, n_real in inputs:
        n_real = n_real or sum(1 for _ in open(path, "rb"))
        runs = [("duckdb", 0)] if "duckdb" in args.engines else []
        runs += [("spark", c) for c in args.cores] if "spark" in args.engines else []
        dumps: dict[tuple[str, int], Path] = {}
        for engine, cores in runs:
            dumps[(engine, cores)] = args.workdir / f"findings_{path.stem}_{engine}_{cores}.json"
            dumps[(engine, cores)].unlink(missing_ok=True)
            cmd = [sys.executable, __file__, "--one", engine, str(cores), str(path), "--driver-memory",
                   args.driver_memory, "--dump", str(dumps[(engine, cores)])]
            cmd += ["--conf", *args.conf] if args.conf else []
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                rows.append({"engine": engine, "cores": cores, "events": n_real, "error": "timeout"})
                print(f"{engine} cores={cores} events={n_real:,}: timed out", flush=True)
                continue
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                log = args.workdir / f"failed_{path.stem}_{engine}_{cores}.stderr.txt"
                log.write_text(out.stderr)  # the whole log: a JVM error's cause is far above its last lines
                rows.append({"engine": engine, "cores": cores, "events": n_real, "error": out.stderr[-2000:],
                             "stderr_file": str(log)})
                print(f"{engine} cores={cores}: failed (whole stderr in {log})\n{out.stderr[-2000:]}", flush=True)
                continue
            row = json.loads(line[0][7:])
            rows.append(row)
            print(f"{engine:6s} cores={row['cores']} events={row['events']:>9,} scan={row['scan_s']:>7.1f}s "
                  f"({row['events_per_s']:>9,.0f} ev/s) cpu={row['cpu_s']}s start={row['startup_s']}s "
                  f"stages={row['stages']} flagged={row['flagged']} campaigns={row['campaigns']} "
                  f"load={row['loadavg_end']}", flush=True)
        for line in _parity(dumps):
            print(line, flush=True)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "loadavg": load}, indent=2))


if __name__ == "__main__":
    main()
