"""Shared-value edges with the pairing done in numpy (the route :func:`distillguard.linking.build_edges` takes
when its tables live in DuckDB).

The relational half is one small query per kind (:func:`member_rows`): each distinct (key, account) with its
value, account index and the MD5 that orders a group's members. Everything after it (distinct customers per
group, the hub guards, member ranks, neighbour pairs, the per-value and per-pair aggregates, the weight floor
and the detail text) is worked out here with sorts of packed integer keys, and gives the same edges as the
engine route in :mod:`distillguard.linking.edges` (``_shared_value_edges``), which stays the route for Spark.
At 1M events the three time-bucketed kinds (ip, ip24, asn) took 1.4-2.0 s each in DuckDB's hash aggregates
and joins; see docs/linking.md for the figures of this route.
"""

from __future__ import annotations

import hashlib
import math

import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["member_rows", "shared_value_pairs", "neighbor_offsets", "md5_halves"]

_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def member_rows(obs: ir.Table, accounts: ir.Table, bucketed: bool = False) -> ir.Table:
    """The relational half: one row per distinct (key, account) of ``obs`` (``account_id, key, value``, and
    ``bucket`` when ``bucketed``) with ``value`` (the largest of the account's values under the key), ``aidx``
    and ``h``, the lower-case hex MD5 of ``account_id|key`` that orders a group's members on every engine.

    Bucketed kinds (``key`` must be ``value@bucket``, as the engine route builds it) return ``value, bucket``
    instead of the key, so the numpy half codes keys as integers; their key text is built only for the
    distinct rows (to hash it). Other kinds return ``key`` too."""
    if bucketed:  # the key is value@bucket: distinct rows first, the key text built for those only
        d = obs.select("account_id", "value", "bucket").distinct()
        d = d.join(accounts.select("account_id", "aidx"), "account_id")
        label = d.account_id.concat("|", d.value, "@", d.bucket.cast("string"))
        return d.select("value", "bucket", "aidx", h=label.hexdigest("md5"))
    d = obs.group_by(["key", "account_id"]).aggregate(value=obs.value.max())
    d = d.join(accounts.select("account_id", "aidx"), "account_id")
    return d.select("key", "value", "aidx", h=d.account_id.concat("|", d.key).hexdigest("md5"))


