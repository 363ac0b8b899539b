"""Numpy sketches behind linking: bounded group pairs, MinHash/LSH and SimHash leaders."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from distillguard.linking.sketch import group_pairs, lsh_pairs, minhash_signatures, simhash_leaders


def test_small_groups_complete_large_groups_bounded_and_connected():
    groups = np.repeat([0, 1, 2], [5, 9, 1000])
    a, b = group_pairs(groups, 8)
    assert (groups[a] == groups[b]).all() and (a != b).all()
    pairs = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}
    assert len([p for p in pairs if p[0] < 5]) == 10  # 5 members: all 10 pairs
    assert len([p for p in pairs if 5 <= p[0] < 14]) == 36  # 9 = k + 1 members: complete
    big = [p for p in pairs if p[0] >= 14]
    assert len(big) <= 1000 * 8
    deg = np.bincount(np.array(big).ravel() - 14, minlength=1000)
    assert deg.max() <= 16 and deg.min() >= 8
    m = coo_matrix((np.ones(len(big)), (np.array(big)[:, 0] - 14, np.array(big)[:, 1] - 14)), shape=(1000, 1000))
    assert connected_components(m, directed=False)[0] == 1


def test_minhash_estimates_jaccard_and_lsh_finds_similar_sets():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 10**9, 40)
    sets = [base, base[:30], np.concatenate([base[:20], rng.integers(0, 10**9, 20)]), rng.integers(0, 10**9, 40)]
    owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(sets)])
    items = np.concatenate(sets)
    sig = minhash_signatures(owner, items, 4, 128, seed=1)
    est = lambda i, j: (sig[i] == sig[j]).mean()  # noqa: E731
    assert abs(est(0, 1) - 0.75) < 0.12
    assert abs(est(0, 2) - 20 / 60) < 0.12
    assert est(0, 3) < 0.1
    a, b = lsh_pairs(sig, np.arange(4), 32, 8)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert (0, 1) in pairs and (0, 3) not in pairs and all(x < y for x, y in pairs)


def test_minhash_signatures_do_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(3)
    owner = rng.integers(0, 50, 3000)  # owners' items fall in several chunks
    items = rng.integers(0, 2**40, 3000)
    whole = minhash_signatures(owner, items, 60, 64, seed=7, chunk=10**6)
    assert (whole[50:] == np.iinfo(np.uint32).max).all()  # owners without items keep the all-ones signature
    for chunk in (1, 7, 1000):
        assert np.array_equal(minhash_signatures(owner, items, 60, 64, seed=7, chunk=chunk), whole)
    # the multiply-shift hash, written out for one owner
    rng2 = np.random.default_rng(7)
    a = rng2.integers(1, 2**63 - 1, size=64, dtype=np.int64).astype(np.uint64) | np.uint64(1)
    b = rng2.integers(0, 2**63 - 1, size=64, dtype=np.int64).astype(np.uint64)
    from distillguard.linking.sketch import stable_hash64
    mine = stable_hash64(items[owner == 0], 7)
    with np.errstate(over="ignore"):
        expect = ((mine[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32).min(axis=0)
    assert np.array_equal(whole[0], expect)


def test_simhash_leaders_group_near_duplicates_only():
    rng = np.random.default_rng(5)
    centre = int(rng.integers(0, 2**62))
    near = [centre ^ (1 << 3), centre ^ (1 << 40) ^ (1 << 7), centre ^ (1 << 1) ^ (1 << 20) ^ (1 << 60)]
    far = [int(x) for x in rng.integers(0, 2**62, 50)]
    sigs = np.array([centre] + near + far, dtype=np.int64)
    uses = np.array([10, 1, 1, 1] + [1] * 50, dtype=float)
    lead = simhash_leaders(sigs, uses, 3, 5)
    assert (lead[:4] == 0).all()
    assert (lead[4:] == np.arange(4, 54)).all()


def test_group_pairs_gives_every_neighbour_of_the_full_rule():
    """group_pairs reads only the groups large enough for each step; the pairs are those of applying
    neighbor_offset at every step to every member (the plain rule)."""
    from distillguard.linking.sketch import neighbor_offset

    rng = np.random.default_rng(7)
    for _ in range(20):
        groups = np.sort(rng.zipf(1.4, int(rng.integers(2, 3000))) % int(rng.integers(1, 300)))
        for k in (1, 4, 8, 64):
            m = len(groups)
            starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
            sizes = np.diff(np.r_[starts, m])
            start_of, size_of = np.repeat(starts, sizes), np.repeat(sizes, sizes)
            rank = np.arange(m) - start_of
            want = set()
            for i in range(k):
                off = neighbor_offset(size_of, i, k)
                for p in np.flatnonzero((off > 0) & (size_of >= 2)):
                    want.add((int(p), int(start_of[p] + (rank[p] + off[p]) % size_of[p])))
            a, b = group_pairs(groups, k)
            got = list(zip(a.tolist(), b.tolist()))
            assert len(got) == len(set(got)) and set(got) == want
