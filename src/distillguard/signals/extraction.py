"""The fast reasoning-extraction classifier: a logistic model over the YAML rule hits and hashed word
unigrams/bigrams of the prepared text. No neural network.

Features of one prompt (``x``): one binary column per extraction rule, and ``N_BUCKETS`` hashed columns
holding the count of each unigram/bigram divided by the square root of the number of n-grams. The model
file ``model.npz`` (written by bench/train_extraction.py) holds ``rule_w``, the non-zero hashed weights
(``hash_idx``, ``hash_w``), ``bias``, and ``terms``: readable n-grams behind the largest positive weights,
used for the explanation. Without a model file the rule weights from rules.yaml are used alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import text as T
from .rules import RuleSet, load_rules

__all__ = ["N_BUCKETS", "ExtractionModel", "load_model", "hashed_ngrams", "hashed_ngrams_ids", "feature_matrix"]

N_BUCKETS = 1 << 18
_UNI = np.uint64(0x51ED27)  # domain separators for unigram vs bigram hashes


def hashed_ngrams(h: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bucket index and document index of every unigram and within-document bigram."""
    uni = T.mix64(h ^ _UNI)
    bi, bdoc, _ = T.ngram_hashes(h, doc, 2)
    buckets = np.concatenate([uni, bi]) & np.uint64(N_BUCKETS - 1)  # N_BUCKETS is a power of two
    return buckets.astype(np.int64), np.concatenate([doc, bdoc]).astype(np.int64)


