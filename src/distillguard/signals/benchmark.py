"""Near-duplicate search of prompts against public task sets (GSM8K, MATH, HumanEval, MBPP, MMLU).

Each benchmark item is masked (numbers, names, quoted spans), tokenised and cut into word 5-gram shingles;
shingles shared by more than a few items (boilerplate) are dropped. A prompt matches an item when it
contains at least ``threshold`` of the item's shingles, so wrapper text around the question (an extraction
template, a system prompt) does not hurt, and a small edit only loses the few shingles it touches.

The index is built from the corpora folder read in place (:mod:`distillguard.corpora`) and cached as an
``.npz`` under the user cache directory, keyed by the corpora files' names, sizes and modification times.
Without corpora the index is empty and every prompt gets ``benchmark = null``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from . import text as T

__all__ = ["BenchmarkIndex", "BENCHMARK_SOURCES", "cache_dir", "SHINGLE"]

#: benchmark name -> corpora short names (distillguard.corpora.CORPORA) indexed under it
BENCHMARK_SOURCES: dict[str, tuple[str, ...]] = {
    "gsm8k": ("gsm8k", "gsm8k_train"),
    "math": ("math", "math500"),
    "humaneval": ("humaneval",),
    "mbpp": ("mbpp",),
    "mmlu": ("mmlu",),
}
#: which capability each benchmark implies
BENCHMARK_CAPABILITY = {"gsm8k": "math", "math": "math", "humaneval": "code", "mbpp": "code", "mmlu": "reasoning"}

SHINGLE = 5
INDEX_VERSION = 4
MAX_ITEMS_PER_SHINGLE = 5
MIN_ITEM_SHINGLES = 3
_BITMAP_BITS = 28
#: query shingles from which distinct ones are searched in sorted order
_SORTED_LOOKUP_MIN = 4096


def cache_dir() -> Path:
    """``$DISTILLGUARD_CACHE``, else ``$XDG_CACHE_HOME/distillguard``, else ``~/.cache/distillguard``."""
    if os.environ.get("DISTILLGUARD_CACHE"):
        return Path(os.environ["DISTILLGUARD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distillguard"


def masked_token_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes (uint64) and document index of the masked, lower-cased texts, concatenated (the same
    masking as the prompts get in :func:`distillguard.signals.core.analyse`)."""
    import pyarrow as pa

    return T.masked_token_hashes_array(pa.array(texts, pa.large_string()))


