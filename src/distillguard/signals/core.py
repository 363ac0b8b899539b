"""Per-text analysis shared by the batch (:func:`compute_signals`) and the real-time path
(:func:`score_request`): one Python pass over each distinct text (regex rules, masking, tokens), then
numpy over all texts at once (hashed features, logistic scores, SimHash, benchmark search)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import text as T
from .benchmark import BENCHMARK_CAPABILITY, SHINGLE, BenchmarkIndex
from .extraction import ExtractionModel, hashed_ngrams, hashed_ngrams_ids, load_model
from .rules import CAPABILITIES, RuleSet, load_rules

__all__ = ["Analysis", "analyse", "capability_of"]

_CAP_RANK = {c: i for i, c in enumerate(CAPABILITIES)}
_BENCH_VOTE = 3.0
_HOT = 0.5  # extraction score from which the reason lists the n-grams that drove it


@dataclass
class Analysis:
    """Signals of ``n`` distinct texts (arrays of length n)."""

    extraction_score: np.ndarray
    extraction_reason: list[str]
    capability: list[str]
    benchmark: list[str | None]
    benchmark_item: list[str | None]
    benchmark_score: np.ndarray
    template_id: list[str]
    template_sig: np.ndarray
    system_prompt_id: list[str | None]
    text_len: np.ndarray
    rule_hits: np.ndarray  # bool (n, n_rules)
    cap_votes: np.ndarray  # float (n, len(CAPABILITIES)), benchmark vote included


_ITEM = np.uint64(T.token_hashes(["ITEM"])[0])
_EMPTY_TEMPLATE = T.mix64(np.array([0x7E3A], np.uint64))[0]


def _hash_id(s: str) -> str:
    return hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def capability_of(votes: np.ndarray, n_tokens: np.ndarray) -> list[str]:
    """Winning capability per row: most votes, ties broken by :data:`CAPABILITIES` order; no vote: ``chat``
    with three or more words, else ``other``."""
    tie = -np.arange(len(CAPABILITIES)) * 1e-6
    best = np.argmax(votes + tie, axis=1)
    none = votes.max(axis=1) <= 0 if len(votes) else np.zeros(0, bool)
    out = [CAPABILITIES[k] for k in best.tolist()]
    for i in np.flatnonzero(none).tolist():
        out[i] = "chat" if n_tokens[i] >= 3 else "other"
    return out


def _as_list(xs) -> list:
    if isinstance(xs, (pa.Array, pa.ChunkedArray)):
        return xs.to_pylist()
    return list(xs)


def _as_array(xs) -> pa.Array:
    if isinstance(xs, (pa.Array, pa.ChunkedArray)):
        return xs.combine_chunks() if isinstance(xs, pa.ChunkedArray) else xs
    return pa.array(xs, pa.large_string())


def analyse(system_texts, user_texts, *, model: ExtractionModel | None = None, rules: RuleSet | None = None,
            benchmark_index: BenchmarkIndex | None = None) -> Analysis:
    """Signals of each (system, user) text pair. Inputs: lists of str/None or Arrow string arrays."""
    rules = rules or load_rules()
    model = model or load_model()
    n = len(user_texts)
    if n > T.SMALL:
        return _analyse_batch(system_texts, user_texts, n, model, rules, benchmark_index)
    # one request (the gateway): plain Python strings, patterns compiled once
    system = [None if s is None else str(s) for s in _as_list(system_texts)]
    user = ["" if u is None else str(u) for u in _as_list(user_texts)]
    low = [T.prepare_one(s, u) for s, u in zip(system, user)]

    # extraction: rules and hashed n-grams over the prepared text
    rule_hits, votes = rules.apply(low)
    toks, tdoc = T.split_tokens(low)
    buckets, bdoc = hashed_ngrams(T.hash_token_array(toks), tdoc)
    z = model.logits(rule_hits, buckets, bdoc, n)
    score = 1.0 / (1.0 + np.exp(-z))
    reasons = _reasons(score, rule_hits, rules, model, buckets, bdoc, n)

    # masked user tokens: benchmark match, template id, SimHash
    mh, md = T.masked_token_hashes_array(user)
    n_tok = np.bincount(md, minlength=n)
    bench: list[str | None] = [None] * n
    bitem: list[str | None] = [None] * n
    bscore = np.zeros(n, np.float64)
    keep = np.ones(len(mh), bool)
    mh = mh.copy()
    if benchmark_index is not None and len(benchmark_index):
        sh, sdoc, spos = T.ngram_hashes(mh, md, SHINGLE)
        best, bscore, span_s, span_e = benchmark_index.query(sh, sdoc, spos, n)
        for i in np.flatnonzero(best >= 0).tolist():
            k = int(best[i])
            b = benchmark_index.item_bench[k]
            bench[i], bitem[i] = b, benchmark_index.item_ids[k]
            votes[i, CAPABILITIES.index(BENCHMARK_CAPABILITY[b])] += _BENCH_VOTE
            # the matched item becomes one placeholder token of the template
            keep[span_s[i] + 1:span_e[i]] = False
            mh[span_s[i]] = _ITEM
    kh, kd = mh[keep], md[keep]
    template_id = _template_ids(kh, kd, n)
    bi, bid, _ = T.ngram_hashes(kh, kd, 2)
    sig = T.simhash_parts([(T.mix64(kh), kd), (bi, bid)], n)

    caps = capability_of(votes, n_tok)
    sys_ids = [_system_id(s) for s in system]
    lens = np.array([len(u) + len(s or "") for s, u in zip(system, user)], dtype=np.int32)
    return Analysis(score, reasons, caps, bench, bitem, bscore, template_id, sig, sys_ids, lens, rule_hits, votes)


def _analyse_batch(system_texts, user_texts, n: int, model: ExtractionModel, rules: RuleSet,
                   benchmark_index: BenchmarkIndex | None) -> Analysis:
    """:func:`analyse` of many texts with Arrow kernels and numpy: each text is tokenised once into ids of
    distinct tokens and every per-token hash is computed once per distinct token (same values as the
    per-request path; tests compare both)."""
    system = _as_array(system_texts).cast(pa.large_string())
    user = pc.fill_null(_as_array(user_texts).cast(pa.large_string()), "")
    low = T.prepared_array(system, user)

    # extraction: rules and hashed n-grams over the prepared text
    rule_hits, votes = rules.apply(low)
    table, ids, tdoc, _ = T.token_ids(low)
    buckets, bdoc = hashed_ngrams_ids(table, ids, tdoc)
    z = model.logits(rule_hits, buckets, bdoc, n)
    score = 1.0 / (1.0 + np.exp(-z))
    reasons = _reasons(score, rule_hits, rules, model, buckets, bdoc, n)
    del buckets, bdoc, ids, tdoc

    # masked user tokens: benchmark match, template id, SimHash; the id after the last distinct token is
    # the placeholder of a matched benchmark item
    mtable, mids, md, _ = T.token_ids(T.masked_array(user), T._mask_token)
    item_id = len(mtable)
    mtable = np.append(mtable, _ITEM)
    n_tok = np.bincount(md, minlength=n)
    bench: list[str | None] = [None] * n
    bitem: list[str | None] = [None] * n
    bscore = np.zeros(n, np.float64)
    kids, kd = mids, md
    if benchmark_index is not None and len(benchmark_index) and len(mids):
        sh, sdoc, spos = T.ngram_hashes_ids(mtable, T.ngram_first(mtable, SHINGLE), mids, md, SHINGLE)
        best, bscore, span_s, span_e = benchmark_index.query(sh, sdoc, spos, n)
        del sh, sdoc, spos
        hit = np.flatnonzero(best >= 0)
        if len(hit):
            item_bench, item_ids = benchmark_index.item_bench, benchmark_index.item_ids
            for i, k in zip(hit.tolist(), best[hit].tolist()):
                b = item_bench[k]
                bench[i], bitem[i] = b, item_ids[k]
                votes[i, _CAP_RANK[BENCHMARK_CAPABILITY[b]]] += _BENCH_VOTE
            # each matched item becomes one placeholder token of the template (spans lie in one document
            # each, so they never overlap)
            ss, se = span_s[hit], span_e[hit]
            edge = np.zeros(len(mids) + 1, np.int32)
            edge[ss + 1] += 1
            edge[se] -= 1
            keep = np.cumsum(edge[:-1]) == 0
            kids = mids.copy()
            kids[ss] = item_id
            kids, kd = kids[keep], md[keep]
    template_id = _template_ids(mtable[kids], kd, n)
    bi, bid, _ = T.ngram_hashes_ids(mtable, T.ngram_first(mtable, 2), kids, kd, 2, with_pos=False)
    sig = T.simhash_parts([(T.mix64(mtable)[kids], kd), (bi, bid)], n)

    caps = capability_of(votes, n_tok)
    sys_ids = _system_ids(system)
    lens = (pc.fill_null(pc.utf8_length(user), 0).to_numpy(zero_copy_only=False)
            + pc.fill_null(pc.utf8_length(system), 0).to_numpy(zero_copy_only=False)).astype(np.int32)
    return Analysis(score, reasons, caps, bench, bitem, bscore, template_id, sig, sys_ids, lens, rule_hits, votes)


def _template_ids(h: np.ndarray, doc: np.ndarray, n: int) -> list[str]:
    """Order-sensitive 64-bit hash of each document's token sequence, as 16 hex digits."""
    out = np.full(n, _EMPTY_TEMPLATE, np.uint64)
    if len(h):
        new_doc = np.empty(len(doc), bool)
        new_doc[0] = True
        np.not_equal(doc[1:], doc[:-1], out=new_doc[1:])
        starts = np.flatnonzero(new_doc)
        run = np.diff(starts, append=len(h))
        pos = np.arange(len(h)) - np.repeat(starts, run)
        salt = T.mix64(np.arange(int(run.max()), dtype=np.uint64) + np.uint64(0x51A7))  # per position
        x = salt[pos]
        x ^= h
        sums = np.add.reduceat(T.mix64_(x), starts)
        out[doc[starts]] = T.mix64(sums)
    return [f"{v:016x}" for v in out.tolist()]


