"""Ingest benchmark: read and store N generated canonical events; DuckDB's own read_json is the floor.

    python bench/bench_ingest.py                 # 1,000,000 events in a temp dir
    python bench/bench_ingest.py --events 200000 --workers 0

Prints, for each step, wall seconds, events/s and peak RSS (the process and its worker processes
together, sampled every 20 ms): generate (not timed against anything), duckdb read_json (floor: parse the
same file into an in-memory table; duckdb_read_json_file: the same into a DuckDB file, the fair floor for
ingest), scan-read (read_events only, batches counted: the default reader, the Arrow block parser), ingest
(read_events into a DuckDB file store); scan_read_python / ingest_python: the same through the plain Python
parser (fast=False); scan_read_fast / ingest_fast: through the DuckDB SQL path (fast=True). Each measured
step runs in a fresh subprocess so peaks do not mix.

    python bench/bench_ingest.py --path /tmp/scan1m/events.jsonl --steps duckdb_read_json,scan_read
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STEPS = {
    "duckdb_read_json": """
import duckdb
con = duckdb.connect()
con.execute("SET threads TO {threads}")
con.execute("CREATE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited')", [PATH])
n = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
""",
    "duckdb_read_json_file": """
import duckdb
con = duckdb.connect(DB)
con.execute("SET threads TO {threads}")
con.execute("CREATE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited')", [PATH])
n = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
con.close()
""",
    "scan_read": """
from distillguard.io import read_events
n = 0
for b in read_events(PATH, workers=WORKERS):
    n += b.num_rows
""",
    "scan_read_fast": """
from distillguard.io import read_events
n = 0
for b in read_events(PATH, workers=WORKERS, fast=True):
    n += b.num_rows
""",
    "scan_read_python": """
from distillguard.io import read_events
n = 0
for b in read_events(PATH, workers=WORKERS, fast=False):
    n += b.num_rows
""",
    "ingest_python": """
from distillguard.io import read_events
from distillguard.store import Store
st = Store(DB)
s = st.ingest(read_events(PATH, workers=WORKERS, fast=False))
n = s.inserted
st.close()
""",
    "ingest_fast": """
from distillguard.io import read_events
from distillguard.store import Store
st = Store(DB)
s = st.ingest(read_events(PATH, workers=WORKERS, fast=True))
n = s.inserted
st.close()
""",
    "ingest_memory": """
from distillguard.io import read_events
from distillguard.store import Store
st = Store(":memory:")
n = st.ingest(read_events(PATH, workers=WORKERS)).inserted
""",
    "ingest": """
from distillguard.io import read_events
from distillguard.store import Store
st = Store(DB)
s = st.ingest(read_events(PATH, workers=WORKERS))
n = s.inserted
st.close()
""",
}

_TOPICS = ["Solve for x: {a}x + {b} = {c}. Show every step of your reasoning.",
           "Write a Python function that returns the {a}th Fibonacci number modulo {b}.",
           "Summarise the following meeting notes in {a} bullet points: the team met on day {b} to plan...",
           "You are grading an answer. Score it from 1 to {a} against this rubric: correctness, clarity ({b}).",
           "Translate to French: 'The train leaves at {a}:{b} from platform {c}.'"]


def generate(path: Path, n: int, seed: int = 7) -> None:
    """N canonical events, about 600 bytes each, a few shapes of message lists."""
    import orjson

    rng = random.Random(seed)
    t0 = 1_772_323_200
    with open(path, "wb") as fh:
        buf = []
        for i in range(n):
            a, b, c = rng.randrange(1000), rng.randrange(1000), rng.randrange(1000)
            msgs = [{"role": "system", "content": "You are a helpful assistant."}] if i % 3 else []
            msgs.append({"role": "user", "content": rng.choice(_TOPICS).format(a=a, b=b, c=c)})
            rec = {
                "timestamp": t0 + i * 0.37,
                "account_id": f"acct-{rng.randrange(20000)}",
                "request_id": f"req-{i:09d}",
                "org_id": f"org-{rng.randrange(500)}",
                "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                "asn": 64512 + rng.randrange(100),
                "user_agent": "python-httpx/0.27",
                "model": "model-a" if i % 2 else "model-b",
                "messages": msgs,
                "max_tokens": 1024,
                "response": "The answer is " + str(a + b),
                "input_tokens": 40 + a % 50, "output_tokens": 200 + b, "reasoning_tokens": c,
                "status_code": 200,
            }
            buf.append(orjson.dumps(rec))
            if len(buf) >= 10_000:
                fh.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            fh.write(b"\n".join(buf) + b"\n")


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (from /proc)."""
    kids: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                parts = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(parts[1]), int(parts[21])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
        rss[int(d)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(kids.get(p, []))
    return total


def run_step(name: str, path: Path, db: Path, workers: str, threads: int) -> tuple[float, int, int, float]:
    """(wall seconds, events, peak RSS bytes, CPU seconds of the step's process tree)."""
    code = ("import time\nPATH = {p!r}\nDB = {db!r}\nWORKERS = {w}\nt0 = time.perf_counter()\n".format(
        p=str(path), db=str(db), w=workers if workers != "auto" else "'auto'")
        + STEPS[name].format(threads=threads)
        + "\nprint('RESULT', n, time.perf_counter() - t0)\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    n, secs = out.split()[-2:]
    return float(secs), int(n), peak[0], cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--path", help="measure this canonical JSONL file instead of generating one")
    ap.add_argument("--workers", default="auto", help="read_events workers: auto, 0 (in-process), N")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="DuckDB threads for the floor")
    ap.add_argument("--steps", default="duckdb_read_json,duckdb_read_json_file,scan_read,ingest",
                    help="comma-separated: " + ",".join(STEPS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmp:
        path = Path(args.path) if args.path else Path(tmp) / "events.jsonl"
        t0 = time.perf_counter()
        if not args.path:
            generate(path, args.events)
        size = path.stat().st_size
        print(f"{'read' if args.path else f'generated {args.events:,} events,'} {path}: {size / 1e6:,.0f} MB"
              f"{'' if args.path else f' in {time.perf_counter() - t0:.1f} s'} "
              f"(cpus={os.cpu_count()}, workers={args.workers}, duckdb threads={args.threads}, "
              f"load average at the start {os.getloadavg()[0]:.1f})")
        results = {}
        for step in args.steps.split(","):
            db = Path(tmp) / f"{step}.duckdb"
            secs, n, peak, cpu = run_step(step, path, db, args.workers, args.threads)
            results[step] = (secs, cpu)
            print(f"{step:18s} {n:>10,} events  wall {secs:7.2f} s {n / secs:>10,.0f} events/s  "
                  f"cpu {cpu:7.2f} s  peak RSS {peak / 2**20:7.0f} MiB")
        for floor_name, steps in (("duckdb_read_json", ("scan_read", "scan_read_python", "scan_read_fast",
                                                        "ingest_memory", "ingest")),
                                  ("duckdb_read_json_file", ("ingest", "ingest_python", "ingest_fast"))):
            floor = results.get(floor_name)
            for step in steps:
                if floor and step in results:
                    wall, cpu = results[step]
                    print(f"{step} / {floor_name}: wall {wall / floor[0]:.2f}x, cpu {cpu / floor[1]:.2f}x "
                          "(target <= 3x)")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus "
              "(wall figures are only comparable on an otherwise idle machine)")


if __name__ == "__main__":
    main()
