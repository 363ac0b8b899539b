"""Benchmark the intel part: STIX export/validation/import, peer-intel matching, canary insertion and
attribution power against dilution.

    .venv/bin/python bench/bench_intel.py                 # defaults: 50 campaigns, 200k events, 1000 accounts
    .venv/bin/python bench/bench_intel.py --campaigns 200 --events 1000000

Attribution texts: MATH solutions (corpus math_test_5000, read in place through distillguard.corpora) when
the corpora are present, else synthetic reasoning text. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import gzip
import random
import resource
import time

import numpy as np
import orjson
import pyarrow as pa


def _campaigns(n: int, rng: random.Random) -> dict:
    out = []
    for c in range(n):
        ips = [f"198.{c % 200}.{i}.{rng.randrange(1, 255)}" for i in range(20)]
        out.append({"campaign_id": f"C{c:04d}", "score": 0.9, "flagged": True, "n_accounts": 50, "requests": 10_000,
                    "first_seen": "2026-03-01T00:00:00Z", "last_seen": "2026-03-09T00:00:00Z",
                    "capabilities": {"math": 0.7}, "atlas": [{"id": "AML.T0008.005"}],
                    "indicators": {"ips": ips, "cidrs": sorted({ip.rsplit(".", 1)[0] + ".0/24" for ip in ips}),
                                   "asns": [64500 + c], "user_agents": [f"client/{c}"],
                                   "payment_fingerprints": [f"card-{c}-{i}" for i in range(5)],
                                   "template_ids": [f"tpl-{c}-{i}" for i in range(20)],
                                   "template_sigs": [rng.getrandbits(63) for _ in range(20)],
                                   "system_prompt_ids": [f"sp-{c}"]}})
    return {"generated_at": "2026-03-10T00:00:00Z", "campaigns": out}


def _texts(n: int) -> tuple[list[str], str]:
    from distillguard.corpora import find_corpora_dir

    try:
        d = find_corpora_dir()
        path = d / "math_test_5000.jsonl.gz"
        with gzip.open(path) as fh:
            sols = [orjson.loads(line)["solution"] for line in fh]
        random.Random(0).shuffle(sols)
        return sols[:n], "MATH solutions (math_test_5000)"
    except Exception:
        import sys

        sys.path.insert(0, "tests")
        from test_intel_canary import reasoning_texts

        return reasoning_texts(n, seed=0), "synthetic reasoning text"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--campaigns", type=int, default=50)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--texts", type=int, default=600)
    args = ap.parse_args()
    from distillguard.intel.canary import PhrasingCanary, attribute, hypotheses_for_accounts, slot_counts
    from distillguard.intel.peer import PeerIntel
    from distillguard.intel.stix import export_bundle, validate_bundle

    key = "bench-sharing-key-0123456789"
    rng = random.Random(1)
    doc = _campaigns(args.campaigns, rng)
    t = time.perf_counter()
    b = export_bundle(doc, producer="Bench", sharing_key=key)
    t_exp = time.perf_counter() - t
    size = len(orjson.dumps(b))
    validate_bundle({"type": "bundle", "id": b["id"], "objects": b["objects"][:3]})  # load the schemas once
    t = time.perf_counter()
    problems = validate_bundle(b)
    t_val = time.perf_counter() - t
    t = time.perf_counter()
    peer = PeerIntel.load(b, key)
    t_load = time.perf_counter() - t
    print(f"export: {args.campaigns} campaigns -> {len(b['objects'])} objects, {size / 1e6:.2f} MB in {t_exp:.2f} s")
    print(f"validate: {t_val:.2f} s ({len(problems)} problems); import+verify+index: {t_load:.2f} s, "
          f"{len(peer)} indicators")

    n = args.events
    hit_ips = [ip for c in doc["campaigns"][:3] for ip in c["indicators"]["ips"][:2]]
    ips = [hit_ips[i % len(hit_ips)] if i % 100 == 0 else f"10.{i % 250}.{(i // 250) % 250}.{i % 7}" for i in range(n)]
    ev = pa.table({"account_id": [f"acct-{i % args.accounts}" for i in range(n)], "ip": ips,
                   "user_agent": [f"ua/{i % 50}" for i in range(n)], "asn": [str(i % 900) for i in range(n)],
                   "payment_fingerprint": [f"card-x-{i % 3000}" for i in range(n)]})
    sg = pa.table({"account_id": ev.column("account_id"), "template_id": [f"tpl-z-{i % 5000}" for i in range(n)],
                   "system_prompt_id": [None] * n,
                   "template_sig": pa.array([rng.getrandbits(63) for _ in range(5000)] * (n // 5000 + 1))[:n]})
    t = time.perf_counter()
    m = peer.match_events(ev, sg)
    t_m = time.perf_counter() - t
    print(f"match_events: {n:,} events in {t_m:.2f} s ({n / t_m:,.0f} events/s), {m.num_rows} matches "
          f"(expected 1% of events on campaign IPs)")
    t = time.perf_counter()
    reps = min(20_000, n)
    for i in range(reps):
        peer.match_request(ip=ips[i], user_agent="ua/1", template_id=f"tpl-z-{i}")
    print(f"match_request: {(time.perf_counter() - t) / reps * 1e6:.1f} us per request (ip, ua, template)")

    texts, what = _texts(args.texts)
    can = PhrasingCanary("bench-canary-secret")
    now = 1.78e9
    t = time.perf_counter()
    marked = [can.insert("acct-7", x, now) for x in texts]
    dt = time.perf_counter() - t
    chars = sum(map(len, texts))
    print(f"canary insert: {len(texts)} texts ({what}), {chars / dt / 1e6:.2f} M chars/s, "
          f"{np.mean([a != b for a, b in zip(marked, texts)]):.0%} of texts changed")
    accts = [f"acct-{i}" for i in range(500)]
    hyps = hypotheses_for_accounts(accts, now - 14 * 86400, now)
    half = len(texts) // 2
    for frac in (1.0, 0.75, 0.5, 0.4, 0.3, 0.2):
        k = int(half * frac)
        corpus = marked[:k] + texts[half:half + half - k]
        t = time.perf_counter()
        rep = attribute(np.asarray(slot_counts(corpus)), hyps, "bench-canary-secret")
        dt = time.perf_counter() - t
        top = rep.results[0]
        mine = next(r for r in rep.results if r.account_id == "acct-7" and r.bucket == can.bucket_of(now))
        print(f"attribution: {frac:.0%} of {half} texts canaried, {len(hyps)} hypotheses: top {top.account_id} "
              f"(p_adj {top.p_adjusted:.1e}); acct-7 p_adj {mine.p_adjusted:.1e}, "
              f"{'found' if mine.significant and top is mine else 'not found'}; {dt:.2f} s")
    clean = attribute(texts[:half], hyps, "bench-canary-secret")
    ps = np.array([r.p_value for r in clean.results])
    print(f"clean text: {len(clean.significant())} significant of {len(hyps)}; share p<=0.05: {(ps <= 0.05).mean():.3f}, "
          f"p<=0.01: {(ps <= 0.01).mean():.3f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
