"""The numpy route of the shared-value kinds (distillguard.linking.shared) gives the engine route's edges."""

from __future__ import annotations

import hashlib
import math

import duckdb
import ibis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from linking_fixtures import world_edges

from distillguard.linking import KindConfig, LinkConfig, build_edges
from distillguard.linking.edges import _account_index, _shared_value_edges
from distillguard.linking.shared import _member_order, md5_halves, member_rows, neighbor_offsets, shared_value_pairs


def _rows(t: pa.Table) -> dict:
    return {(s, d, k): (round(w, 9), c, x) for s, d, k, w, c, x in
            zip(*(t[c].to_pylist() for c in ("src", "dst", "kind", "weight", "count", "detail")))}


@pytest.mark.parametrize("cfg", [
    LinkConfig(),
    LinkConfig(min_edge_weight=0.0),
    LinkConfig(k_neighbors=3),
    LinkConfig(kinds={**LinkConfig().kinds, "ip": KindConfig(base=0.6, saturation=3.0, hub_soft=2, hub_max=40,
                                                                  bucket_s=900, value_cap=0.2)}),
], ids=["default", "no-floor", "k3", "ip-tight"])
def test_both_routes_give_the_same_edges_on_the_world(cfg):
    _, ev, sg, _ = world_edges()
    engine = build_edges(ev, sg, config=cfg, engine_pairs=True)
    numpy_ = build_edges(ev, sg, config=cfg, engine_pairs=False)
    assert numpy_.num_rows > 1000
    assert {"ip", "ip24", "payment", "created_burst", "template"} <= set(numpy_["kind"].to_pylist())
    assert _rows(numpy_) == _rows(engine)
    assert numpy_.select(["src", "dst", "kind"]).equals(engine.select(["src", "dst", "kind"]))


def test_duckdb_tables_take_the_numpy_route_by_default():
    _, ev, sg, edges = world_edges()
    assert _rows(build_edges(ev, sg)) == _rows(build_edges(ev, sg, engine_pairs=False))
    assert _rows(edges) == _rows(build_edges(ev, sg, engine_pairs=True))


def _random_obs(seed: int, n_acc: int = 300, n_rows: int = 4000, n_keys: int = 60, n_orgs: int = 40):
    """Random observations in which an account may hold several values under one key (as created_burst
    does), some accounts share an org, keys are of every size up to hubs."""
    rng = np.random.default_rng(seed)
    acc = [f"a{i:04d}" for i in range(n_acc)]
    org = [f"o{rng.integers(n_orgs)}" if rng.random() < 0.3 else None for _ in range(n_acc)]
    # skewed key popularity: a few large groups, many small ones
    keys = [f"k{int(x)}" for x in rng.zipf(1.6, n_rows) % n_keys]
    rows = {"account_id": [acc[i] for i in rng.integers(0, n_acc, n_rows)], "key": keys,
            "value": [f"v{int(x)}" for x in rng.integers(0, 12, n_rows)]}
    return pa.table(rows), pa.table({"account_id": acc, "org": org})


