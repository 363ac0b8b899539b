"""Simulator speed and memory: generate a scenario and print events/s (wall and CPU) and peak memory.

    .venv/bin/python bench/bench_sim.py --scenario scale2026 [--scale 1.0] [--out /tmp/sim2026] [--keep]

Events per CPU-second (main process plus render workers) is the figure to compare on a shared machine;
wall events/s depends on how many other jobs are running.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from distillguard.sim import simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="scale2026")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpora", default=None)
    ap.add_argument("--out", default=None, help="output folder (default: a temporary one, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the output folder")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default: simulate's choice)")
    a = ap.parse_args()
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="dg-sim-"))
    def cpu_now() -> float:  # this process and its finished render workers
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    cpu0, wall0 = cpu_now(), time.perf_counter()
    res = simulate(out, scenario=a.scenario, seed=a.seed, corpora=a.corpora, scale=a.scale, workers=a.workers)
    cpu, wall = cpu_now() - cpu0, time.perf_counter() - wall0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kid_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    size_gb = res.events_path.stat().st_size / 1e9
    attack = sum(g["accounts"] for g in res.groups.values() if g["label"] == "attack")
    print(f"scenario={a.scenario} scale={a.scale} events={res.n_events:,} accounts={res.n_accounts:,} "
          f"(attack {attack:,}, benign {res.n_accounts - attack:,})")
    print(f"wall={wall:.1f}s  cpu={cpu:.1f}s  events/s wall={res.n_events / wall:,.0f}  "
          f"events/s per cpu-second={res.n_events / cpu:,.0f}  peak_rss main={rss_mb:,.0f} MiB "
          f"worker={kid_mb:,.0f} MiB  events.jsonl={size_gb:.2f} GB")
    print("phases (wall s): " + "  ".join(f"{k}={v:.1f}" for k, v in res.phases.items()))
    if not a.keep and not a.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
