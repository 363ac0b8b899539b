"""Typed, weighted account-to-account edges from events and per-request signals.

Relational work (grouping shared values, ranking group members, joining partners, overlap counts) is
written as Ibis expressions so it runs on DuckDB here and on PySpark at scale; the MinHash/SimHash
sketches in :mod:`distillguard.linking.sketch` work on numpy arrays pulled from small Ibis results.
Every guard against benign hubs is described in docs/linking.md.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard._alloc import release_heap

from .config import SHARED_VALUE_KINDS, LinkConfig
from .shared import member_rows, shared_value_pairs
from .sketch import lsh_pairs, minhash_signatures, simhash_leaders, stable_hash64

__all__ = ["EDGE_SCHEMA", "build_edges", "template_clusters"]

EDGE_SCHEMA = pa.schema(
    [
        pa.field("src", pa.string(), nullable=False),
        pa.field("dst", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("weight", pa.float64(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)

_EVENT_NEEDS = ("account_id", "timestamp", "org_id", "ip", "asn", "user_agent", "payment_fingerprint",
                "account_created_at")
_SIGNAL_NEEDS = ("account_id", "timestamp", "template_id", "template_sig", "system_prompt_id", "benchmark",
                 "benchmark_item")
_IPV4_24 = r"^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$"
_IPV6_48 = r"^([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}):"


def _need(table: ir.Table, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"build_edges: {what} table lacks column(s) {missing}; see docs/architecture.md")


def _as_table(x, name: str) -> ir.Table:
    if isinstance(x, ir.Table):
        return x
    if isinstance(x, pa.Table):
        return ibis.memtable(x)
    raise TypeError(f"build_edges: {name} must be an Ibis table or a pyarrow.Table, got {type(x).__name__}")


def _short(col: ir.StringValue, n: int = 48) -> ir.StringValue:
    return col.substr(0, n)


def _bucket(ts: ir.TimestampValue, seconds: int) -> ir.IntegerValue:
    return (ts.epoch_seconds() // seconds).cast("int64")


def _empty() -> pa.Table:
    return EDGE_SCHEMA.empty_table()


def _portable_hash(label: ir.StringValue) -> ir.StringValue:
    """MD5 hex digest of ``label``: the same on every engine (Ibis ``.hash()`` is engine-specific, so DuckDB
    and Spark would order group members differently and pick different partners and arg-max rows)."""
    return label.hexdigest("md5")


def _tiebreak(score: ir.FloatingValue, label: ir.StringValue) -> ir.StringValue:
    """An arg-max key: ``score`` rounded to 6 decimals (as a zero-padded integer string, scores are >= 0),
    ties broken by the MD5 of ``label``, so every run and every engine picks the same row."""
    micro = (score * 1e6).round().cast("int64").cast("string").lpad(20, "0")
    return micro + _portable_hash(label)


def _pair_cols(a: ir.StringValue, b: ir.StringValue) -> dict:
    return {"src": ibis.least(a, b), "dst": ibis.greatest(a, b)}


# --------------------------------------------------------------------------- shared values
def _min_hub_sum(kc, min_weight: float) -> float:
    """Smallest ``sum(h)`` a pair needs for ``base * (1 - exp(-sum(h) / saturation)) >= min_weight`` (a little
    below it, so float rounding never prunes a pair that would pass; ``inf`` when no pair can pass)."""
    if min_weight <= 0:
        return 0.0
    if min_weight >= kc.base:
        return math.inf
    return -kc.saturation * math.log1p(-min_weight / kc.base) * (1.0 - 1e-9) - 1e-12


def _shared_value_edges(obs: ir.Table, kind: str, cfg: LinkConfig, accounts: ir.Table,
                        min_group: int = 2, unit: str = "") -> ir.Table | None:
    """Edges between accounts sharing ``key`` (a value, possibly within a time bucket).

    ``obs`` has ``account_id, key, value``; ``accounts`` has ``account_id, entity, aidx`` (an integer index in
    account order, so pairs are aggregated on integers and ``src``/``dst`` of the result are ``aidx``).
    Groups count distinct customers (an org once); groups of one customer or more than ``hub_max`` are
    dropped; each member links to at most ``k_neighbors`` others
    (:func:`distillguard.linking.sketch.neighbor_offset`, same rule as the numpy version). Only pairs of
    weight >= ``min_edge_weight`` are returned; None when none can reach it.
    """
    kc = cfg.kind(kind)
    k = cfg.k_neighbors
    need = _min_hub_sum(kc, cfg.min_edge_weight)
    if math.isinf(need):
        return None
    obs = obs.group_by(["key", "account_id"]).aggregate(value=obs.value.max())
    obs = obs.join(accounts, "account_id")
    groups = obs.group_by("key").aggregate(n_ent=obs.entity.nunique(), n_acc=obs.account_id.count())
    groups = groups.filter((groups.n_ent >= max(2, min_group)) & (groups.n_ent <= kc.hub_max))
    m = obs.join(groups, "key")
    m = m.mutate(h=_portable_hash(m.account_id.concat("|", m.key)),
                 hub=ibis.least(kc.value_cap, kc.hub_soft / m.n_ent.cast("float64")))
    # aidx follows account_id order, so this is the same order as (h, account_id)
    m = m.mutate(rank=ibis.row_number().over(group_by=m.key, order_by=[m.h, m.aidx]))
    m = m.select("key", "aidx", "value", "n_ent", "n_acc", "hub", "rank")
    src_m, partner = m, m.select(pkey=m.key, prank=m.rank, other=m.aidx)
    if need > kc.value_cap:
        # one value adds at most value_cap to a pair's sum(h): an account whose values add up to less than
        # ``need`` over all its groups is in no edge that passes, so its pair rows are never built (the ranks
        # above still count every member, so the pairs that remain are exactly those of the full build)
        best = m.group_by(["aidx", "value"]).aggregate(hb=m.hub.max())
        able = best.group_by("aidx").aggregate(hs=best.hb.sum())
        able = able.filter(able.hs >= need).select(able_idx=able.aidx)
        src_m = m.semi_join(able, m.aidx == able.able_idx)
        partner = partner.semi_join(able, partner.other == able.able_idx)
    offs = ibis.memtable({"i": list(range(k))})
    c = src_m.cross_join(offs)
    n = c.n_acc
    large_off = ibis.greatest(c.i + 1, (n.cast("float64") ** (c.i.cast("float64") / k)).floor().cast("int64"))
    off = ibis.ifelse(n <= k + 1, ibis.ifelse(c.i + 1 < n, c.i + 1, 0), large_off)
    c = c.mutate(off=off)
    c = c.filter(c.off > 0).mutate(trank=(c.rank + c.off) % c.n_acc)
    j = c.join(partner, [c.key == partner.pkey, c.trank == partner.prank])
    j = j.select(**_pair_cols(j.aidx, j.other), key=j.key, value=j.value, n_ent=j.n_ent, hub=j.hub)
    j = j.filter(j.src != j.dst)
    j = j.group_by(["src", "dst", "key"]).aggregate(value=j.value.max(), n_ent=j.n_ent.max(), hub=j.hub.max())
    # one contribution per distinct shared value: a NAT IP seen together in 50 windows is still one IP
    v = j.group_by(["src", "dst", "value"]).aggregate(windows=j.count(), n_ent=j.n_ent.min(), hub=j.hub.max())
    agg = v.group_by(["src", "dst"]).aggregate(count=v.count(), windows=v.windows.sum(), hsum=v.hub.sum(),
                                               top_n=v.n_ent.min())
    agg = agg.mutate(weight=kc.base * (1.0 - (-agg.hsum / kc.saturation).exp()))
    agg = agg.filter(agg.weight >= cfg.min_edge_weight)
    # the value the detail names (the strongest shared one), found only for the pairs that are kept
    kept = v.semi_join(agg.select("src", "dst"), ["src", "dst"])
    top = kept.group_by(["src", "dst"]).aggregate(top=kept.value.argmax(_tiebreak(kept.hub, kept.value)))
    agg = agg.join(top, ["src", "dst"])
    detail = (ibis.literal(f"{kind} ") + _short(agg.top) + " (" + agg.top_n.cast("string") + " customers)"
              + ibis.ifelse(agg["count"] > 1, "; " + agg["count"].cast("string") + " shared values", ""))
    if unit:
        detail = detail + " in " + agg.windows.cast("string") + f" shared {unit}"
    return agg.select("src", "dst", kind=ibis.literal(kind), weight=agg.weight, count=agg["count"].cast("int64"),
                      detail=detail)


# --------------------------------------------------------------------------- templates
def template_clusters(signals: ir.Table, cfg: LinkConfig) -> ir.Table:
    """Map each ``template_sig`` to a cluster of near-duplicate templates (SimHash within
    ``simhash_max_distance`` bits of the most used signature nearby). Columns: template_sig,
    cluster (string), cluster_tid (the leader's most used template_id)."""
    return _clusters_from(_template_uses(signals), cfg)


def _template_uses(signals: ir.Table) -> pa.Table:
    """The relational half of :func:`template_clusters`: ``template_sig, uses, tid`` per signature."""
    s = signals.filter(signals.template_sig.notnull())
    # the most used template_id of each signature, ties to the smallest (``mode()`` picks any of a tie, so
    # runs and engines would disagree)
    uses = s.group_by("template_sig").aggregate(uses=s.count())
    pt = s.filter(s.template_id.notnull()).group_by(["template_sig", "template_id"]).aggregate(c=ibis._.count())
    top = pt.group_by("template_sig").aggregate(cmax=pt.c.max())
    best = pt.join(top, [pt.template_sig == top.template_sig, pt.c == top.cmax])
    mode = best.group_by("template_sig").aggregate(tid=best.template_id.min())
    per = uses.left_join(mode, uses.template_sig == mode.template_sig).select("template_sig", "uses", "tid")
    return per.to_pyarrow()


def _clusters_from(t: pa.Table, cfg: LinkConfig) -> ir.Table:
    """The numpy half of :func:`template_clusters` (SimHash leaders), from :func:`_template_uses`."""
    if t.num_rows == 0:
        return ibis.memtable(pa.table({"template_sig": pa.array([], pa.int64()), "cluster": pa.array([], pa.string()),
                                       "cluster_tid": pa.array([], pa.string())}))
    sigs = t["template_sig"].to_numpy(zero_copy_only=False).astype(np.int64)
    uses = t["uses"].to_numpy(zero_copy_only=False).astype(np.float64)
    tids = np.asarray(t["tid"].to_pylist(), dtype=object)
    lead = simhash_leaders(sigs, uses, cfg.simhash_max_distance, cfg.simhash_blocks)
    cluster = np.char.add("s", np.char.mod("%016x", sigs[lead].view(np.uint64)))
    return ibis.memtable(pa.table({"template_sig": pa.array(sigs, pa.int64()),
                                   "cluster": pa.array(cluster.tolist(), pa.string()),
                                   "cluster_tid": pa.array(tids[lead].tolist(), pa.string())}))


def _account_templates(signals: ir.Table, cfg: LinkConfig, clusters: ir.Table | None = None) -> ir.Table:
    """(account_id, key=cluster, value=cluster's template_id, uses) for every account and template cluster
    (``clusters``: :func:`template_clusters` of ``signals`` when already computed)."""
    if clusters is None:
        clusters = template_clusters(signals, cfg)
    s = signals.filter(signals.template_id.notnull())
    s = s.left_join(clusters, s.template_sig == clusters.template_sig)
    key = s.cluster.coalesce("t" + s.template_id)
    val = s.cluster_tid.coalesce(s.template_id)
    s = s.select(account_id=s.account_id, key=key, value=val)
    return s.group_by(["account_id", "key"]).aggregate(value=s.value.max(), uses=s.count())


# --------------------------------------------------------------------------- MinHash-based kinds
def _sorted_codes(values) -> tuple[pa.Array, np.ndarray]:
    """``(distinct values sorted, index of each value among them)``, as ``np.unique(..., return_inverse=True)``
    gives for strings, without Python objects."""
    import pyarrow.compute as pc

    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    uniq = pc.unique(arr)
    uniq = uniq.take(pc.sort_indices(uniq))
    return uniq, pc.index_in(arr, value_set=uniq).to_numpy(zero_copy_only=False).astype(np.int64)


def _owner_codes(aidx) -> tuple[np.ndarray, np.ndarray]:
    """Owners (account indices) as ``0..n-1`` in account order, as ``np.unique`` of their ids would number them."""
    return np.unique(np.asarray(aidx, dtype=np.int64), return_inverse=True)


def _minhash_candidates(owner: np.ndarray, items: np.ndarray, n_owner: int, cfg: LinkConfig):
    """Candidate pairs with their estimated Jaccard and set sizes."""
    sizes = np.bincount(owner, minlength=n_owner)
    sig = minhash_signatures(owner, items, n_owner, cfg.minhash_perm, cfg.seed)
    rows = np.flatnonzero(sizes > 0)
    a, b = lsh_pairs(sig, rows, cfg.lsh_bands, cfg.k_neighbors)
    jac = (sig[a] == sig[b]).mean(axis=1) if len(a) else np.empty(0)
    return a, b, jac, sizes


#: edges while they are built: ``src``/``dst`` are account indices (``aidx``, in account order), see _named
_IDX_SCHEMA = pa.schema([pa.field("src", pa.int64(), nullable=False), pa.field("dst", pa.int64(), nullable=False)]
                        + [EDGE_SCHEMA.field(n) for n in ("kind", "weight", "count", "detail")])


def _edges_from_arrays(src, dst, kind, weight, count, detail) -> pa.Table:
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    return pa.table({"src": np.minimum(src, dst), "dst": np.maximum(src, dst),
                     "kind": pa.array([kind] * len(src), pa.string()),
                     "weight": pa.array(np.asarray(weight, dtype=np.float64)),
                     "count": pa.array(np.asarray(count, dtype=np.int64)),
                     "detail": pa.array(list(detail), pa.string())}, schema=_IDX_SCHEMA)


def _template_set_data(acct_tpl: ir.Table, accounts: ir.Table, cfg: LinkConfig) -> pa.Table:
    """The relational half of the template_set kind: ``aidx, key`` of the accounts' uncommon templates."""
    t = acct_tpl.join(accounts, "account_id")
    common = t.group_by("key").aggregate(n_ent=t.entity.nunique())
    common = common.filter(common.n_ent > cfg.set_hub_max)
    t = t.anti_join(common, "key")
    per = t.group_by("account_id").aggregate(n=t.key.count())
    t = t.semi_join(per.filter(per.n >= cfg.set_min_templates), "account_id")
    return t.select("aidx", "key").to_pyarrow()


def _template_set_edges(data: pa.Table, cfg: LinkConfig) -> pa.Table:
    """The numpy half (MinHash/LSH over each account's template set), from :func:`_template_set_data`."""
    if data.num_rows == 0:
        return _IDX_SCHEMA.empty_table()
    uniq, owner = _owner_codes(data["aidx"])
    _, item = _sorted_codes(data["key"])
    a, b, jac, sizes = _minhash_candidates(owner, item, len(uniq), cfg)
    keep = jac >= cfg.set_min_jaccard
    a, b, jac = a[keep], b[keep], jac[keep]
    shared = np.rint(jac * (sizes[a] + sizes[b]) / (1.0 + jac)).astype(np.int64)
    detail = [f"template_set jaccard~{j:.2f}, ~{s} shared of {x}/{y} templates"
              for j, s, x, y in zip(jac, shared, sizes[a], sizes[b])]
    return _edges_from_arrays(uniq[a], uniq[b], "template_set", cfg.set_base * jac, shared, detail)


def _sync_data(events: ir.Table, accounts: ir.Table, cfg: LinkConfig) -> pa.Table:
    """The relational half of the sync kind: ``aidx, bucket`` of every active account's time buckets."""
    e = events.select("account_id", bucket=_bucket(events.timestamp, cfg.sync_bucket_s)).distinct()
    per = e.group_by("account_id").aggregate(n=e.count())
    e = e.semi_join(per.filter(per.n >= cfg.sync_min_buckets), "account_id")
    return e.join(accounts, "account_id").select("aidx", "bucket").to_pyarrow()


def _sync_edges(data: pa.Table, cfg: LinkConfig) -> pa.Table:
    """The numpy half (MinHash/LSH over each account's active buckets, lift over chance)."""
    if data.num_rows == 0:
        return _IDX_SCHEMA.empty_table()
    buckets = data["bucket"].to_numpy()
    span = float(buckets.max() - buckets.min() + 1)
    uniq, owner = _owner_codes(data["aidx"])
    a, b, jac, sizes = _minhash_candidates(owner, buckets, len(uniq), cfg)
    inter = jac * (sizes[a] + sizes[b]) / (1.0 + jac)
    expected = sizes[a].astype(np.float64) * sizes[b] / span
    lift = inter / np.maximum(expected, 1e-9)
    keep = (jac >= cfg.sync_min_jaccard) & (lift >= cfg.sync_min_lift)
    a, b, jac, inter, lift = a[keep], b[keep], jac[keep], inter[keep], lift[keep]
    count = np.rint(inter).astype(np.int64)
    unit = f"{cfg.sync_bucket_s}s buckets"
    detail = [f"sync co-active in ~{c} of {x}/{y} {unit} (jaccard~{j:.2f}, {lf:.0f}x chance)"
              for c, x, y, j, lf in zip(count, sizes[a], sizes[b], jac, lift)]
    return _edges_from_arrays(uniq[a], uniq[b], "sync", cfg.sync_base * jac, count, detail)


# --------------------------------------------------------------------------- partitions
def _partition_edges(signals: ir.Table, cfg: LinkConfig, rep_templates: ir.Table | None = None,
                     accounts: ir.Table | None = None) -> ir.Table:
    """Partition edges; with ``accounts`` (``account_id, aidx``) src/dst are account indices."""
    # (column names differ in more than case: DuckDB identifiers are case-insensitive)
    s = signals.filter(signals.benchmark.notnull() & signals.benchmark_item.notnull())
    s = s.mutate(period=_bucket(s.timestamp, cfg.partition_period_s))
    items = s.select("account_id", "benchmark", "period", item=s.benchmark_item).distinct()
    size = items.group_by(["benchmark", "period"]).aggregate(pool=items.item.nunique())
    first = s.group_by(["account_id", "benchmark", "period"]).aggregate(first=s.timestamp.min())
    per = items.group_by(["account_id", "benchmark", "period"]).aggregate(n=items.count())
    per = per.filter(per.n >= cfg.partition_min_items).join(first, ["account_id", "benchmark", "period"])
    per = per.join(size, ["benchmark", "period"])
    w = ibis.window(group_by=[per.benchmark, per.period])
    per = per.mutate(rank=ibis.row_number().over(group_by=[per.benchmark, per.period],
                                                 order_by=[per.first, per.account_id]),
                     n_acc=per.count().over(w))
    offs = ibis.memtable({"off": list(range(1, cfg.partition_neighbors + 1))})
    c = per.cross_join(offs)
    c = c.filter(c.rank + c.off < c.n_acc).mutate(trank=c.rank + c.off)
    other = per.select(ob=per.benchmark, pp=per.period, orank=per.rank, b=per.account_id, nb=per.n)
    c = c.join(other, [c.benchmark == other.ob, c.period == other.pp, c.trank == other.orank])
    c = c.select(a=c.account_id, b=c.b, benchmark=c.benchmark, period=c.period, na=c.n, nb=c.nb, pool=c.pool,
                 expected=c.n.cast("float64") * c.nb / c.pool)
    ia = items.select(aa=items.account_id, ab=items.benchmark, ap=items.period, item=items.item)
    ib = items.select(ba=items.account_id, bb=items.benchmark, bp=items.period, bitem=items.item)
    ov = c.join(ia, [c.a == ia.aa, c.benchmark == ia.ab, c.period == ia.ap])
    ov = ov.join(ib, [ov.b == ib.ba, ov.benchmark == ib.bb, ov.period == ib.bp, ov.item == ib.bitem])
    ov = ov.group_by(["a", "b", "benchmark", "period"]).aggregate(shared=ov.count())
    c = c.left_join(ov, ["a", "b", "benchmark", "period"])
    c = c.select("a", "b", "benchmark", "period", "na", "nb", "pool", "expected", shared=c.shared.coalesce(0))
    ratio = ibis.greatest(c.na, c.nb).cast("float64") / ibis.least(c.na, c.nb)
    c = c.filter((c.shared <= cfg.partition_max_overlap * ibis.greatest(c.expected, 1.0))
                 & (ratio <= cfg.partition_max_size_ratio))
    # evidence per account: expected overlap summed over its disjoint neighbours (-log of the chance
    # that all those slices missed each other at random); both ends of a pair need enough of it
    ends = c.select(x=c.a, benchmark=c.benchmark, period=c.period, expected=c.expected).union(
        c.select(x=c.b, benchmark=c.benchmark, period=c.period, expected=c.expected), distinct=False)
    ev = ends.group_by(["x", "benchmark", "period"]).aggregate(E=ends.expected.sum())
    ea = ev.select(xa=ev.x, eb_=ev.benchmark, ep_=ev.period, Ea=ev.E)
    eb = ev.select(xb=ev.x, fb_=ev.benchmark, fp_=ev.period, Eb=ev.E)
    c = c.join(ea, [c.a == ea.xa, c.benchmark == ea.eb_, c.period == ea.ep_])
    c = c.join(eb, [c.b == eb.xb, c.benchmark == eb.fb_, c.period == eb.fp_])
    c = c.mutate(E=ibis.least(c.Ea, c.Eb))
    c = c.filter(c.E >= cfg.partition_min_expected)
    c = c.mutate(w=cfg.partition_base * ibis.least(1.0, c.E / (2.0 * cfg.partition_min_expected)),
                 **_pair_cols(c.a, c.b))
    if rep_templates is not None and cfg.partition_untemplated < 1.0:
        # slices of one pipeline go through one prompt template: pairs sharing no repeated template
        # cluster keep only partition_untemplated of the weight
        pairs = c.select("src", "dst").distinct()
        ta = rep_templates.select(ta=rep_templates.account_id, tk=rep_templates.key)
        tb = rep_templates.select(tb=rep_templates.account_id, tk2=rep_templates.key)
        both = pairs.join(ta, pairs.src == ta.ta).join(tb, [pairs.dst == tb.tb, ibis._.tk == tb.tk2])
        both = both.select(ts=both.src, td=both.dst).distinct().mutate(tpl=ibis.literal(1.0))
        keep = c.columns
        c = c.left_join(both, [c.src == both.ts, c.dst == both.td])
        c = c.select(*[x for x in keep if x != "w"],
                     w=c.w * ibis.ifelse(c.tpl.notnull(), 1.0, cfg.partition_untemplated))
    best = _tiebreak(c.w, c.benchmark.concat("@", c.period.cast("string")))
    agg = c.group_by(["src", "dst"]).aggregate(
        weight=c.w.max(), count=c.count(), bench=c.benchmark.argmax(best), na=c.na.argmax(best),
        nb=c.nb.argmax(best), pool=c.pool.argmax(best), shared=c.shared.argmax(best), E=c.E.argmax(best))
    detail = ("partition " + _short(agg.bench, 32) + ": " + agg.na.cast("string") + "+" + agg.nb.cast("string")
              + " of " + agg.pool.cast("string") + " items, " + agg.shared.cast("string") + " shared; disjoint from "
              + "neighbours where " + agg.E.round(1).cast("string") + " shared items were expected by chance")
    out = agg.select("src", "dst", kind=ibis.literal("partition"), weight=agg.weight,
                     count=agg["count"].cast("int64"), detail=detail)
    if accounts is None:
        return out
    sa = accounts.select(s_id=accounts.account_id, s_idx=accounts.aidx)
    da = accounts.select(d_id=accounts.account_id, d_idx=accounts.aidx)
    out = out.join(sa, out.src == sa.s_id).join(da, ibis._.dst == da.d_id)
    return out.select(src=out.s_idx, dst=out.d_idx, kind=out.kind, weight=out.weight, count=out["count"],
                      detail=out.detail)


# --------------------------------------------------------------------------- assembly
def _default_engine_pairs(events: ir.Table) -> bool:
    """Pair the shared-value kinds in the engine unless the tables live in DuckDB (one machine: the numpy
    route of :mod:`distillguard.linking.shared` is about twice as fast there)."""
    try:
        return ibis.get_backend(events).name != "duckdb"
    except Exception:  # noqa: BLE001 - a backend Ibis cannot name keeps the engine route
        return True


def build_edges(events, signals=None, *, config: LinkConfig | None = None,
                engine_pairs: bool | None = None) -> pa.Table:
    """All account edges as a pyarrow table with columns ``src, dst, kind, weight, count, detail``
    (``src < dst``; one row per pair and kind; sorted by kind, src, dst).

    ``events`` and ``signals`` are Ibis tables (or pyarrow tables, wrapped in memtables). ``signals``
    may be None: then only the infrastructure, payment, creation and sync kinds are built.
    ``engine_pairs``: pair the shared-value kinds in the engine's SQL (True; the route for Spark) or pull each
    kind's distinct members and pair them in numpy (False; :mod:`distillguard.linking.shared`); None picks
    numpy on DuckDB and the engine elsewhere. Both give the same edges.
    """
    cfg = config or LinkConfig()
    events = _as_table(events, "events")
    _need(events, _EVENT_NEEDS, "events")
    if signals is not None:
        signals = _as_table(signals, "signals")
        _need(signals, _SIGNAL_NEEDS, "signals")

    acc = events.group_by("account_id").aggregate(org=events.org_id.max(), created=events.account_created_at.min())
    # one small table of accounts, computed once: entity (the customer) and an integer index in account order
    # that the shared-value kinds aggregate pairs on
    ents = _account_index(acc.select("account_id", "org").to_pyarrow())
    accounts = ibis.memtable(ents)
    on = {k: cfg.kind(k).enabled for k in SHARED_VALUE_KINDS}
    if engine_pairs is None:
        engine_pairs = _default_engine_pairs(events)
    entity = pc.dictionary_encode(ents["entity"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    tables: list[pa.Table] = []
    # the numpy halves (SimHash leaders of the template clusters, the MinHash kinds, the shared-value pairing;
    # numpy releases the GIL) run on two helper threads while the engine runs the other queries, each run as
    # soon as it is built; the results are the same as one after the other. Two threads, not one: once the
    # engine's queries are done the numpy halves are all that is left (1M events: post-scan stages 8.5-8.7 s
    # with one thread, 7.9-8.4 s with two)
    pool = ThreadPoolExecutor(2, thread_name_prefix="distillguard-sketch")
    # one pairing at a time while the engine's queries run; two once they are done (the engine's working memory
    # is freed by then, and the pairings left are all that keeps the cores busy)
    one_at_a_time = threading.Semaphore(1)
    sketched: list = []
    try:
        def add(expr: ir.Table | None) -> None:
            if expr is not None:
                tables.append(expr.to_pyarrow().cast(_IDX_SCHEMA))

        def pairs(obs: ir.Table, kind: str, min_group: int = 2, unit: str = "") -> None:
            """One shared-value kind: in the engine, or its members pulled and paired in numpy on the helper
            thread while the engine runs the next query."""
            bucketed = "bucket" in obs.columns
            if engine_pairs:
                if bucketed:
                    obs = obs.drop("bucket")
                add(_shared_value_edges(obs, kind, cfg, accounts, min_group=min_group, unit=unit))
            elif not math.isinf(_min_hub_sum(cfg.kind(kind), cfg.min_edge_weight)):
                data = member_rows(obs, accounts, bucketed).to_pyarrow()
                sketched.append(pool.submit(_paired, one_at_a_time, data, kind, cfg, entity, min_group, unit))

        want_templates = signals is not None and (on["template"] or cfg.set_base > 0)
        clusters = pool.submit(_clusters_from, _template_uses(signals), cfg) if want_templates else None
        if cfg.sync_base > 0:
            sketched.append(pool.submit(_sync_edges, _sync_data(events, accounts, cfg), cfg))

        def shared(kind, value, bucket_s=None, unit="", table=None):
            e = (events if table is None else table).mutate(v=value)
            e = e.filter(e.v.notnull() & (e.v != ""))
            if bucket_s is None:
                obs = e.select(account_id=e.account_id, key=e.v, value=e.v)
            else:
                e = e.mutate(b=_bucket(e.timestamp, bucket_s))
                obs = e.select(account_id=e.account_id, key=e.v + "@" + e.b.cast("string"), value=e.v, bucket=e.b)
            pairs(obs, kind, unit=unit)

        if on["payment"]:
            shared("payment", events.payment_fingerprint)
        if on["asn"]:  # the longest pairing (most rows in the largest groups) starts first
            shared("asn", events.asn, cfg.kind("asn").bucket_s, unit=f"{cfg.kind('asn').bucket_s}s windows")
        if on["ip"]:
            shared("ip", events.ip, cfg.kind("ip").bucket_s, unit=f"{cfg.kind('ip').bucket_s}s windows")
        if on["ip24"]:
            # prefixes are worked out once per distinct address (a small table), then joined back to the events
            ipmap = ibis.memtable(_ip_prefixes(events.select("ip").distinct().to_pyarrow()))
            seen = events.join(ipmap, "ip")
            bs = cfg.kind("ip24").bucket_s
            shared("ip24", seen.prefix, bs, unit=f"{bs}s windows", table=seen)
        if on["user_agent"]:
            shared("user_agent", events.user_agent)
        if on["created_burst"]:
            for obs, min_group in _burst_obs(acc, cfg):
                pairs(obs, "created_burst", min_group=min_group)
        if signals is not None:
            if want_templates:
                # used three times (template, template_set, partition): computed once, a table of distinct
                # (account, template cluster) pairs
                acct_tpl = ibis.memtable(_account_templates(signals, cfg, clusters.result()).to_pyarrow())
                rep = acct_tpl.filter(acct_tpl.uses >= cfg.template_min_uses)
                if on["template"]:
                    pairs(rep.select("account_id", "key", "value"), "template")
                sketched.append(pool.submit(_template_set_edges, _template_set_data(acct_tpl, accounts, cfg), cfg))
            if on["system_prompt"]:
                sp = signals.filter(signals.system_prompt_id.notnull())
                pairs(sp.select("account_id", key=sp.system_prompt_id, value=sp.system_prompt_id), "system_prompt")
            add(_partition_edges(signals, cfg, rep if on["template"] else None, accounts))
        one_at_a_time.release()  # the engine is done: the pairings left may run two at a time
        tables += [r.cast(_IDX_SCHEMA) for r in (f.result() for f in sketched) if r is not None]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    out = pa.concat_tables(tables) if tables else _IDX_SCHEMA.empty_table()
    return _finish(out, ents, cfg)


def _paired(lock: threading.Semaphore, data: pa.Table, *args) -> pa.Table | None:
    """:func:`shared_value_pairs` on a helper thread, one kind at a time while the engine's queries run
    (``lock``; the other helper thread runs the sketch kinds meanwhile), the heap's freed memory handed back
    after it: its intermediates are the linking stage's largest arrays (about 2.5M pairs for the asn kind at
    1M events; two kinds at once all along took the 5M-event scan's peak to 1,896 MB per 1M events)."""
    with lock:
        try:
            return shared_value_pairs(data, *args)
        finally:
            del data
            release_heap()


def _ip_prefixes(ips: pa.Table) -> pa.Table:
    """``ip, prefix``: the IPv4 /24 (``a.b.c.0/24``) or IPv6 /48 (``a:b:c::/48``) of each address; addresses
    of neither form are left out."""
    import pyarrow.compute as pc

    ip = ips.column("ip").combine_chunks()
    v4 = pc.struct_field(pc.extract_regex(ip, _IPV4_24.replace("(", "(?P<p>", 1)), "p")
    v6 = pc.struct_field(pc.extract_regex(ip, _IPV6_48.replace("(", "(?P<p>", 1)), "p")
    prefix = pc.coalesce(pc.binary_join_element_wise(v4, ".0/24", ""), pc.binary_join_element_wise(v6, "::/48", ""))
    keep = pc.is_valid(prefix)
    return pa.table({"ip": ip.filter(keep).cast(pa.string()), "prefix": prefix.filter(keep).cast(pa.string())})


def _account_index(acc: pa.Table) -> pa.Table:
    """``account_id, entity, aidx`` sorted by account_id (byte order, as the engines compare strings)."""
    import pyarrow.compute as pc

    acc = acc.take(pc.sort_indices(acc, [("account_id", "ascending")]))
    ids = acc.column("account_id").combine_chunks()
    entity = pc.coalesce(acc.column("org").combine_chunks(), pc.binary_join_element_wise("a:", ids, ""))
    return pa.table({"account_id": ids, "entity": entity.cast(pa.string()),
                     "aidx": pa.array(np.arange(len(ids), dtype=np.int64))})


def _burst_obs(acc: ir.Table, cfg: LinkConfig) -> list[tuple[ir.Table, int]]:
    """``(account_id, key, value)`` observations of the created_burst kind and the group size it needs (the
    creation rate's expected bucket size times ``burst_factor``); none with fewer than two dated accounts."""
    kc = cfg.kind("created_burst")
    created = acc.filter(acc.created.notnull())
    stats = created.aggregate(n=created.count(), lo=created.created.min(), hi=created.created.max()).to_pyarrow()
    n = stats["n"][0].as_py() or 0
    if n < 2:
        return []
    lo, hi = stats["lo"][0].as_py(), stats["hi"][0].as_py()
    buckets = max(1.0, (hi - lo).total_seconds() / kc.bucket_s)
    min_group = max(cfg.burst_min, math.ceil(cfg.burst_factor * n / buckets))
    key = _bucket(created.created, kc.bucket_s).cast("string")
    obs = created.select("account_id", key=key, value="created " + created.created.truncate("m").cast("string"))
    return [(obs, min_group)]


def _finish(out: pa.Table, ents: pa.Table, cfg: LinkConfig) -> pa.Table:
    """Drop pairs inside one org (one customer) and weak edges; sort deterministically; account ids for the
    account indices of ``out`` (:data:`_IDX_SCHEMA`)."""
    import pyarrow.compute as pc

    if out.num_rows == 0:
        return _empty()
    out = out.combine_chunks()
    src = out["src"].to_numpy()
    dst = out["dst"].to_numpy()
    weight = out["weight"].to_numpy()
    ent = pc.dictionary_encode(ents["entity"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    keep = np.flatnonzero((weight >= cfg.min_edge_weight) & (ent[src] != ent[dst]) & (src != dst))
    # the order of (kind, src id, dst id): account indices follow account order, and each kind is ranked by
    # its name in byte order (as a string sort would); one numpy sort of integers, then a single take
    kinds = pc.dictionary_encode(out["kind"].combine_chunks())
    names_k = kinds.dictionary.to_pylist()
    by_name = sorted(range(len(names_k)), key=lambda i: names_k[i].encode("utf-8"))
    krank = np.empty(len(names_k), np.int64)
    krank[by_name] = np.arange(len(names_k))
    kr = krank[kinds.indices.to_numpy(zero_copy_only=False)]
    order = keep[_edge_order(kr[keep], src[keep], dst[keep], int(len(ents)), len(names_k))]
    out = out.take(pa.array(order))
    # parallel sums differ in the last bits from run to run: round so the output is reproducible
    out = out.set_column(out.schema.get_field_index("weight"), "weight", pc.round(out["weight"], 9))
    names = ents.column("account_id")
    cols = {"src": names.take(out["src"]), "dst": names.take(out["dst"])}
    out = pa.table([cols.get(f.name, out.column(f.name)).cast(f.type) for f in EDGE_SCHEMA], schema=EDGE_SCHEMA)
    return out.combine_chunks()


def _edge_order(kind_rank: np.ndarray, src: np.ndarray, dst: np.ndarray, n_accounts: int, n_kinds: int,
                packed: bool | None = None) -> np.ndarray:
    """Stable order of rows by (kind rank, src, dst): one sort of a packed integer key when the three fit
    in 62 bits (``packed`` None: decided here), else a lexsort (same order)."""
    if packed is None:
        packed = n_kinds * n_accounts * n_accounts < 2**62
    if packed:
        return np.argsort((kind_rank * n_accounts + src) * n_accounts + dst, kind="stable")
    return np.lexsort((dst, src, kind_rank))