def hashed_ngrams_ids(table: np.ndarray, ids: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hashed_ngrams` of the tokens ``table[ids]`` (``table``: hash of each distinct token; unigram
    buckets and the first bigram step are computed once per distinct token)."""
    mask = np.uint64(N_BUCKETS - 1)
    uni = T.mix64(table ^ _UNI)
    uni &= mask
    bi, bdoc, _ = T.ngram_hashes_ids(table, T.ngram_first(table, 2), ids, doc, 2, with_pos=False)
    bi &= mask
    buckets = np.concatenate([uni.astype(np.int64)[ids], bi.astype(np.int64)])
    return buckets, np.concatenate([doc, bdoc]).astype(np.int64, copy=False)


def feature_matrix(rule_hits: np.ndarray, buckets: np.ndarray, bdoc: np.ndarray, n_docs: int) -> sp.csr_matrix:
    """The design matrix used for training (the scorer computes the same product without building it)."""
    n = np.bincount(bdoc, minlength=n_docs).astype(np.float64)
    val = 1.0 / np.sqrt(np.maximum(n[bdoc], 1.0))
    hashed = sp.csr_matrix((val, (bdoc, buckets)), shape=(n_docs, N_BUCKETS))
    return sp.hstack([sp.csr_matrix(rule_hits.astype(np.float64)), hashed], format="csr")


@dataclass
class ExtractionModel:
    rule_names: tuple[str, ...]
    rule_w: np.ndarray
    hash_w: np.ndarray  # dense, N_BUCKETS
    bias: float
    terms: dict[int, str] = field(default_factory=dict)
    trained: bool = True

    @classmethod
    def from_rules(cls, rules: RuleSet) -> "ExtractionModel":
        w = np.array([r.weight for r in rules.extraction], dtype=np.float64)
        return cls(rules.extraction_names, w, np.zeros(N_BUCKETS, np.float32), -2.0, {}, trained=False)

    @property
    def term_rank(self) -> np.ndarray:
        """int32 over the hashed columns: rank of each readable term by decreasing weight (ties: lower
        column first), -1 for the other columns (cached); the explanation lists terms in this order."""
        cached = self.__dict__.get("_term_rank")
        if cached is None or cached[0] != len(self.terms):
            keys = np.fromiter(self.terms.keys(), dtype=np.int64, count=len(self.terms))
            order = keys[np.lexsort((keys, -self.hash_w[keys]))]
            r = np.full(N_BUCKETS, -1, np.int32)
            r[order] = np.arange(len(order), dtype=np.int32)
            cached = self.__dict__["_term_rank"] = (len(self.terms), r, [self.terms[int(b)] for b in order])
        return cached[1]

    @property
    def terms_by_rank(self) -> list[str]:
        """The readable terms in :attr:`term_rank` order."""
        self.term_rank
        return self.__dict__["_term_rank"][2]

    def logits(self, rule_hits: np.ndarray, buckets: np.ndarray, bdoc: np.ndarray, n_docs: int) -> np.ndarray:
        z = rule_hits.astype(np.float64) @ self.rule_w + self.bias
        if len(buckets):
            n = np.bincount(bdoc, minlength=n_docs).astype(np.float64)
            s = np.bincount(bdoc, weights=self.hash_w[buckets].astype(np.float64), minlength=n_docs)
            z = z + s / np.sqrt(np.maximum(n, 1.0))
        return z

    def save(self, path: str | os.PathLike) -> None:
        nz = np.flatnonzero(self.hash_w)
        keys = np.array(sorted(self.terms), dtype=np.int64)
        np.savez_compressed(path, rule_names=np.array(self.rule_names), rule_w=self.rule_w,
                            hash_idx=nz.astype(np.int32), hash_w=self.hash_w[nz].astype(np.float16),
                            bias=np.array([self.bias]), term_idx=keys,
                            term_txt=np.array([self.terms[int(k)] for k in keys], dtype=str))

    @classmethod
    def load(cls, path: str | os.PathLike, rules: RuleSet) -> "ExtractionModel":
        with np.load(path, allow_pickle=False) as z:
            names = tuple(z["rule_names"].tolist())
            if names != rules.extraction_names:
                raise ValueError(f"{path}: model was trained with rules {names}, rules.yaml has "
                                 f"{rules.extraction_names}; retrain with bench/train_extraction.py")
            w = np.zeros(N_BUCKETS, np.float32)
            w[z["hash_idx"]] = z["hash_w"].astype(np.float32)
            terms = dict(zip(z["term_idx"].tolist(), z["term_txt"].tolist()))
            return cls(names, z["rule_w"].astype(np.float64), w, float(z["bias"][0]), terms)


def model_path() -> Path:
    return Path(str(resources.files("distillguard.signals").joinpath("model.npz")))


@lru_cache(maxsize=1)
def load_model() -> ExtractionModel:
    """The packaged trained model, or the rule-prior model when none is packaged."""
    rules = load_rules()
    p = model_path()
    if p.is_file():
        return ExtractionModel.load(p, rules)
    return ExtractionModel.from_rules(rules)


def featurize(system_texts, user_texts, rules: RuleSet | None = None, keep_tokens: bool = False):
    """Extraction features of many prompts, computed exactly as :func:`distillguard.signals.core.analyse`
    does: ``(rule_hits, buckets, bucket_doc)`` (and the token list of each prompt when ``keep_tokens``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rules = rules or load_rules()
    system_texts, user_texts = list(system_texts), list(user_texts)
    if len(user_texts) <= T.SMALL:
        low = [T.prepare_one(s, u or "") for s, u in zip(system_texts, user_texts)]
    else:
        system = pa.array(system_texts, pa.large_string())
        user = pc.fill_null(pa.array(user_texts, pa.large_string()), "")
        low = T.prepared_array(system, user)
    rule_hits, _ = rules.apply(low)
    toks, doc = T.split_tokens(low)
    buckets, bdoc = hashed_ngrams(T.hash_token_array(toks), doc)
    if keep_tokens:
        flat = toks.to_pylist()
        per: list[list[str]] = [[] for _ in range(len(user))]
        for d, t in zip(doc.tolist(), flat):
            per[d].append(t)
        return rule_hits, buckets, bdoc, per
    return rule_hits, buckets, bdoc


def ngram_bucket(ngram: str) -> int:
    """The hashed column of a unigram ("word") or bigram ("two words"), for readable explanations."""
    parts = ngram.split(" ")
    h = T.hash_tokens(parts)
    if len(parts) == 1:
        b = T.mix64(h ^ _UNI)
    else:
        b, _, _ = T.ngram_hashes(h, np.zeros(len(parts), np.int64), 2)
    return int(b[0] % np.uint64(N_BUCKETS))
