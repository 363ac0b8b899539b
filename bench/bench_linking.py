"""Benchmark campaign linking on a simulator scenario: recovery, benign sweep, time and memory.

    .venv/bin/python bench/bench_linking.py --scenario standard
    .venv/bin/python bench/bench_linking.py --scenario scale2026 --workdir /tmp/dg_scale   # long

Steps: simulate (once; reused from --workdir), read events in batches and compute signals per batch,
keeping only the columns linking reads (Parquet in --workdir), then time ``build_edges`` (DuckDB over
those Parquet files through Ibis) and ``find_campaigns``. Own account scores are a stand-in: the
account's mean request extraction_score (the detect stage's real scores are not used here).

Metrics (per true campaign): ``recovered`` = share of its accounts that sit in a found campaign whose
members are >= 80% that true campaign. ``benign_swept`` = benign accounts placed in any campaign, and
in campaigns scoring >= --flag.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EVENT_COLS = ["event_id", "account_id", "timestamp", "org_id", "ip", "asn", "user_agent", "payment_fingerprint",
              "account_created_at"]
SIGNAL_COLS = ["event_id", "account_id", "timestamp", "template_id", "template_sig", "system_prompt_id", "benchmark",
               "benchmark_item", "extraction_score"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fast_signals(tb: pa.Table) -> pa.Table:
    """Stand-in for compute_signals at scale (timing runs only): template = hash of the prompt with digit
    runs masked (no SimHash paraphrase robustness), system prompt = hash of the system text, no benchmark
    match, extraction_score 0."""
    import duckdb

    con = duckdb.connect()
    con.register("b", tb.select(["event_id", "account_id", "timestamp", "user_text", "system_text"]))
    masked = "regexp_replace(user_text, '[0-9]+', '#', 'g')"
    return con.sql(
        f"select event_id, account_id, timestamp, 't' || cast(hash({masked}) as varchar) as template_id, "
        f"cast(hash({masked}) % 9223372036854775807 as bigint) as template_sig, "
        "case when system_text is null then null else cast(hash(system_text) as varchar) end as system_prompt_id, "
        "cast(null as varchar) as benchmark, cast(null as varchar) as benchmark_item, "
        "0.0::double as extraction_score from b").to_arrow_table()


def prepare(workdir: Path, scenario: str, seed: int, scale: float, corpora: str | None,
            fast: bool = False) -> dict:
    from distillguard.io import read_events
    from distillguard.signals import compute_signals
    from distillguard.sim import simulate

    workdir.mkdir(parents=True, exist_ok=True)
    ev_path, sg_path = workdir / "link_events.parquet", workdir / "link_signals.parquet"
    times = {}
    if ev_path.exists() and sg_path.exists() and (workdir / "labels.csv").exists():
        return {"reused": True}
    t = time.perf_counter()
    if not (workdir / "events.jsonl").exists():
        simulate(workdir, scenario=scenario, seed=seed, scale=scale, corpora=corpora)
    times["simulate_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    ev_w = sg_w = None
    n = 0
    for batch in read_events(str(workdir / "events.jsonl")):
        tb = pa.Table.from_batches([batch])
        sg = _fast_signals(tb) if fast else compute_signals(tb)
        ev_part = tb.select(EVENT_COLS)
        sg_part = sg.select(SIGNAL_COLS)
        if ev_w is None:
            ev_w = pq.ParquetWriter(ev_path, ev_part.schema)
            sg_w = pq.ParquetWriter(sg_path, sg_part.schema)
        ev_w.write_table(ev_part)
        sg_w.write_table(sg_part)
        n += tb.num_rows
        print(f"  signals: {n:,} events", file=sys.stderr, end="\r")
    ev_w.close()
    sg_w.close()
    times["read_and_signals_s"] = round(time.perf_counter() - t, 1)
    times["events"] = n
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="standard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--corpora", default="auto", help="corpora folder for the simulator; 'auto' finds "
                    "../shared/data/corpora; 'none' uses the built-in prompt generator")
    ap.add_argument("--flag", type=float, default=0.5, help="campaign score counted as flagged")
    ap.add_argument("--out", default=None, help="write the summary JSON here too")
    ap.add_argument("--fast-signals", action="store_true", help="hash-based stand-in for compute_signals "
                    "(for timing linking at scale; no paraphrase clusters, benchmarks or extraction scores)")
    args = ap.parse_args(argv)
    from distillguard.corpora import find_corpora_dir

    corpora = None if args.corpora == "none" else find_corpora_dir(None if args.corpora == "auto" else args.corpora)
    tag = ("c" if corpora else "g") + ("f" if args.fast_signals else "")
    workdir = Path(args.workdir or f"/tmp/dg_link_{args.scenario}_s{args.seed}_x{args.scale:g}_{tag}")
    prep = prepare(workdir, args.scenario, args.seed, args.scale, str(corpora) if corpora else None,
                   fast=args.fast_signals)
    prep["corpora"] = str(corpora) if corpora else None

    import ibis

    from distillguard.linking import build_edges, find_campaigns

    con = ibis.duckdb.connect()
    events = con.read_parquet(str(workdir / "link_events.parquet"))
    signals = con.read_parquet(str(workdir / "link_signals.parquet"))
    n_events = events.count().execute()

    rss0 = _rss_mb()
    t = time.perf_counter()
    edges = build_edges(events, signals)
    t_edges = time.perf_counter() - t
    sc = signals.group_by("account_id").aggregate(score=signals.extraction_score.mean()).to_pyarrow()
    t = time.perf_counter()
    res = find_campaigns(edges, sc)
    t_camp = time.perf_counter() - t

    truth = {}
    with open(workdir / "labels.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            truth[row["account_id"]] = row["group"] if row["label"] != "benign" else "benign"
    attack_groups = Counter(g for g in truth.values() if g != "benign")

    recs = res.campaign_records()
    recovered = Counter()
    swept_any = swept_flag = 0
    found = []
    for rec in recs:
        g = Counter(truth.get(a, "?") for a in rec["accounts"])
        top, n = g.most_common(1)[0]
        pure = n / rec["n_accounts"] >= 0.8
        if pure and top in attack_groups:
            recovered[top] += n
        swept_any += g.get("benign", 0)
        if rec["score"] >= args.flag:
            swept_flag += g.get("benign", 0)
        found.append({"id": rec["campaign_id"], "n": rec["n_accounts"], "score": rec["score"],
                      "top": top, "purity": round(n / rec["n_accounts"], 3),
                      "kinds": [e["kind"] for e in rec["edges"][:4]]})
    kinds = defaultdict(Counter)
    for s, d, k in zip(edges["src"].to_pylist(), edges["dst"].to_pylist(), edges["kind"].to_pylist()):
        a, b = truth.get(s, "?") != "benign", truth.get(d, "?") != "benign"
        kinds[k]["attack-attack" if a and b else "benign-benign" if not (a or b) else "mixed"] += 1
    summary = {
        "scenario": args.scenario, "seed": args.seed, "scale": args.scale, "events": n_events,
        "accounts": len(truth), "attack_accounts": sum(attack_groups.values()), "prepare": prep,
        "build_edges_s": round(t_edges, 1), "find_campaigns_s": round(t_camp, 1),
        "peak_rss_mb": round(_rss_mb(), 0), "rss_before_linking_mb": round(rss0, 0),
        "edges": edges.num_rows, "edges_by_kind": {k: dict(v) for k, v in sorted(kinds.items())},
        "campaigns": len(recs),
        "recovery": {g: round(recovered[g] / n, 3) for g, n in sorted(attack_groups.items())},
        "recovery_overall": round(sum(recovered.values()) / max(1, sum(attack_groups.values())), 3),
        "benign_accounts": sum(1 for g in truth.values() if g == "benign"),
        "benign_swept_any": swept_any, f"benign_swept_score_ge_{args.flag:g}": swept_flag,
        "largest_campaigns": sorted(found, key=lambda f: -f["n"])[:15],
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
