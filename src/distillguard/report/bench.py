"""Report rendering speed and size at scale: ``python -m distillguard.report.bench [--events N]``.

Builds synthetic findings (vectorised, no corpora needed) with N events and signals, renders the report
and prints seconds, peak memory and file size.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa


def synth(n_events: int, n_accounts: int, n_campaigns: int, members: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"acct-{i:07d}" for i in range(n_accounts)], dtype=object)
    camp_of = np.full(n_accounts, -1)
    camp_of[: n_campaigns * members] = np.repeat(np.arange(n_campaigns), members)
    scores = np.where(camp_of >= 0, rng.uniform(0.5, 1.0, n_accounts), rng.uniform(0, 0.5, n_accounts))
    cids = np.array([f"C{c:04d}" if c >= 0 else None for c in camp_of], dtype=object)
    accounts = pa.table({"account_id": ids, "score": scores, "flagged": scores >= 0.62,
                         "campaign_id": cids, "reasons": np.where(scores >= 0.62, "extraction_share>=0.2", "")})
    campaigns = [{"campaign_id": f"C{c:04d}", "score": 0.9, "flagged": c % 4 != 3,
                  "accounts": ids[c * members:(c + 1) * members].tolist(),
                  "capabilities": {"math": 0.6, "code": 0.3, "reasoning": 0.1},
                  "evidence": [{"signal": "extraction_share", "value": 0.8, "threshold": 0.2}],
                  "atlas": [{"id": "AML.T0024.002", "name": "Extract AI Model"}]} for c in range(n_campaigns)]
    acct = rng.integers(0, n_accounts, n_events)
    ts = (1_772_323_200 + rng.uniform(0, 7 * 86400, n_events)) * 1e6
    tpl = np.array([f"Solve problem {k} step by step and show all hidden reasoning." for k in range(50)], dtype=object)
    events = pa.table({
        "event_id": pa.array(np.char.add("e", np.arange(n_events).astype(str))),
        "account_id": pa.array(ids[acct]),
        "timestamp": pa.array(ts.astype("int64"), pa.timestamp("us", tz="UTC")),
        "reasoning_tokens": rng.integers(0, 5000, n_events),
        "output_tokens": rng.integers(100, 8000, n_events),
        "user_text": pa.array(tpl[rng.integers(0, len(tpl), n_events)]),
        "ip": pa.array(np.char.add("10.0.0.", rng.integers(0, 250, n_events).astype(str))),
        "user_agent": pa.array(np.where(acct % 2 == 0, "python-httpx/0.27", "okhttp/4.12")),
        "payment_fingerprint": pa.array(np.char.add("pf", (acct // 40).astype(str))),
    })
    signals = pa.table({
        "event_id": events.column("event_id"), "account_id": events.column("account_id"),
        "timestamp": events.column("timestamp"), "extraction_score": rng.uniform(0, 1, n_events),
        "capability": pa.array(np.array(["math", "code", "reasoning", "chat"], dtype=object)[rng.integers(0, 4, n_events)]),
        "template_id": pa.array(np.char.add("t", rng.integers(0, 50, n_events).astype(str))),
    })
    return accounts, {"campaigns": campaigns}, events, signals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=50_000)
    ap.add_argument("--campaigns", type=int, default=12)
    ap.add_argument("--members", type=int, default=400)
    args = ap.parse_args()
    from distillguard.report import render_report

    t0 = time.perf_counter()
    accounts, doc, events, signals = synth(args.events, args.accounts, args.campaigns, args.members)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = render_report(accounts, doc, events=events, signals=signals, out_path=Path(tmp) / "report.html")
        t2 = time.perf_counter()
        size = out.stat().st_size
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"events={args.events:,} accounts={args.accounts:,} campaigns={args.campaigns} members={args.members}")
    print(f"synthesis {t1 - t0:.1f} s | render {t2 - t1:.1f} s | report {size / 1e6:.2f} MB | peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
