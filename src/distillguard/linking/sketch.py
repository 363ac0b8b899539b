"""Numpy sketches for linking: bounded pair generation in groups, MinHash/LSH and SimHash clustering.

These are the non-relational pieces of :mod:`distillguard.linking.edges`; they take and return plain
numpy arrays so they run the same whichever Ibis backend produced the inputs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["neighbor_offset", "group_pairs", "minhash_signatures", "lsh_pairs", "simhash_leaders",
           "stable_hash64"]

_MASK32 = np.uint64(0xFFFFFFFF)


def neighbor_offset(n: np.ndarray, i: int, k: int) -> np.ndarray:
    """Offset of a member's ``i``-th neighbour (0 <= i < k) in a group of ``n`` ranked members.

    Groups of at most ``k + 1`` members are linked completely (offsets 1 .. n-1). Larger groups link
    each member to k others at offsets spread geometrically up to n (``max(i+1, floor(n ** (i/k)))``),
    a small-world pattern: connected, diameter about log n, and only n*k pairs. Returns 0 where the
    offset does not apply (``i + 1 >= n`` in a small group).
    """
    n = np.asarray(n, dtype=np.int64)
    small = n <= k + 1
    off_small = np.where(i + 1 < n, i + 1, 0)
    off_large = np.maximum(i + 1, np.floor(np.power(n.astype(np.float64), i / k)).astype(np.int64))
    return np.where(small, off_small, off_large)


def group_pairs(group: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounded pairs inside groups. ``group`` is sorted (members of a group are contiguous, already in the
    order that decides who neighbours whom). Returns positions ``(a, b)`` into ``group``, ``a != b``,
    unordered duplicates possible (callers normalise and deduplicate)."""
    m = len(group)
    if m < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    change = np.flatnonzero(group[1:] != group[:-1]) + 1
    starts = np.concatenate(([0], change))
    sizes = np.diff(np.concatenate((starts, [m])))
    start_of = np.repeat(starts, sizes)
    size_of = np.repeat(sizes, sizes)
    rank = np.arange(m) - start_of
    keep = size_of >= 2
    pos, start_of, size_of, rank = np.arange(m)[keep], start_of[keep], size_of[keep], rank[keep]
    # members by decreasing group size: the i-th neighbour exists only in groups larger than i + 1 (a small
    # group's offset i + 1 must stay below its size; a large group has all k), so each step reads a prefix
    # (the same pairs as computing every step over every member, in another order)
    o = np.argsort(-size_of, kind="stable")
    pos, start_of, size_of, rank = pos[o], start_of[o], size_of[o], rank[o]
    neg = -size_of
    out_a, out_b = [], []
    for i in range(k):
        cnt = int(np.searchsorted(neg, -(i + 1), side="left"))  # members in groups of more than i + 1
        if cnt == 0:
            break
        z = size_of[:cnt]
        off = neighbor_offset(z, i, k)
        out_a.append(pos[:cnt])
        out_b.append(start_of[:cnt] + (rank[:cnt] + off) % z)
    if not out_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