def md5_halves(hexes: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) uint64 halves of 32-character lower-case hex digests: ordering by them is ordering by the
    hex strings."""
    arr = hexes.combine_chunks() if isinstance(hexes, pa.ChunkedArray) else hexes
    arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    if arr.null_count:
        raise ValueError("md5_halves: null digest")
    _, off_buf, data_buf = arr.buffers()
    off = np.frombuffer(off_buf, np.int64, n + 1, arr.offset * 8)
    if not np.all(np.diff(off) == 32):
        raise ValueError("md5_halves: digests must be 32 hex characters")
    raw = np.frombuffer(data_buf, np.uint8, 32 * n, int(off[0])).reshape(n, 32)
    nib = _HEX[raw]
    if (nib == 255).any():
        raise ValueError("md5_halves: not a lower-case hex digest")
    byte = (nib[:, 0::2] << 4) | nib[:, 1::2]  # the 16 digest bytes, most significant first
    both = byte.view(">u8").astype(np.uint64)
    return both[:, 0].copy(), both[:, 1].copy()


def neighbor_offsets(sizes: np.ndarray, k: int) -> np.ndarray:
    """(len(sizes), k) offsets of each member's neighbours in groups of these sizes, as the engines compute
    them: groups of at most ``k + 1`` are complete (offset ``i + 1`` while it is below the size, else 0), larger
    ones use ``max(i + 1, floor(n ** (i / k)))``. The power is the C library's (``math.pow``, which DuckDB's
    and Spark's ``POWER`` call too), taken once per distinct size: numpy's vectorised power can differ in the
    last bit (27 ** (1/3) comes out just under 3) and pick another neighbour."""
    sizes = np.asarray(sizes, dtype=np.int64)
    uniq, inv = np.unique(sizes, return_inverse=True)
    table = np.zeros((len(uniq), k), np.int64)
    for r, n in enumerate(uniq.tolist()):
        for i in range(k):
            if n <= k + 1:
                table[r, i] = i + 1 if i + 1 < n else 0
            else:
                table[r, i] = max(i + 1, int(math.floor(math.pow(float(n), i / k))))
    return table[inv.reshape(-1)]


def _runs(sorted_key: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    m = len(sorted_key)
    if m == 0:
        return np.empty(0, np.int64)
    new = np.empty(m, bool)
    new[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=new[1:])
    return np.flatnonzero(new)


def _order_two(major: np.ndarray, minor: np.ndarray, n_minor: int, stable: bool = True) -> np.ndarray:
    """Order by (major, minor), both non-negative: one sort of a packed key when it fits in 63 bits (ties keep
    their order only with ``stable``)."""
    if len(major) == 0:
        return np.empty(0, np.int64)
    if int(major.max()) < (2**62) // max(n_minor, 1):
        return np.argsort(major * n_minor + minor, kind="stable" if stable else "quicksort")
    return np.lexsort((minor, major))


def _sorted_codes(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Distinct values in byte order and the index of each value among them (the engines' string order)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    enc = pc.dictionary_encode(arr)
    dic = enc.dictionary
    order = pc.sort_indices(dic).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return dic.take(pa.array(order)), rank[enc.indices.to_numpy(zero_copy_only=False)]


def _key_codes(data: pa.Table) -> tuple[np.ndarray, int, np.ndarray, pa.Array, bool]:
    """``(key code, number of codes, value code, distinct values sorted, monotone)`` of :func:`member_rows`
    rows. Value codes follow the values' byte order (so a larger code is a larger string); bucketed keys are
    coded ``value code * buckets + bucket`` (monotone: a key's code orders as its value does)."""
    values, val = _sorted_codes(data.column("value"))
    if "bucket" in data.column_names:
        b = data.column("bucket").to_numpy().astype(np.int64)
        b0 = int(b.min()) if len(b) else 0
        nb = int(b.max()) - b0 + 1 if len(b) else 1
        if len(values) * nb < 2**62:
            return val * nb + (b - b0), len(values) * nb, val, values, True
        key = _runs_codes(val, b)
        return key, int(key.max()) + 1 if len(key) else 0, val, values, True
    enc = pc.dictionary_encode(data.column("key").combine_chunks())
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(enc.dictionary), val, values, False


def _runs_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense codes of the pairs (a, b) in (a, b) order."""
    o = np.lexsort((b, a))
    st = _runs2(a[o], b[o])
    code = np.empty(len(a), np.int64)
    code[o] = np.repeat(np.arange(len(st)), np.diff(np.append(st, len(a))))
    return code


def _member_order(key: np.ndarray, hi: np.ndarray, lo: np.ndarray, aidx: np.ndarray, n_keys: int) -> np.ndarray:
    """Order of members by (key, h, aidx): one sort of the key packed with the digest's top bits, a full
    lexsort only when two members of a group tie on those bits (about 2^-40 a pair)."""
    bits = max(1, int(n_keys - 1).bit_length())
    if bits <= 40:
        packed = (key.astype(np.uint64) << np.uint64(63 - bits)) | (hi >> np.uint64(bits + 1))
        order = np.argsort(packed)
        ps = packed[order]
        if not (ps[1:] == ps[:-1]).any():
            return order
    return np.lexsort((aidx, lo, hi, key))


def shared_value_pairs(data: pa.Table, kind: str, cfg, entity: np.ndarray, min_group: int = 2,
                       unit: str = "", schema: pa.Schema | None = None) -> pa.Table | None:
    """Edges of one shared-value kind from :func:`member_rows` (``data``) and the customer of each account
    index (``entity``, integer codes): columns ``src, dst`` (account indices), ``kind, weight, count, detail``;
    the same rows as the engine route. None when no pair can reach the weight floor."""
    from .edges import _min_hub_sum  # the bound both routes use

    kc = cfg.kind(kind)
    k = cfg.k_neighbors
    need = _min_hub_sum(kc, cfg.min_edge_weight)
    if math.isinf(need):
        return None
    empty = _table(schema, [], [], kind, [], [], [])
    if data.num_rows == 0:
        return empty
    key, n_keys, val, values, monotone = _key_codes(data)
    n_vals = len(values)
    aidx = data.column("aidx").to_numpy().astype(np.int64)
    # keys held by one account form no pair: dropped before the digests are read and the members sorted
    dense = pc.dictionary_encode(pa.array(key)).indices.to_numpy(zero_copy_only=False)
    multi = np.flatnonzero(np.bincount(dense)[dense] >= 2)
    if len(multi) == 0:
        return empty
    key, val, aidx = key[multi], val[multi], aidx[multi]
    hi, lo = md5_halves(data.column("h").take(pa.array(multi)))
    entity = np.asarray(entity, dtype=np.int64)
    n_acc_total = len(entity)

    # members in (key, h, aidx) order: a group's rows are contiguous and ranked as the engines rank them
    order = _member_order(key, hi, lo, aidx, n_keys)
    key, val, aidx = key[order], val[order], aidx[order]
    ent = entity[aidx]
    starts = _runs(key)
    sizes = np.diff(np.append(starts, len(key)))
    g_key = key[starts]
    # distinct customers per group
    n_ent_all = int(entity.max()) + 1
    ek = np.sort(key * n_ent_all + ent) if n_keys < 2**62 // n_ent_all else None
    if ek is not None:
        g_ent = np.bincount(ek[_runs(ek)] // n_ent_all, minlength=n_keys)[g_key]
    else:
        o2 = np.lexsort((ent, key))
        g_ent = np.bincount(key[o2][_runs2(key[o2], ent[o2])], minlength=n_keys)[g_key]
    ok_group = (g_ent >= max(2, min_group)) & (g_ent <= kc.hub_max)
    g_hub = np.minimum(kc.value_cap, kc.hub_soft / g_ent.astype(np.float64))
    grp = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(len(key)) - starts[grp]  # 0-based, as Ibis's row_number
    rows_ok = ok_group[grp]
    same = grp[1:] == grp[:-1]
    determined = not (same & (val[1:] != val[:-1])).any()  # each key has one value (all kinds but created_burst)
    able = two = None
    if need > kc.value_cap:
        # an account whose best hub per distinct value adds up to less than ``need`` is in no edge that passes
        # (ranks above still count every member, as in the engine route)
        m = np.flatnonzero(rows_ok)
        o3 = _order_two(aidx[m], val[m], n_vals)
        a3, v3, h3 = aidx[m][o3], val[m][o3], g_hub[grp[m]][o3]
        st = _runs2(a3, v3)
        hs = np.zeros(n_acc_total)
        if len(st):
            np.add.at(hs, a3[st], np.maximum.reduceat(h3, st))
        able = hs >= need
        rows_ok = rows_ok & able[aidx]
        if determined and len(st):
            two = _value_masks(a3[st], v3[st], n_acc_total)
    src_rows = np.flatnonzero(rows_ok)
    # neighbour pairs: the member of rank r links to the member of rank (r + off) % n of its group
    g_of = grp[src_rows]
    n_row = sizes[g_of]
    offs = neighbor_offsets(sizes, k)[g_of]
    a_parts, b_parts = [], []
    for i in range(k):
        off = offs[:, i]
        ok = off > 0
        rows = src_rows[ok]
        partner = starts[g_of[ok]] + (rank[rows] + off[ok]) % n_row[ok]
        if able is not None:
            good = able[aidx[partner]]
            rows, partner = rows[good], partner[good]
        if two is not None:
            good = _may_share_two(two, aidx[rows], aidx[partner], val[rows])
            rows, partner = rows[good], partner[good]
        a_parts.append(rows)
        b_parts.append(partner)
    rows = np.concatenate(a_parts)
    partner = np.concatenate(b_parts)
    sa, sb = aidx[rows], aidx[partner]
    keep = sa != sb
    if not keep.all():
        rows, sa, sb = rows[keep], sa[keep], sb[keep]
    if len(rows) == 0:
        return empty
    pair = np.minimum(sa, sb) * n_acc_total + np.maximum(sa, sb)
    n_groups = len(starts)
    g_val = val[starts]
    g_micro = np.floor(g_hub * 1e6 + 0.5).astype(np.int64)  # SQL ROUND (halves away from zero); hub > 0
    pg = grp[rows]
    row_val = None if determined else val[rows]  # values differ inside a key: the row's own value counts
    del rows, partner, sa, sb, a_parts, b_parts, offs, g_of, n_row, src_rows  # the largest arrays of the kind
    if determined:
        # each key has one value (every kind but created_burst): distinct (pair, group) by one sort of a packed
        # key; when the groups are in value order (bucketed kinds: key code = value code * buckets + bucket)
        # a pair's groups of one value lie together, else a second sort by (pair, value)
        if int(pair.max()) < 2**62 // n_groups:
            code = np.sort(pair * n_groups + pg)
            code = code[_runs(code)]
            pair, pg = code // n_groups, code % n_groups
        else:
            o = np.lexsort((pg, pair))
            st = _runs2(pair[o], pg[o])
            pair, pg = pair[o][st], pg[o][st]
        pval = g_val[pg]
        if not bool(np.all(g_val[1:] >= g_val[:-1])):
            o = _order_two(pair, pval, n_vals, stable=False)
            pair, pg, pval = pair[o], pg[o], pval[o]
    else:
        # values differ inside a key: a (pair, key) takes the largest value of the rows that made it
        pval = row_val
        o = _order_two(pair, pg, n_groups, stable=False)
        pair, pg, pval = pair[o], pg[o], pval[o]
        st = _runs2(pair, pg)
        pval = np.maximum.reduceat(pval, st)
        pair, pg = pair[st], pg[st]
        o = _order_two(pair, pval, n_vals, stable=False)
        pair, pg, pval = pair[o], pg[o], pval[o]
    # (pair, value): windows = keys, n_ent = min, hub = max
    st = _runs2(pair, pval)
    windows = np.diff(np.append(st, len(pair)))
    v_hub = np.maximum.reduceat(g_hub[pg], st)
    v_micro = np.maximum.reduceat(g_micro[pg], st)
    v_ent = np.minimum.reduceat(g_ent[pg], st)
    v_pair, v_val = pair[st], pval[st]
    # per pair
    ps = _runs(v_pair)
    count = np.diff(np.append(ps, len(v_pair)))
    hsum = np.add.reduceat(v_hub, ps)
    weight = kc.base * (1.0 - np.exp(-hsum / kc.saturation))
    kept = weight >= cfg.min_edge_weight
    if not kept.any():
        return empty
    kp = np.flatnonzero(kept)
    win = np.add.reduceat(windows, ps)[kp]
    top_n = np.minimum.reduceat(v_ent, ps)[kp]
    # the value the detail names: the largest (hub rounded to 6 decimals, MD5 of the value) of the pair's
    pair_of_v = np.repeat(np.arange(len(ps)), count)
    idx = np.flatnonzero(kept[pair_of_v])
    vi = v_val[idx]
    used = np.flatnonzero(np.bincount(vi, minlength=n_vals))
    digests = [hashlib.md5(x.encode("utf-8", "surrogatepass")).hexdigest()
               for x in values.take(pa.array(used)).to_pylist()]
    by_digest = used[np.argsort(np.array(digests, dtype=object), kind="stable")]  # value codes, digest order
    drank = np.zeros(n_vals, np.int64)
    drank[by_digest] = np.arange(len(used))
    # one packed score per (pair, value) row, the rows of a pair lying together: the pair's largest score
    # names its value (micro <= 1e6 and fewer than 2^40 values, so it fits)
    score = v_micro[idx] * len(used) + drank[vi]
    top_val = by_digest[np.maximum.reduceat(score, _runs(pair_of_v[idx])) % len(used)]
    count = count[kp]
    pair_k = v_pair[ps][kp]
    short = pc.utf8_slice_codeunits(values, 0, 48).take(pa.array(top_val)).cast(pa.string())
    detail = pc.binary_join_element_wise(f"{kind} ", short, " (", _str(top_n), " customers)", "")
    extra = pc.if_else(pa.array(count > 1), pc.binary_join_element_wise("; ", _str(count), " shared values", ""), "")
    detail = pc.binary_join_element_wise(detail, extra, "")
    if unit:
        detail = pc.binary_join_element_wise(detail, " in ", _str(win), f" shared {unit}", "")
    return _table(schema, pair_k // n_acc_total, pair_k % n_acc_total, kind, weight[kp], count, detail)


_BIT_MIX = np.uint64(0x9E3779B97F4A7C15)


def _bit_of(values: np.ndarray) -> np.ndarray:
    """A bit (0-63) for each value code (the top 6 bits of a multiplicative hash)."""
    return (values.astype(np.uint64) * _BIT_MIX) >> np.uint64(58)


def _value_masks(acc: np.ndarray, values: np.ndarray, n_acc: int) -> tuple[np.ndarray, np.ndarray]:
    """Per account (``acc``/``values``: its distinct values, sorted by account): the 64-bit mask of its values'
    bits (:func:`_bit_of`) and the mask of the bits that two or more of its values fall on."""
    one = np.uint64(1) << _bit_of(values)
    mask = np.zeros(n_acc, np.uint64)
    st = _runs(acc)
    mask[acc[st]] = np.bitwise_or.reduceat(one, st)
    pk = np.sort(acc.astype(np.uint64) * np.uint64(64) + _bit_of(values))
    dup = pk[1:][pk[1:] == pk[:-1]]
    clash = np.zeros(n_acc, np.uint64)
    if len(dup):
        np.bitwise_or.at(clash, (dup >> np.uint64(6)).astype(np.int64), np.uint64(1) << (dup & np.uint64(63)))
    return mask, clash


def _may_share_two(masks: tuple[np.ndarray, np.ndarray], a: np.ndarray, b: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Rows (accounts ``a``, ``b`` linked in a group of ``value``) whose pair may share a second distinct value:
    their masks meet on another bit, or one of them holds two values on this value's bit. A pair that shares
    a second value always passes, so the rows dropped are those of pairs sharing one value only."""
    mask, clash = masks
    one = np.uint64(1) << _bit_of(value)
    return ((mask[a] & mask[b] & ~one) != 0) | (((clash[a] | clash[b]) & one) != 0)


def _runs2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Run starts of the pairs (a, b) of two arrays sorted together."""
    m = len(a)
    if m == 0:
        return np.empty(0, np.int64)
    new = np.empty(m, bool)
    new[0] = True
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return np.flatnonzero(new)


def _str(x: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(x, dtype=np.int64)), pa.string())


def _table(schema: pa.Schema | None, src, dst, kind: str, weight, count, detail) -> pa.Table:
    from .edges import _IDX_SCHEMA

    schema = schema or _IDX_SCHEMA
    n = len(src)
    return pa.table({"src": pa.array(np.asarray(src, dtype=np.int64)), "dst": pa.array(np.asarray(dst, dtype=np.int64)),
                     "kind": pa.array([kind] * n, pa.string()),
                     "weight": pa.array(np.asarray(weight, dtype=np.float64)),
                     "count": pa.array(np.asarray(count, dtype=np.int64)),
                     "detail": detail.cast(pa.string()) if isinstance(detail, pa.Array) else pa.array(list(detail), pa.string())},
                    schema=schema)
