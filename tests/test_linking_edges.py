"""build_edges on the synthetic world of tests/linking_fixtures.py: hub guards, org guard, every kind."""

from __future__ import annotations

from collections import Counter, defaultdict

import ibis
import numpy as np
import pyarrow as pa
import pytest
from linking_fixtures import make_world, world_edges

from distillguard.linking import EDGE_SCHEMA, KindConfig, LinkConfig, build_edges
from distillguard.linking.edges import template_clusters


@pytest.fixture(scope="module")
def world():
    return world_edges()


def _by_kind(w, edges):
    out = defaultdict(Counter)
    for s, d, k in zip(edges["src"].to_pylist(), edges["dst"].to_pylist(), edges["kind"].to_pylist()):
        out[k][tuple(sorted((w.truth[s], w.truth[d])))] += 1
    return out


def _prefix(edges, kind, prefix):
    return [(s, d) for s, d, k in zip(edges["src"].to_pylist(), edges["dst"].to_pylist(), edges["kind"].to_pylist())
            if k == kind and s.startswith(prefix) and d.startswith(prefix)]


def test_schema_and_pair_order(world):
    _, _, _, edges = world
    assert edges.schema.equals(EDGE_SCHEMA)
    src, dst, kind = edges["src"].to_pylist(), edges["dst"].to_pylist(), edges["kind"].to_pylist()
    assert all(s < d for s, d in zip(src, dst))
    assert len(set(zip(src, dst, kind))) == edges.num_rows
    w = edges["weight"].to_numpy()
    assert (w > 0).all() and (w <= 1).all()
    assert all(d for d in edges["detail"].to_pylist())


def test_org_keys_are_one_customer(world):
    _, _, _, edges = world
    assert not any(s.startswith("acme-") and d.startswith("acme-")
                   for s, d in zip(edges["src"].to_pylist(), edges["dst"].to_pylist()))


def test_cloud_asn_and_popular_sdk_are_hubs(world):
    _, _, _, edges = world
    assert _prefix(edges, "asn", "cloud-") == []
    assert _prefix(edges, "user_agent", "cloud-") == []


def test_campus_nat_links_are_bounded_and_weak(world):
    w, ev, _, edges = world
    # with no weight floor, one UA shared by 150 students links each to <= k others (not 11,175 pairs)
    raw = build_edges(ev, None, config=LinkConfig(min_edge_weight=0.0, sync_base=0.0))
    ua = _prefix(raw, "user_agent", "campus-")
    k = LinkConfig().k_neighbors
    assert 0 < len(ua) <= 150 * k
    deg = Counter(a for pair in ua for a in pair)
    assert max(deg.values()) <= 2 * k
    # and by default those links are too weak to keep; the NAT IP is one shared value, so it stays weak
    assert _prefix(edges, "user_agent", "campus-") == []
    ipw = [wt for s, d, kd, wt in zip(edges["src"].to_pylist(), edges["dst"].to_pylist(), edges["kind"].to_pylist(),
                                      edges["weight"].to_pylist()) if kd == "ip" and s.startswith("campus-")]
    assert max(ipw, default=0.0) < 0.25 * LinkConfig().kind("ip").base


def test_hydra_kinds(world):
    w, _, _, edges = world
    kinds = _by_kind(w, edges)
    for kind in ("payment", "sync", "template", "template_set", "created_burst", "ip"):
        assert kinds[kind][("hydra", "hydra")] > 0, kind
    assert set(kinds["payment"]) == {("hydra", "hydra")}
    assert set(kinds["template_set"]) == {("hydra", "hydra")}
    assert set(kinds["sync"]) == {("hydra", "hydra")}
    assert set(kinds["created_burst"]) == {("hydra", "hydra")}
    # payment edges never cross cards (hydra-i uses card i % 5)
    for s, d in _prefix(edges, "payment", "hydra-"):
        assert int(s[-2:]) % 5 == int(d[-2:]) % 5


def test_partition_and_paraphrased_templates(world):
    w, _, sg, edges = world
    kinds = _by_kind(w, edges)
    assert set(kinds["partition"]) == {("slow", "slow")}
    part = _prefix(edges, "partition", "slow-")
    assert len({a for p in part for a in p}) == 30
    assert all("0 shared" in d for d, k in zip(edges["detail"].to_pylist(), edges["kind"].to_pylist())
               if k == "partition")
    # each slow account has its own template ids; their SimHashes (<= 2 bits apart) share one cluster
    clusters = template_clusters(ibis.memtable(sg), LinkConfig()).to_pyarrow()
    by_sig = dict(zip(clusters["template_sig"].to_pylist(), clusters["cluster"].to_pylist()))
    slow = {by_sig[s] for a, s in zip(sg["account_id"].to_pylist(), sg["template_sig"].to_pylist())
            if a.startswith("slow-")}
    assert len(slow) == 1
    hydra = {by_sig[s] for a, s in zip(sg["account_id"].to_pylist(), sg["template_sig"].to_pylist())
             if a.startswith("hydra-")}
    assert len(hydra) == 10