@pytest.mark.parametrize("seed", range(6))
def test_random_groups_with_mixed_values_match_the_engine(seed):
    obs, acc = _random_obs(seed)
    ents = _account_index(acc)
    accounts = ibis.memtable(ents)
    entity = pc.dictionary_encode(ents["entity"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    kinds = {**LinkConfig().kinds, "payment": KindConfig(base=0.9, saturation=0.8, hub_soft=6, hub_max=60,
                                                         value_cap=0.3 if seed % 2 else 1.0)}
    # seed 5: a floor one value (capped at 0.3) cannot reach alone, so accounts are pruned before pairing
    cfg = LinkConfig(kinds=kinds, min_edge_weight=(0.0, 0.02, 0.3)[seed % 3], k_neighbors=3 + seed)
    o = ibis.memtable(obs)
    engine = _shared_value_edges(o, "payment", cfg, accounts, min_group=2 + seed % 2, unit="x").to_pyarrow()
    data = member_rows(o, accounts).to_pyarrow()
    mine = shared_value_pairs(data, "payment", cfg, entity, 2 + seed % 2, "x")
    assert mine.num_rows > 0
    assert _rows(mine) == _rows(engine.cast(mine.schema))


def test_neighbour_offsets_use_the_engines_power():
    sizes = np.arange(2, 3001)
    k = 8
    got = neighbor_offsets(sizes, k)
    con = duckdb.connect()
    want = con.execute(
        "SELECT CASE WHEN n <= ? THEN (CASE WHEN i + 1 < n THEN i + 1 ELSE 0 END) "
        "ELSE greatest(i + 1, CAST(floor(power(CAST(n AS DOUBLE), CAST(i AS DOUBLE) / ?)) AS BIGINT)) END AS off "
        "FROM range(2, 3001) r(n), range(0, ?) q(i) ORDER BY n, i", [k + 1, k, k]).fetchnumpy()["off"]
    assert np.array_equal(got.reshape(-1), want)
    # the case numpy's vectorised power gets wrong: 27 ** (1/3) is 3 in the C library
    assert neighbor_offsets(np.array([27]), 3)[0, 1] == math.floor(math.pow(27.0, 1 / 3)) == 3


def test_md5_halves_order_as_the_hex_strings():
    xs = [hashlib.md5(str(i).encode()).hexdigest() for i in range(2000)]
    hi, lo = md5_halves(pa.array(xs))
    assert hi.tolist() == [int(x[:16], 16) for x in xs] and lo.tolist() == [int(x[16:], 16) for x in xs]
    assert [xs[i] for i in np.lexsort((lo, hi))] == sorted(xs)
    with pytest.raises(ValueError):
        md5_halves(pa.array(["ABCDEF" * 5 + "00"]))


def test_member_order_falls_back_when_digest_prefixes_tie():
    rng = np.random.default_rng(1)
    n = 500
    key = np.sort(rng.integers(0, 20, n))
    hi = rng.integers(0, 2**63, n).astype(np.uint64)
    hi[10:20] = hi[10]  # ties on the whole high half inside one group, ordered by lo then aidx
    key[10:20] = key[10]
    lo = rng.integers(0, 2**63, n).astype(np.uint64)
    lo[10:15] = lo[10]
    aidx = rng.permutation(n)
    want = np.lexsort((aidx, lo, hi, key))
    assert np.array_equal(_member_order(key, hi, lo, aidx, 20), want)
    fresh = rng.integers(0, 2**63, n).astype(np.uint64)
    assert np.array_equal(_member_order(key, fresh, lo, aidx, 20), np.lexsort((aidx, lo, fresh, key)))


@pytest.mark.parametrize("seed", range(4))
def test_pairs_needing_two_shared_values_match_the_engine(seed, monkeypatch):
    """A floor no single value can reach (value_cap < the sum it needs): rows of pairs that share one value
    only are dropped before pairing (value bit masks; 80 values on 64 bits, so bits collide), exactly."""
    rng = np.random.default_rng(100 + seed)
    n_acc, n_rows = 250, 8000
    acc = [f"a{i:04d}" for i in range(n_acc)]
    # each account draws from three values of a pool of 80 (on 64 bits: some share a bit), in six buckets
    home = rng.integers(0, 80, (n_acc, 3))
    who = rng.integers(0, n_acc, n_rows)
    v = home[who, rng.integers(0, 3, n_rows)]
    b = rng.integers(0, 6, n_rows)
    obs = pa.table({"account_id": [acc[i] for i in who], "key": [f"v{x}@{y}" for x, y in zip(v, b)],
                    "value": [f"v{x}" for x in v], "bucket": b.astype(np.int64)})
    ents = _account_index(pa.table({"account_id": acc, "org": pa.nulls(n_acc, pa.string())}))
    accounts = ibis.memtable(ents)
    entity = pc.dictionary_encode(ents["entity"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    kinds = {**LinkConfig().kinds, "asn": KindConfig(base=0.5, saturation=1.0, hub_soft=3, hub_max=80,
                                                     bucket_s=600, value_cap=0.15 + 0.02 * seed)}
    cfg = LinkConfig(kinds=kinds, min_edge_weight=0.12, k_neighbors=4 + seed)
    from distillguard.linking.edges import _min_hub_sum

    assert _min_hub_sum(cfg.kind("asn"), cfg.min_edge_weight) > cfg.kind("asn").value_cap
    import distillguard.linking.shared as shared

    seen = {"dropped": 0, "clash": 0}
    masks, may = shared._value_masks, shared._may_share_two

    def spy_masks(*a):
        out = masks(*a)
        seen["clash"] += int((out[1] != 0).sum())
        return out

    def spy_may(*a):
        out = may(*a)
        seen["dropped"] += int((~out).sum())
        return out

    monkeypatch.setattr(shared, "_value_masks", spy_masks)
    monkeypatch.setattr(shared, "_may_share_two", spy_may)
    o = ibis.memtable(obs)
    engine = _shared_value_edges(o.drop("bucket"), "asn", cfg, accounts, unit="x").to_pyarrow()
    mine = shared_value_pairs(member_rows(o, accounts, True).to_pyarrow(), "asn", cfg, entity, 2, "x")
    assert mine.num_rows > 20
    assert seen["dropped"] > 0 and seen["clash"] > 0  # the filter ran, dropped rows, and bits collided
    assert _rows(mine) == _rows(engine.cast(mine.schema))


def test_the_route_is_chosen_by_the_tables_backend():
    from distillguard.linking.edges import _default_engine_pairs

    assert _default_engine_pairs(ibis.memtable(pa.table({"a": [1]}))) is False  # DuckDB: numpy pairing

    class Elsewhere:  # no backend Ibis can name: the engine route, which runs anywhere
        pass

    assert _default_engine_pairs(Elsewhere()) is True