def _system_id(s: str | None) -> str | None:
    return _hash_id(" ".join(s.lower().split())) if s and s.strip() else None


def _system_ids(system: pa.Array) -> list[str | None]:
    enc = pc.dictionary_encode(system)
    ids = [_system_id(s) for s in enc.dictionary.to_pylist()]
    idx = enc.indices
    return [None if i is None else ids[i] for i in idx.to_pylist()]


def _reasons(score, rule_hits, rules, model, buckets, bdoc, n) -> list[str]:
    names = rules.extraction_names
    w = model.rule_w
    out = []
    hot = np.flatnonzero(score >= _HOT)
    terms_of: dict[int, list[str]] = {}
    if len(hot) and model.terms:
        is_hot = np.zeros(n, bool)
        is_hot[hot] = True
        term = model.term_rank[buckets]
        sel = term >= 0
        sel &= is_hot[bdoc]
        if sel.any():
            # strongest distinct terms first, per document: one sort of (document, term rank)
            n_terms = len(model.terms)
            key = np.sort(bdoc[sel] * n_terms + term[sel])
            key = key[np.concatenate(([True], key[1:] != key[:-1]))]
            d, t = key // n_terms, key % n_terms
            first = np.concatenate(([True], d[1:] != d[:-1]))
            starts = np.flatnonzero(first)
            rank = np.arange(len(d)) - np.repeat(starts, np.diff(starts, append=len(d)))
            keep = rank < 4
            words = [repr(w) for w in model.terms_by_rank]
            for di, ti in zip(d[keep].tolist(), t[keep].tolist()):
                terms_of.setdefault(di, []).append(words[ti])
    # the rule part of a reason depends only on which rules fired: built once per distinct combination
    k = rule_hits.shape[1] if rule_hits.ndim == 2 else 0
    if n <= T.SMALL:  # one request or a few: each row its own combination
        hits_of, inv = rule_hits, np.arange(n)
    elif k:
        packed = np.packbits(rule_hits, axis=1)
        if packed.shape[1] <= 8:  # up to 64 rules: one integer key per row
            code = np.zeros(n, np.uint64)
            for j in range(packed.shape[1]):
                code = (code << np.uint64(8)) | packed[:, j]
            _, first, inv = np.unique(code, return_index=True, return_inverse=True)
        else:
            _, first, inv = np.unique(packed, axis=0, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        hits_of = rule_hits[first]
    else:
        hits_of, inv = np.zeros((1, k), bool), np.zeros(n, np.int64)
    pos_of, neg_of, tail_of = [], [], []
    for row in hits_of:
        fired = [(w[j], names[j]) for j in np.flatnonzero(row)]
        pos = ", ".join(f"{nm}({wt:+.1f})" for wt, nm in sorted(fired, reverse=True) if wt > 0)
        neg = ", ".join(f"{nm}({wt:+.1f})" for wt, nm in sorted(fired) if wt <= 0)
        pos_of.append("rules " + pos if pos else "")
        neg_of.append("look-alike " + neg if neg else "")
        tail_of.append("; ".join(p for p in (pos_of[-1], neg_of[-1]) if p) or "no extraction cue")
    out = [f"{sc:.2f}: {tail_of[c]}" for sc, c in zip(score.tolist(), inv.tolist())]
    for i, terms in terms_of.items():
        c = inv[i]
        parts = (pos_of[c], "terms " + ", ".join(terms), neg_of[c])
        out[i] = f"{score[i]:.2f}: " + "; ".join(p for p in parts if p)
    return out
