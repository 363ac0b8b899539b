"""Small synthetic world for linking tests: benign hubs, an enterprise org and two attack campaigns.

Populations (account id prefixes):
- ``campus-``: 150 students behind one NAT IP, same hours, unique prompts, one browser UA.
- ``cloud-``: 400 busy accounts inside one cloud ASN on many /24s, a popular SDK user agent.
- ``acme-``: one enterprise org, 12 keys sharing a card, a system prompt, templates and batch timing.
- ``eval-``: 5 benchmark runners from different orgs, each running the same 200 gsm8k items.
- ``benign-``: 400 ordinary users.
- ``hydra-``: 50-account campaign: 5 shared cards, a 20-IP proxy pool, a sign-up burst, the same 10
  templates, load-balanced timing, high extraction scores except 10 weak members.
- ``slow-``: 30-account low-and-slow campaign: nothing shared but paraphrased templates and disjoint
  20-item slices of one gsm8k pool.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
_TS = pa.timestamp("us", tz="UTC")


def _sig(rng, base: int | None = None, flips: int = 0) -> int:
    v = int(rng.integers(0, 2**63)) if base is None else base
    for b in rng.choice(64, size=flips, replace=False) if flips else []:
        v ^= 1 << int(b)
    return v - 2**64 if v >= 2**63 else v


class World:
    def __init__(self, seed: int = 3):
        self.rng = np.random.default_rng(seed)
        self.ev: list[dict] = []
        self.sg: list[dict] = []
        self.truth: dict[str, str] = {}
        self.scores: dict[str, float] = {}
        self.n = 0

    def req(self, acct, ts, *, ip=None, asn=None, ua=None, pay=None, created=None, org=None, tid=None, sig=None,
            sp=None, bench=None, item=None, score=0.0):
        self.n += 1
        eid = f"e{self.n}"
        self.ev.append(dict(event_id=eid, account_id=acct, timestamp=ts, org_id=org, ip=ip, asn=asn, user_agent=ua,
                            payment_fingerprint=pay, account_created_at=created, model="m1"))
        if tid is None:
            tid = f"u{self.n}"
            sig = _sig(self.rng)
        self.sg.append(dict(event_id=eid, account_id=acct, timestamp=ts, template_id=tid, template_sig=sig,
                            system_prompt_id=sp, benchmark=bench, benchmark_item=item, capability="math",
                            extraction_score=score))

    def tables(self) -> tuple[pa.Table, pa.Table]:
        ev = pa.Table.from_pylist(self.ev, schema=pa.schema([
            ("event_id", pa.string()), ("account_id", pa.string()), ("timestamp", _TS), ("org_id", pa.string()),
            ("ip", pa.string()), ("asn", pa.string()), ("user_agent", pa.string()),
            ("payment_fingerprint", pa.string()), ("account_created_at", _TS), ("model", pa.string())]))
        sg = pa.Table.from_pylist(self.sg, schema=pa.schema([
            ("event_id", pa.string()), ("account_id", pa.string()), ("timestamp", _TS), ("template_id", pa.string()),
            ("template_sig", pa.int64()), ("system_prompt_id", pa.string()), ("benchmark", pa.string()),
            ("benchmark_item", pa.string()), ("capability", pa.string()), ("extraction_score", pa.float64())]))
        return ev, sg

    def score_table(self) -> pa.Table:
        ids = sorted(self.scores)
        return pa.table({"account_id": ids, "score": [self.scores[i] for i in ids]})


def make_world(seed: int = 3) -> World:
    w = World(seed)
    rng = w.rng
    hours = 24 * 7

    def rand_ts(day_span=7):
        return T0 + timedelta(seconds=float(rng.uniform(0, day_span * 86400)))

    def created_rand():
        return T0 - timedelta(days=float(rng.uniform(30, 400)))

    def add(acct, group, score):
        w.truth[acct] = group
        w.scores[acct] = score

    # campus: one NAT IP, working hours
    for i in range(150):
        a = f"campus-{i:03d}"
        add(a, "benign", float(rng.uniform(0, 0.15)))
        c = created_rand()
        for _ in range(12):
            ts = T0 + timedelta(days=int(rng.integers(0, 5)), hours=9 + float(rng.uniform(0, 8)))
            w.req(a, ts, ip="192.0.2.10", asn="AS64500", ua="Mozilla/5.0 (campus browser)", pay=f"card-{a}",
                  created=c)
    # cloud ASN, popular SDK
    for i in range(400):
        a = f"cloud-{i:03d}"
        add(a, "benign", float(rng.uniform(0, 0.2)))
        c = created_rand()
        for _ in range(40):  # busy: ~300 customers in the ASN in every 10-minute window of one working day
            ip = f"203.{int(rng.integers(0, 250))}.{int(rng.integers(0, 250))}.{int(rng.integers(1, 250))}"
            ts = T0 + timedelta(hours=9 + float(rng.uniform(0, 8)))
            w.req(a, ts, ip=ip, asn="AS16509", ua="openai-python/1.40.0", pay=f"card-{a}", created=c)
    # enterprise org: keys share everything but are one customer
    sp = "sp-acme"
    for i in range(12):
        a = f"acme-{i:02d}"
        add(a, "benign", float(rng.uniform(0.1, 0.3)))
        for h in range(0, hours, 2):
            for t in range(3):
                w.req(a, T0 + timedelta(hours=h, minutes=5 * t), ip="198.51.100.7", asn="AS64501", ua="acme-batch/2",
                      pay="card-acme", created=T0 - timedelta(days=200), org="org-acme", tid=f"acme-t{t}",
                      sig=_sig(np.random.default_rng(100 + t)), sp=sp)
    # eval runners: same 200 items, full runs
    for i in range(5):
        a = f"eval-{i}"
        add(a, "benign", float(rng.uniform(0.1, 0.3)))
        start = T0 + timedelta(days=i)
        for j in range(200):
            w.req(a, start + timedelta(seconds=20 * j), ip=f"198.18.{i}.5", asn=f"AS6510{i}", ua=f"evalkit/{i}",
                  pay=f"card-{a}", created=created_rand(), org=f"org-eval-{i}", tid="gsm8k-fewshot",
                  sig=_sig(np.random.default_rng(77)), bench="gsm8k", item=f"gsm8k-{j}")
    # ordinary users
    for i in range(400):
        a = f"benign-{i:03d}"
        add(a, "benign", float(rng.uniform(0, 0.3)))
        c = created_rand()
        ip = f"100.{int(rng.integers(64, 127))}.{int(rng.integers(0, 250))}.{int(rng.integers(1, 250))}"
        for _ in range(int(rng.integers(1, 15))):
            w.req(a, rand_ts(), ip=ip, asn=f"AS{int(rng.integers(1000, 1100))}", ua="Mozilla/5.0", pay=f"card-{a}",
                  created=c)
    # hydra campaign
    tpl_sigs = [_sig(np.random.default_rng(500 + t)) for t in range(10)]
    burst = T0 - timedelta(days=3)
    slots = sorted(rng.choice(hours * 60, size=120, replace=False))
    for i in range(50):
        a = f"hydra-{i:02d}"
        add(a, "hydra", 0.1 if i < 10 else float(rng.uniform(0.7, 0.95)))
        c = burst + timedelta(seconds=float(rng.uniform(0, 300)))
        for s in slots:
            if rng.random() < 0.8:
                t = int(rng.integers(0, 10))
                ip = f"45.77.{int(rng.integers(0, 4))}.{int(rng.integers(1, 6))}"
                w.req(a, T0 + timedelta(minutes=int(s), seconds=float(rng.uniform(0, 50))), ip=ip, asn="AS20473",
                      ua="python-requests/2.31", pay=f"hcard-{i % 5}", created=c, tid=f"hydra-t{t}", sig=tpl_sigs[t],
                      score=0.9)
    # low and slow: partitioned gsm8k pool, paraphrased templates
    base_sig = _sig(np.random.default_rng(900))
    for i in range(30):
        a = f"slow-{i:02d}"
        add(a, "slow", float(rng.uniform(0.3, 0.6)))
        c = created_rand()
        ip = f"172.{16 + i}.{int(rng.integers(0, 250))}.9"
        for j in range(20):
            item = 1000 + i * 20 + j
            w.req(a, T0 + timedelta(hours=float(rng.uniform(0, 24)), days=int(rng.integers(0, 2))), ip=ip,
                  asn=f"AS{30000 + i}", ua=f"client-{i}", pay=f"scard-{i}", created=c, tid=f"slow-{i}-{j % 3}",
                  sig=_sig(rng, base_sig, flips=int(rng.integers(0, 3))), bench="gsm8k", item=f"gsm8k-{item}",
                  score=0.4)
    return w


_CACHE: dict = {}


def world_edges():
    """(world, events, signals, edges with the default config), built once per test session."""
    if "w" not in _CACHE:
        import ibis

        from distillguard.linking import build_edges

        w = make_world()
        ev, sg = w.tables()
        con = ibis.duckdb.connect()
        # (ibis 12 + the installed sqlglot fail on create_table(name, pyarrow_table); a memtable works)
        edges = build_edges(con.create_table("events", ibis.memtable(ev)),
                            con.create_table("signals", ibis.memtable(sg)))
        _CACHE["w"] = (w, ev, sg, edges)
    return _CACHE["w"]
