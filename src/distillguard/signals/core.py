"""Per-text analysis shared by the batch (:func:`compute_signals`) and the real-time path
(:func:`score_request`): one Python pass over each distinct text (regex rules, masking, tokens), then
numpy over all texts at once (hashed features, logistic scores, SimHash, benchmark search)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from . import text as T
from .benchmark import BENCHMARK_CAPABILITY, SHINGLE, BenchmarkIndex
from .extraction import ExtractionModel, hashed_ngrams, load_model
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
    tool_vote: np.ndarray  # bool: the text itself reads as a tool-use prompt


def _hash_id(s: str) -> str:
    return hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def capability_of(scores: dict[str, float], n_tokens: int) -> str:
    if not scores:
        return "chat" if n_tokens >= 3 else "other"
    return max(scores.items(), key=lambda kv: (kv[1], -_CAP_RANK[kv[0]]))[0]


def analyse(system_texts: list[str | None], user_texts: list[str], *, model: ExtractionModel | None = None,
            rules: RuleSet | None = None, benchmark_index: BenchmarkIndex | None = None) -> Analysis:
    rules = rules or load_rules()
    model = model or load_model()
    n = len(user_texts)
    n_rules = len(rules.extraction)
    lows: list[str] = []
    tok_sets: list[set] = []
    ext_toks: list[str] = []
    ext_d: list[int] = []
    m_toks: list[list[str]] = []
    m_flat: list[str] = []
    m_d: list[int] = []
    sys_ids: list[str | None] = []
    lens = np.zeros(n, dtype=np.int32)
    for i in range(n):
        s = system_texts[i]
        u = user_texts[i] or ""
        low = T.prepare(s, u)
        lows.append(low)
        et = T.tokens(low)
        tok_sets.append(set(et))
        ext_toks.extend(et)
        ext_d.extend([i] * len(et))
        mt = T.tokens(T.mask(u).lower())
        m_toks.append(mt)
        m_flat.extend(mt)
        m_d.extend([i] * len(mt))
        if s and s.strip():
            sys_ids.append(_hash_id(" ".join(s.lower().split())))
        else:
            sys_ids.append(None)
        lens[i] = len(u) + (len(s) if s else 0)
    rule_hits, cap_scores = rules.apply(lows, tok_sets)
    del tok_sets
    ext_h = T.hash_tokens(ext_toks)
    m_h = T.hash_tokens(m_flat)

    # extraction score
    eh = ext_h
    ed = np.asarray(ext_d, dtype=np.int64)
    buckets, bdoc = hashed_ngrams(eh, ed)
    z = model.logits(rule_hits, buckets, bdoc, n)
    score = 1.0 / (1.0 + np.exp(-z))
    reasons = _reasons(score, rule_hits, rules, model, buckets, bdoc, n)

    # benchmark match on masked user-text shingles
    mh = m_h
    md = np.asarray(m_d, dtype=np.int64)
    bench: list[str | None] = [None] * n
    bitem: list[str | None] = [None] * n
    bscore = np.zeros(n, np.float64)
    keep = np.ones(len(mh), bool)
    if benchmark_index is not None and len(benchmark_index):
        sh, sdoc, spos = T.ngram_hashes(mh, md, SHINGLE)
        best, bscore, span_s, span_e = benchmark_index.query(sh, sdoc, spos, n)
        for i in np.flatnonzero(best >= 0):
            k = int(best[i])
            bench[i] = benchmark_index.item_bench[k]
            bitem[i] = benchmark_index.item_ids[k]
            keep[span_s[i]:span_e[i]] = False
        if (best >= 0).any():
            # replace the matched item in the template by a placeholder
            starts = np.r_[0, np.cumsum([len(t) for t in m_toks])]
            for i in np.flatnonzero(best >= 0):
                a, b = int(span_s[i] - starts[i]), int(span_e[i] - starts[i])
                m_toks[i] = m_toks[i][:a] + ["ITEM"] + m_toks[i][b:]

    # templates: id of the masked token sequence, SimHash of its unigrams + bigrams
    template_id = [_hash_id(" ".join(t)) for t in m_toks]
    kh, kd = mh[keep], md[keep]
    bi, bid, _ = T.ngram_hashes(kh, kd, 2)
    feats = np.concatenate([T.mix64(kh), bi])
    fdoc = np.concatenate([kd, bid])
    sig = T.simhash(feats, fdoc, n)

    # capability
    caps = []
    tool_vote = np.zeros(n, bool)
    for i in range(n):
        sc = cap_scores[i]
        if bench[i] is not None:
            sc = dict(sc)
            c = BENCHMARK_CAPABILITY[bench[i]]
            sc[c] = sc.get(c, 0.0) + _BENCH_VOTE
        caps.append(capability_of(sc, len(m_toks[i])))
        tool_vote[i] = "tool_use" in sc

    return Analysis(score, reasons, caps, bench, bitem, bscore, template_id, sig, sys_ids, lens, rule_hits,
                    tool_vote)


def _reasons(score, rule_hits, rules, model, buckets, bdoc, n) -> list[str]:
    names = rules.extraction_names
    w = model.rule_w
    out = []
    hot = np.flatnonzero(score >= _HOT)
    terms_of: dict[int, list[str]] = {}
    if len(hot) and model.terms:
        term_keys = np.fromiter(model.terms.keys(), dtype=np.int64)
        sel = np.isin(bdoc, hot) & np.isin(buckets, term_keys)
        for d, b in zip(bdoc[sel].tolist(), buckets[sel].tolist()):
            lst = terms_of.setdefault(d, [])
            t = model.terms[b]
            if t not in lst:
                lst.append(t)
        for d, lst in terms_of.items():
            lst.sort(key=lambda t: -model.hash_w[_bucket_of(model, t)])
    for i in range(n):
        fired = [(w[j], names[j]) for j in np.flatnonzero(rule_hits[i])]
        pos = [f"{nm}({wt:+.1f})" for wt, nm in sorted(fired, reverse=True) if wt > 0]
        neg = [f"{nm}({wt:+.1f})" for wt, nm in sorted(fired) if wt <= 0]
        parts = []
        if pos:
            parts.append("rules " + ", ".join(pos))
        if i in terms_of:
            parts.append("terms " + ", ".join(repr(t) for t in terms_of[i][:4]))
        if neg:
            parts.append("look-alike " + ", ".join(neg))
        if not parts:
            parts.append("no extraction cue")
        out.append(f"{score[i]:.2f}: " + "; ".join(parts))
    return out


def _bucket_of(model: ExtractionModel, term: str) -> int:
    inv = getattr(model, "_term_bucket", None)
    if inv is None:
        inv = {t: b for b, t in model.terms.items()}
        model._term_bucket = inv  # type: ignore[attr-defined]
    return inv[term]