def stable_hash64(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed 64-bit mix (splitmix64) of integer values; identical on every machine and run."""
    x = np.asarray(values).astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def minhash_signatures(owner: np.ndarray, items: np.ndarray, n_owners: int, num_perm: int, seed: int,
                       chunk: int = 32_768) -> np.ndarray:
    """MinHash signatures (uint32, shape ``(n_owners, num_perm)``) of the item sets ``{items[owner == o]}``.

    ``items`` are integer item hashes. Each permutation is a multiply-shift hash of a splitmix64 mix;
    owners with no items keep the all-ones signature. Items are hashed ``chunk`` at a time, in place (one
    ``chunk x num_perm`` uint64 buffer: 16 MB with the defaults; 250,000 at a time with temporaries took
    about 300 MB at once).
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63 - 1, size=num_perm, dtype=np.int64).astype(np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63 - 1, size=num_perm, dtype=np.int64).astype(np.uint64)
    sig = np.full((n_owners, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if len(owner) == 0:
        return sig
    order = np.argsort(owner, kind="stable")
    owner = np.asarray(owner)[order]
    base = stable_hash64(np.asarray(items)[order], seed)
    buf = np.empty((min(chunk, len(owner)), num_perm), np.uint64)
    for lo in range(0, len(owner), chunk):
        o = owner[lo:lo + chunk]
        t = buf[:len(o)]
        with np.errstate(over="ignore"):
            np.multiply(base[lo:lo + chunk, None], a[None, :], out=t)
            t += b[None, :]
        t >>= np.uint64(32)
        h = t.astype(np.uint32)
        starts = np.concatenate(([0], np.flatnonzero(o[1:] != o[:-1]) + 1))
        mins = np.minimum.reduceat(h, starts, axis=0)
        owners = o[starts]
        sig[owners] = np.minimum(sig[owners], mins)
    return sig


def lsh_pairs(sig: np.ndarray, rows: np.ndarray, bands: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (owner indices, ``a < b``, unique) sharing at least one LSH band of ``sig``.

    Only owners in ``rows`` take part. Buckets are linked with :func:`group_pairs` in a hash order, so
    a bucket of thousands of identical sets yields n*k candidates, not n^2.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    r = sig.shape[1] // bands
    tie = stable_hash64(rows, 99)
    out_a, out_b = [], []
    for band in range(bands):
        block = sig[rows, band * r:(band + 1) * r].astype(np.uint64)
        key = np.zeros(len(rows), dtype=np.uint64)
        for j in range(r):
            key = stable_hash64(key ^ block[:, j], band * 31 + j)
        order = np.lexsort((tie, key))
        pa_, pb_ = group_pairs(key[order], k)
        out_a.append(rows[order][pa_])
        out_b.append(rows[order][pb_])
    a = np.concatenate(out_a)
    b = np.concatenate(out_b)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    packed = np.unique(lo[keep].astype(np.int64) * (1 << 31) + hi[keep])
    return packed >> 31, packed & ((1 << 31) - 1)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x.astype(np.uint64))


def simhash_leaders(sigs: np.ndarray, weight: np.ndarray, max_distance: int, blocks: int,
                    bucket_cap: int = 64) -> np.ndarray:
    """For each distinct 64-bit SimHash in ``sigs``, the index of its leader: the heaviest signature
    (by ``weight``, ties to the smaller value) within ``max_distance`` bits, itself included.

    Near pairs are found exactly by the pigeonhole rule: split the 64 bits into ``blocks`` blocks; two
    signatures within ``max_distance`` bits agree on at least ``blocks - max_distance`` whole blocks, so
    they share a key made of that many blocks. Keys held by more than ``bucket_cap`` signatures are
    searched only among sort-order neighbours (a bound on work, at a small loss of recall).
    Leaders are one hop (no chaining), so clusters cannot creep across unrelated templates.
    """
    from itertools import combinations

    n = len(sigs)
    leader = np.arange(n)
    if n < 2:
        return leader
    u = np.asarray(sigs).astype(np.int64).view(np.uint64)
    bounds = np.linspace(0, 64, blocks + 1).astype(int)
    parts = [((u >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    best = np.arange(n)
    w = np.asarray(weight, dtype=np.float64)

    def better(c, cur):  # candidate index c beats current leader cur?
        return (w[c] > w[cur]) | ((w[c] == w[cur]) & (u[c] < u[cur]))

    for combo in combinations(range(blocks), blocks - max_distance):
        key = np.zeros(n, dtype=np.uint64)
        for j, bidx in enumerate(combo):
            key = stable_hash64(key ^ parts[bidx], 1000 + j)
        order = np.lexsort((u, key))
        a, b = group_pairs(key[order], min(bucket_cap, n))
        a, b = order[a], order[b]
        near = _popcount(u[a] ^ u[b]) <= max_distance
        a, b = a[near], b[near]
        for x, y in ((a, b), (b, a)):
            # process so each x considers y as a leader candidate; repeat until no change for ties
            upd = better(y, best[x])
            if upd.any():
                xs, ys = x[upd], y[upd]
                # several candidates for the same x: keep the best one
                o = np.lexsort((u[ys], -w[ys], xs))
                xs, ys = xs[o], ys[o]
                first = np.concatenate(([True], xs[1:] != xs[:-1]))
                xs, ys = xs[first], ys[first]
                still = better(ys, best[xs])
                best[xs[still]] = ys[still]
    leader[:] = best
    return leader