class BenchmarkIndex:
    """Sorted shingle hashes of public task-set items, queried in bulk with ``numpy.searchsorted``."""

    def __init__(self, hashes: np.ndarray, item: np.ndarray, item_n: np.ndarray, item_ids: list[str],
                 item_bench: list[str], threshold: float = 0.5):
        order = np.argsort(hashes, kind="stable")
        self.hashes = np.asarray(hashes, dtype=np.uint64)[order]
        self.item = np.asarray(item, dtype=np.int32)[order]
        self.item_n = np.asarray(item_n, dtype=np.int32)
        self.item_ids = list(item_ids)
        self.item_bench = list(item_bench)
        self.threshold = float(threshold)
        # bitmap prefilter: most query shingles are in no item, and a bitmap lookup is far cheaper than a
        # binary search over the sorted hashes
        # end of each run of equal hashes (a shingle shared by several items), so a query needs one search
        ends = np.append(np.flatnonzero(self.hashes[1:] != self.hashes[:-1]) + 1, len(self.hashes))
        self._run_end = np.repeat(ends, np.diff(ends, prepend=0)).astype(np.int32)
        # (one bit per slot, packed: 2^28 bits = 32 MiB keeps it sparse for millions of shingles)
        slots = (self.hashes >> np.uint64(64 - _BITMAP_BITS)).astype(np.int64)
        self._bits = np.zeros(1 << (_BITMAP_BITS - 3), dtype=np.uint8)
        np.bitwise_or.at(self._bits, slots >> 3, (1 << (slots & 7)).astype(np.uint8))

    def _maybe(self, sh: np.ndarray) -> np.ndarray:
        """Boolean: which query shingle hashes may be in the index (no false negatives)."""
        slots = (sh >> np.uint64(64 - _BITMAP_BITS)).astype(np.int64)
        return ((self._bits[slots >> 3] >> (slots & 7).astype(np.uint8)) & 1).astype(bool)

    def __len__(self) -> int:
        return len(self.item_ids)

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> "BenchmarkIndex":
        return cls(np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.int32), [], [])

    @classmethod
    def from_items(cls, items: list[tuple[str, str, str]], threshold: float = 0.5) -> "BenchmarkIndex":
        """Build from ``(benchmark, item_id, text)`` triples."""
        texts = [t for _, _, t in items]
        h, doc = masked_token_hashes(texts)
        sh, sdoc, _ = T.ngram_hashes(h, doc, SHINGLE)
        # one entry per (item, shingle)
        key = np.unique(np.stack([sdoc.astype(np.uint64), sh]), axis=1) if len(sh) else np.empty((2, 0), np.uint64)
        sdoc, sh = key[0].astype(np.int64), key[1]
        # drop boilerplate shingles shared by many items
        uniq, inv, cnt = np.unique(sh, return_inverse=True, return_counts=True)
        keep = cnt[inv] <= MAX_ITEMS_PER_SHINGLE
        sdoc, sh = sdoc[keep], sh[keep]
        item_n = np.bincount(sdoc, minlength=len(items))
        good = item_n >= MIN_ITEM_SHINGLES
        # renumber the items that keep enough shingles
        new_id = np.cumsum(good) - 1
        keep = good[sdoc]
        return cls(sh[keep], new_id[sdoc[keep]], item_n[good],
                   [items[i][1] for i in np.flatnonzero(good)], [items[i][0] for i in np.flatnonzero(good)],
                   threshold)

    @classmethod
    def from_corpora(cls, corpora_dir: str | os.PathLike | None = None, *, cache: bool = True,
                     threshold: float = 0.5) -> "BenchmarkIndex":
        """Index the public task sets found in the corpora folder (empty index when there is none).
        The built index is cached under :func:`cache_dir`, keyed by the corpora files' sizes/mtimes."""
        from distillguard import corpora as C

        folder = C.find_corpora_dir(corpora_dir)
        if folder is None:
            return cls.empty()
        files = []
        for bench, names in BENCHMARK_SOURCES.items():
            for name in names:
                p = folder / C.CORPORA[name][0]
                if p.is_file():
                    files.append((bench, name, p))
        if not files:
            return cls.empty()
        h = hashlib.sha256(f"v{INDEX_VERSION}/{SHINGLE}/{MAX_ITEMS_PER_SHINGLE}".encode())
        for _, name, p in files:
            st = p.stat()
            h.update(f"|{name}:{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        path = cache_dir() / f"benchmark-index-{h.hexdigest()[:20]}.npz"
        if cache and path.is_file():
            try:
                return cls.load(path, threshold=threshold)
            except (OSError, ValueError, KeyError):
                pass  # corrupt cache: rebuild
        items = []
        for bench, name, _ in files:
            for it in C.iter_items(name, folder):
                items.append((bench, it.item_id, it.text))
        index = cls.from_items(items, threshold=threshold)
        if cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                index.save(path)
            except OSError:
                pass  # read-only home: run without a cache
        return index

    def save(self, path: str | os.PathLike) -> None:
        tmp = Path(str(path) + ".tmp.npz")
        np.savez_compressed(tmp, hashes=self.hashes, item=self.item, item_n=self.item_n,
                            item_ids=np.array(self.item_ids, dtype=object).astype(str),
                            item_bench=np.array(self.item_bench, dtype=object).astype(str))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, threshold: float = 0.5) -> "BenchmarkIndex":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["hashes"], z["item"], z["item_n"], z["item_ids"].tolist(), z["item_bench"].tolist(),
                       threshold)

    # --- query --------------------------------------------------------------------------------------

    def query(self, sh: np.ndarray, sdoc: np.ndarray, spos: np.ndarray, n_docs: int):
        """Best item per document from its shingles (hash, doc index, flat start position).

        Returns ``(item, score, span_start, span_end)``: item index or -1, the share of the item's shingles
        found (0 when below threshold), and the flat token span [start, end) covered by the matching
        shingles (-1 when none)."""
        best = np.full(n_docs, -1, np.int64)
        score = np.zeros(n_docs, np.float64)
        span_s = np.full(n_docs, -1, np.int64)
        span_e = np.full(n_docs, -1, np.int64)
        if not len(self.hashes) or not len(sh):
            return best, score, span_s, span_e
        maybe = self._maybe(sh)
        sh, sdoc, spos = sh[maybe], sdoc[maybe], spos[maybe]
        # shingles repeat across prompts (one task in many wrappers): search each distinct one once, in
        # sorted order (binary searches over neighbouring keys stay in cache)
        if len(sh) > _SORTED_LOOKUP_MIN:
            uniq, inv = np.unique(sh, return_inverse=True)
            lo = np.searchsorted(self.hashes, uniq, "left")[inv]
        else:  # one request: the sort would cost more than it saves
            lo = np.searchsorted(self.hashes, sh, "left")
        # most shingles are absent: the right bound only for those found at lo
        hit = np.flatnonzero(self.hashes[np.minimum(lo, len(self.hashes) - 1)] == sh)
        if not len(hit):
            return best, score, span_s, span_e
        lo_hit = lo[hit]
        reps = self._run_end[lo_hit] - lo_hit
        q = np.repeat(hit, reps)  # query shingle index of each (shingle, item) hit
        offs = np.arange(len(q)) - np.repeat(np.cumsum(reps) - reps, reps)
        items = self.item[np.repeat(lo_hit, reps) + offs].astype(np.int64)
        d = sdoc[q].astype(np.int64)
        pair = d * (len(self.item_ids) + 1) + items
        upair, inv, cnt = np.unique(pair, return_inverse=True, return_counts=True)
        pdoc = upair // (len(self.item_ids) + 1)
        pitem = upair % (len(self.item_ids) + 1)
        pscore = np.minimum(cnt / self.item_n[pitem], 1.0)
        # best pair per doc: sort by (doc, -score, item)
        order = np.lexsort((pitem, -pscore, pdoc))
        po = pdoc[order]
        lead = np.empty(len(po), bool)
        lead[:1] = True
        np.not_equal(po[1:], po[:-1], out=lead[1:])
        first = order[lead]
        ok = first[pscore[first] >= self.threshold]
        best[pdoc[ok]] = pitem[ok]
        score[pdoc[ok]] = pscore[ok]
        # span of the winning pair's shingles
        win = np.zeros(len(upair), bool)
        win[ok] = True
        sel = win[inv]
        if sel.any():
            wd = d[sel]
            wp = spos[q[sel]]
            np.minimum.at(span_s_init := np.full(n_docs, np.iinfo(np.int64).max, np.int64), wd, wp)
            np.maximum.at(span_e, wd, wp + SHINGLE)
            span_s = np.where(span_e >= 0, span_s_init, -1)
        return best, score, span_s, span_e
