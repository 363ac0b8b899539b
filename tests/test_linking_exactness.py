"""The fast paths of linking give the plain definition's results: the weight floor and the per-account
pruning inside the query, engine-independent tie-breaks, IP prefixes, and order-independent campaigns."""

from __future__ import annotations

import random

import duckdb
import ibis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from linking_fixtures import world_edges

from distillguard.linking import LinkConfig, build_edges, find_campaigns
from distillguard.linking.edges import _IPV4_24, _IPV6_48, _ip_prefixes, _min_hub_sum, template_clusters


def _rows(t: pa.Table) -> dict:
    return {(s, d, k): (round(w, 9), c, x) for s, d, k, w, c, x in
            zip(*(t[c].to_pylist() for c in ("src", "dst", "kind", "weight", "count", "detail")))}


def test_weight_floor_and_pruning_keep_exactly_the_edges_above_the_floor():
    """No floor (so nothing is pruned) and filtering afterwards gives the default build, edge for edge."""
    _, ev, sg, edges = world_edges()
    floor = LinkConfig().min_edge_weight
    raw = build_edges(ev, sg, config=LinkConfig(min_edge_weight=0.0))
    kept = raw.filter(pc.greater_equal(raw["weight"], floor))
    assert raw.num_rows > kept.num_rows  # the floor does drop edges here
    assert _rows(kept) == _rows(edges)
    # the asn kind is the one pruned per account by default: one shared ASN cannot reach the floor
    kc = LinkConfig().kind("asn")
    assert _min_hub_sum(kc, floor) > kc.value_cap
    assert "asn" in set(raw["kind"].to_pylist())


def test_min_hub_sum_bounds():
    kc = LinkConfig().kind("ip")
    need = _min_hub_sum(kc, 0.05)
    w = lambda h: kc.base * (1 - np.exp(-h / kc.saturation))  # noqa: E731
    assert w(need) < 0.05 + 1e-9 and w(need * 1.001) > 0.05
    assert _min_hub_sum(kc, 0.0) == 0.0
    assert _min_hub_sum(kc, kc.base) == float("inf")


def test_ip_prefixes_match_the_sql_regexes():
    ips = ["1.2.3.4", "10.0.0.256", "2001:db8:1:2::1", "fe80::1", "bad", "", "1.2.3.4.5", "001.02.3.44"]
    got = dict(zip(*(_ip_prefixes(pa.table({"ip": ips})).column(c).to_pylist() for c in ("ip", "prefix"))))
    con = duckdb.connect()
    for ip in ips:
        v4, v6 = con.execute("select regexp_extract(?, ?, 1), regexp_extract(?, ?, 1)",
                             [ip, _IPV4_24, ip, _IPV6_48]).fetchone()
        want = v4 + ".0/24" if v4 else (v6 + "::/48" if v6 else None)
        assert got.get(ip) == want, ip


def test_template_mode_ties_go_to_the_smallest_id():
    sig = pa.table({"template_sig": pa.array([5, 5, 5, 5, -1], pa.int64()),  # -1: all 64 bits set, far from 5
                    "template_id": ["tb", "ta", "tb", "ta", None]})
    out = template_clusters(ibis.memtable(sig), LinkConfig()).to_pyarrow()
    tid = dict(zip(out["template_sig"].to_pylist(), out["cluster_tid"].to_pylist()))
    assert tid[5] == "ta"  # 2 uses each: the smaller id, on every run and engine
    assert -1 in tid and tid[-1] is None  # no id seen: none, as before


def test_campaigns_do_not_depend_on_edge_order():
    w, _, _, edges = world_edges()
    scores = w.score_table()
    base = find_campaigns(edges, scores)
    order = list(range(edges.num_rows))
    random.Random(5).shuffle(order)
    shuffled = find_campaigns(edges.take(pa.array(order)), scores)
    assert base.campaign_records() == shuffled.campaign_records()
    assert base.account_scores.equals(shuffled.account_scores)
    assert base.membership.sort_by("account_id").equals(shuffled.membership.sort_by("account_id"))
    assert base.campaigns.num_rows >= 2