def test_eval_runners_are_not_partitions(world):
    _, _, _, edges = world
    assert not any(k == "partition" and (s.startswith("eval-") or d.startswith("eval-"))
                   for s, d, k in zip(edges["src"].to_pylist(), edges["dst"].to_pylist(), edges["kind"].to_pylist()))


def test_deterministic_and_accepts_arrow(world):
    _, ev, sg, edges = world
    again = build_edges(ev, sg)
    assert again.equals(edges)


def test_hub_max_drops_shared_value():
    w = make_world()
    ev, _ = w.tables()
    kinds = dict(LinkConfig().kinds)
    kinds["user_agent"] = KindConfig(base=0.3, hub_soft=5, hub_max=100)
    edges = build_edges(ev, None, config=LinkConfig(kinds=kinds, min_edge_weight=0.0))
    assert _prefix(edges, "user_agent", "campus-") == []
    assert _prefix(edges, "user_agent", "hydra-")  # 50 accounts stay under the cap
    assert "template" not in set(edges["kind"].to_pylist())  # no signals, no text kinds


def test_missing_column_is_named():
    ev = pa.table({"account_id": ["a"], "timestamp": pa.array([0], pa.timestamp("us", tz="UTC"))})
    with pytest.raises(ValueError, match="org_id"):
        build_edges(ev, None)
    with pytest.raises(TypeError):
        build_edges([1, 2], None)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown setting"):
        LinkConfig.from_dict({"k_neigbors": 3})
    with pytest.raises(ValueError, match="payment.base"):
        LinkConfig.from_dict({"kinds": {"payment": {"base": 2.0}}})
    with pytest.raises(ValueError, match="unknown kind"):
        LinkConfig.from_dict({"kinds": {"phone": {}}})
    cfg = LinkConfig.from_dict({"k_neighbors": 4, "kinds": {"ip": {"hub_max": 50}}})
    assert cfg.k_neighbors == 4 and cfg.kind("ip").hub_max == 50 and cfg.kind("ip").bucket_s == 3600
    assert LinkConfig.from_dict(cfg.to_dict()) == cfg


def test_weights_fall_with_group_size():
    """The same shared card on a pair and on a 200-account group: the pair edge weighs more."""
    ts = pa.array([1_770_000_000_000_000] * 202, pa.timestamp("us", tz="UTC"))
    accts = ["p0", "p1"] + [f"g{i:03d}" for i in range(200)]
    pay = ["pair-card"] * 2 + ["group-card"] * 200
    ev = pa.table({"account_id": accts, "timestamp": ts, "org_id": pa.nulls(202, pa.string()),
                   "ip": pa.nulls(202, pa.string()), "asn": pa.nulls(202, pa.string()),
                   "user_agent": pa.nulls(202, pa.string()), "payment_fingerprint": pay,
                   "account_created_at": pa.nulls(202, pa.timestamp("us", tz="UTC"))})
    edges = build_edges(ev, None, config=LinkConfig(sync_base=0.0, min_edge_weight=0.0,
                                                    kinds={"payment": KindConfig(base=0.9, hub_soft=5)}))
    w = dict(zip(zip(edges["src"].to_pylist(), edges["dst"].to_pylist()), edges["weight"].to_pylist()))
    group = [v for (s, _), v in w.items() if s.startswith("g")]
    assert w[("p0", "p1")] > max(group)
    assert len(group) <= 200 * LinkConfig().k_neighbors
    assert np.allclose(group, group[0])


def test_edge_order_packed_and_lexsort_agree_with_arrow():
    import numpy as np
    import pyarrow as pa

    from distillguard.linking.edges import _edge_order

    rng = np.random.default_rng(5)
    n, m = 50, 4000
    kr, src, dst = rng.integers(0, 7, m), rng.integers(0, n, m), rng.integers(0, n, m)
    want = pa.table({"k": kr, "s": src, "d": dst}).sort_by([("k", "ascending"), ("s", "ascending"),
                                                             ("d", "ascending")])
    for packed in (True, False, None):
        order = _edge_order(kr, src, dst, n, 7, packed)
        got = pa.table({"k": kr[order], "s": src[order], "d": dst[order]})
        assert got.equals(want)
