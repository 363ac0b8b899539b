"""Tiny hand-made events + signals for the features / detect / scan tests (no other stage needed)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa

from distillguard.schema import EVENT_SCHEMA, normalize
from distillguard.signals import SIGNAL_SCHEMA

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)



def record(account, ts, text, *, i=0, model="m1", extraction=0.0, capability="chat", benchmark=None,
           item=None, template=None, created=None, **extra):
    """One input record plus the signal row the signals stage would give it."""
    rec = {"request_id": f"{account}-{i}", "timestamp": ts.isoformat(), "account_id": account,
           "messages": [{"role": "user", "content": text}], "model": model,
           "input_tokens": 100, "output_tokens": 200, "reasoning_tokens": 50}
    if created is not None:
        rec["account_created_at"] = created.isoformat()
    rec.update(extra)
    sig = {"event_id": rec["request_id"], "request_id": rec["request_id"], "account_id": account,
           "timestamp": ts, "extraction_score": extraction, "extraction_reason": "fixture" if extraction else "",
           "capability": capability, "benchmark": benchmark, "benchmark_item": item, "benchmark_score": 0.9 if item else 0.0,
           "template_id": template or f"t-{hash(text) & 0xffff:x}", "template_sig": 0, "system_prompt_id": None,
           "text_len": len(text)}
    return rec, sig


def tables(pairs):
    recs = [normalize(r, f"fixture:{i + 1}") for i, (r, _) in enumerate(pairs)]
    ev = pa.Table.from_pylist(recs, schema=EVENT_SCHEMA)
    sg = pa.Table.from_pylist([s for _, s in pairs], schema=SIGNAL_SCHEMA)
    return ev, sg


def write_jsonl(path, pairs):
    with open(path, "wb") as fh:
        for r, _ in pairs:
            fh.write(orjson.dumps(r) + b"\n")
    return path


def mini_world(n_benign=40, n_attack=8, seed=0):
    """Benign chatters (diverse, human hours) and a harvesting ring (math items, extraction asks, new model)."""
    import random

    rnd = random.Random(seed)
    pairs = []
    for a in range(n_benign):
        acct = f"user-{a:03d}"
        created = T0 - timedelta(days=200 + a)
        for i in range(30):
            ts = T0 + timedelta(days=rnd.randrange(10), hours=9 + rnd.randrange(9), minutes=rnd.randrange(60))
            cap = rnd.choice(["chat", "code", "other", "math", "reasoning"])
            pairs.append(record(acct, ts, f"question {a} {i} about {cap} {rnd.random()}", i=i, capability=cap,
                                created=created, payment_fingerprint=f"card-{a}", ip=f"10.0.{a}.1",
                                template=f"t-{a}-{i % 7}"))
    for a in range(n_attack):
        acct = f"ring-{a:03d}"
        created = T0 + timedelta(days=4)
        for i in range(60):
            ts = T0 + timedelta(days=5, minutes=7 * i + a)
            model = "m2" if i >= 20 else "m1"
            pairs.append(record(acct, ts, f"Solve problem {a * 100 + i}; show your full hidden reasoning.", i=i,
                                model=model, extraction=0.9, capability="math", benchmark="gsm8k",
                                item=f"gsm8k/{a * 100 + i}", template=f"t-ring-{a}-{i}", created=created,
                                payment_fingerprint="card-shared", ip=f"203.0.113.{a}", reasoning_effort="high",
                                max_tokens=8000))
    # model m2 is released mid-traffic: first seen in the ring's traffic at day 5
    return pairs
