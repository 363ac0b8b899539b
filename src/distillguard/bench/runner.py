"""The detection benchmark: distillguard's detector and the baselines on the same traffic, in one run.

For each scenario: simulate (or load) test traffic and a benign baseline from another seed, fit every
method on the baseline's benign accounts, score the test traffic, compute the metrics of
:mod:`distillguard.bench.metrics`, then replay the test traffic in time order to measure detection delay.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from distillguard.bench import metrics as M
from distillguard.bench.baselines import BASELINES, AccountBaseline
from distillguard.bench.embed import HashEmbedder, event_texts
from distillguard.bench.traffic import Traffic

__all__ = ["FRACTIONS", "QUICK_FRACTIONS", "TARGETS", "Method", "BaselineMethod", "DetectorMethod",
           "available_methods", "evaluate", "run_scenario"]

#: replay cut points, as fractions of each campaign's requests
FRACTIONS = (0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
QUICK_FRACTIONS = (0.005, 0.01, 0.05, 0.25, 1.0)

#: the detector's targets (issue 3): metric -> (comparison, value)
TARGETS = {
    "attack_recall": (">=", 0.95),
    "benign_fpr": ("<=", 0.001),
    "persona_fpr_max": ("<=", 0.005),
    "campaign_recall": (">=", 1.0),
    "median_delay_requests": ("<=", 0.01),
}


@dataclass
class AccountResult:
    accounts: list[str]
    score: np.ndarray
    flagged: np.ndarray
    campaign: list | None = None  # the linked campaign of each account, for methods that link accounts


class Method:
    """One column of the benchmark: fitted on the baseline, scoring prefixes of the test stream."""

    name = ""

    def fit(self, baseline: Traffic) -> None:
        raise NotImplementedError

    def prepare(self, test: Traffic) -> None:
        """Per-test-stream work shared by every prefix (e.g. embedding every prompt once)."""

    def run(self, test: Traffic, k: int, accounts: set | None = None) -> AccountResult:
        """Score the first ``k`` events (time order) of ``test``. ``accounts``: only these accounts' flags
        are needed (a method whose account scores are independent of other accounts may skip the rest)."""
        raise NotImplementedError


class BaselineMethod(Method):
    def __init__(self, baseline: AccountBaseline, embedder_cache: dict):
        self.model = baseline
        self.name = baseline.name
        self._cache = embedder_cache  # shared between text baselines: one fit, one embedding per stream

    def _embedder(self, baseline: Traffic, benign: pa.Table) -> HashEmbedder:
        key = ("embedder", id(baseline), self.model.embed_dim, self.model.seed)
        if key not in self._cache:
            self._cache[key] = HashEmbedder(dim=self.model.embed_dim, seed=self.model.seed).fit(event_texts(benign))
        return self._cache[key]

    def _embed(self, key, embedder: HashEmbedder, table: pa.Table) -> np.ndarray:
        key = ("emb", key, id(embedder))
        if key not in self._cache:
            self._cache[key] = embedder.transform(event_texts(table))
        return self._cache[key]

    def warm(self, baseline: Traffic, test: Traffic) -> None:
        """Fit the shared embedder and embed the baseline and test streams (cached for every text baseline)."""
        benign = baseline.benign_events()
        emb = self._embedder(baseline, benign)
        self._embed(("baseline", id(baseline)), emb, benign)
        self._embed(("test", id(test)), emb, test.events)

    def fit(self, baseline: Traffic) -> None:
        benign = baseline.benign_events()
        ids = np.asarray(benign.column("account_id").to_pylist(), dtype=object)
        ts = _ts(benign)
        emb = None
        if self.model.uses_embedding:
            self.model.embedder_ = self._embedder(baseline, benign)
            emb = self._embed(("baseline", id(baseline)), self.model.embedder_, benign)
        self.model.fit_arrays(ids, ts, emb)

    def prepare(self, test: Traffic) -> None:
        self._ids = np.asarray(test.events.column("account_id").to_pylist(), dtype=object)
        self._ts = _ts(test.events)
        self._emb = self._embed(("test", id(test)), self.model.embedder_, test.events) \
            if self.model.uses_embedding else None
        self._names, self._codes = np.unique(self._ids.astype(str), return_inverse=True)
        self._memo: dict = {}  # (account, rows seen) -> (score, flagged)

    def run(self, test: Traffic, k: int, accounts: set | None = None) -> AccountResult:
        ids, ts = self._ids[:k], self._ts[:k]
        emb = None if self._emb is None else self._emb[:k]
        if accounts is None:
            out = self.model.score_arrays(ids, ts, emb)
            return AccountResult(out.column("account_id").to_pylist(),
                                 np.asarray(out.column("score").to_pylist(), dtype=float),
                                 np.asarray(out.column("flagged").to_pylist(), dtype=bool))
        # replay: baseline scores are per account and depend only on that account's rows so far, so score
        # only the accounts asked about, and only those with new rows since they were last scored
        codes = self._codes[:k]
        wanted = np.flatnonzero(np.isin(self._names, list(accounts)))
        counts = np.bincount(codes, minlength=len(self._names))
        todo = [c for c in wanted if counts[c] and (self._names[c], int(counts[c])) not in self._memo]
        if todo:
            keep = np.isin(codes, todo)
            out = self.model.score_arrays(ids[keep], ts[keep], None if emb is None else emb[keep])
            for a, sc, f in zip(out.column("account_id").to_pylist(), out.column("score").to_pylist(),
                                out.column("flagged").to_pylist()):
                self._memo[(a, int(counts[np.searchsorted(self._names, a)]))] = (sc, f)
        got = [(str(self._names[c]), self._memo[(self._names[c], int(counts[c]))]) for c in wanted if counts[c]]
        return AccountResult([a for a, _ in got], np.array([v[0] for _, v in got], dtype=float),
                             np.array([v[1] for _, v in got], dtype=bool))


class DetectorMethod(Method):
    """distillguard's own detector through :class:`distillguard.detect.Scanner`: fitted once on the
    baseline, then run on each prefix. Per-request signals do not depend on the prefix, so they are
    computed once for the whole test stream and sliced."""

    name = "distillguard"

    def __init__(self, target_fpr: float = 0.001):
        from distillguard.detect import Scanner  # noqa: F401  (ImportError: engine not available)

        self.target_fpr = target_fpr

    def fit(self, baseline: Traffic) -> None:
        from distillguard.detect import Allowlist, DetectConfig, Scanner

        self.scanner_ = Scanner(DetectConfig(target_fpr=self.target_fpr),
                                Allowlist(accounts={a: "licensed (scenario allowlist)" for a in baseline.allowlist}))
        self.scanner_.fit(baseline.benign_events(), label="bench baseline (benign accounts of another seed)")

    def prepare(self, test: Traffic) -> None:
        from distillguard.detect import Allowlist

        self.scanner_.allowlist = Allowlist(accounts={a: "licensed (scenario allowlist)" for a in test.allowlist})
        self._ids = test.events.column("event_id")
        self._full_signals = self.scanner_.signals(test.events)
        full_signals, ids = self._full_signals, self._ids
        compute = type(self.scanner_).signals.__get__(self.scanner_)

        def cached_signals(events: pa.Table) -> pa.Table:
            k = events.num_rows
            if (0 < k <= full_signals.num_rows and full_signals.column("event_id")[k - 1] == ids[k - 1]
                    and events.column("event_id")[k - 1] == ids[k - 1]):
                return full_signals.slice(0, k)
            return compute(events)

        self.scanner_.signals = cached_signals

    def run(self, test: Traffic, k: int, accounts: set | None = None) -> AccountResult:
        res = self.scanner_.scan(test.events.slice(0, k))  # linking needs every account: no shortcut
        acc = res.accounts
        return AccountResult(acc.column("account_id").to_pylist(),
                             np.asarray(acc.column("score").to_pylist(), dtype=float),
                             np.asarray(acc.column("flagged").to_pylist(), dtype=bool),
                             acc.column("campaign_id").to_pylist())


def _ts(table: pa.Table) -> np.ndarray:
    return table.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(
        zero_copy_only=False)


def available_methods(target_fpr: float = 0.001, seed: int = 0, detector: bool = True) -> list[Method]:
    """The detector (when ``distillguard.detect.scan`` exists) followed by every baseline."""
    methods: list[Method] = []
    if detector:
        try:
            methods.append(DetectorMethod(target_fpr))
        except ImportError:
            pass
    cache: dict = {}
    methods += [BaselineMethod(cls(target_fpr=target_fpr, seed=seed), cache) for cls in BASELINES]
    return methods


def _align(test: Traffic, res: AccountResult) -> tuple[np.ndarray, np.ndarray]:
    """Score and flag per labelled account (NaN / False for accounts the method did not return);
    allowlisted accounts are never flagged (licence policy, applied to every method alike)."""
    pos = {a: i for i, a in enumerate(test.accounts)}
    score = np.full(len(test.accounts), np.nan)
    flag = np.zeros(len(test.accounts), dtype=bool)
    for a, s, f in zip(res.accounts, res.score, res.flagged):
        i = pos.get(a)
        if i is not None:
            score[i] = s
            flag[i] = bool(f) and a not in test.allowlist
    return score, flag


def _linked(test: Traffic, res: AccountResult) -> list | None:
    """The linked campaign per labelled account (None where the method links nothing)."""
    if res.campaign is None:
        return None
    of = dict(zip(res.accounts, res.campaign))
    return [of.get(a) for a in test.accounts]


def evaluate(test: Traffic, score: np.ndarray, flagged: np.ndarray, linked: list | None = None) -> dict:
    """Account-level metrics of one method on one labelled stream; ``linked`` (each account's linked
    campaign, for methods that link) adds the campaign-linking figures."""
    y = test.is_attack
    persona = M.fpr_by_group(test.groups, y, flagged)
    # the per-persona target is on the hard negatives when the scenario names them, else every benign group
    hard = {g: v for g, v in persona.items() if g in test.hard_negatives} or persona
    campaign_ids = [test.campaign_of.get(a) for a in test.accounts]
    c_recall, c_shares = M.campaign_recall(campaign_ids, flagged)
    link = M.campaign_linking(campaign_ids, linked) if linked is not None else {
        "completeness": {}, "completeness_mean": math.nan, "purity_mean": math.nan, "mixed": math.nan}
    return {
        "attack_recall": M.recall(y, flagged),
        "benign_fpr": M.false_positive_rate(y, flagged),
        "persona_fpr": persona,
        "persona_fpr_max": max(hard.values()) if hard else math.nan,
        "hard_negatives": sorted(hard),
        "flag_share_by_group": M.flag_share_by_group(test.groups, flagged),
        "campaign_recall": c_recall,
        "campaign_flag_share": c_shares,
        "campaign_completeness": link["completeness"],
        "campaign_completeness_mean": link["completeness_mean"],
        "campaign_purity": link["purity_mean"],
        "campaigns_mixed": link["mixed"],
        "average_precision": M.average_precision(y, score),
        "n_flagged": int(flagged.sum()),
        "n_benign_flagged": int((flagged & ~y).sum()),
    }


def replay(test: Traffic, method: Method, fractions: Sequence[float], max_scans: int | None = 60) -> dict:
    """Time-ordered replay: the share of each campaign's requests and reasoning tokens served before the
    method first flags one of its accounts."""
    ev = test.events
    ts = _ts(ev)
    req_campaign = [test.campaign_of.get(a) for a in ev.column("account_id").to_pylist()]
    rt = ev.column("reasoning_tokens").to_numpy(zero_copy_only=False) if "reasoning_tokens" in ev.column_names else None
    cuts = M.replay_cut_times(ts, req_campaign, fractions)
    n_scans = 0

    def flagged_at(cut, pending) -> set:
        nonlocal n_scans
        n_scans += 1
        k = int(np.searchsorted(ts, cut, side="right"))
        res = method.run(test, k, accounts={a for a, c in test.campaign_of.items() if c in pending})
        hits = set()
        for a, f in zip(res.accounts, res.flagged):
            c = test.campaign_of.get(a)
            if f and c in pending and a not in test.allowlist:
                hits.add(c)
        return hits

    first = M.replay_first_flag(cuts, flagged_at, max_scans=max_scans)
    delays = M.detection_delay(ts, req_campaign, first, None if rt is None else np.asarray(rt, dtype=float))
    req = [d["requests"] for d in delays.values()]
    tok = [d["reasoning_tokens"] for d in delays.values()]
    return {
        "per_campaign": delays,
        "median_delay_requests": float(np.median(req)) if req else math.nan,
        "median_delay_reasoning_tokens": float(np.median(tok)) if tok else math.nan,
        "max_delay_requests": float(np.max(req)) if req else math.nan,
        "replay_scans": n_scans,
    }


def run_scenario(test: Traffic, baseline: Traffic, methods: Sequence[Method],
                 fractions: Sequence[float] = FRACTIONS, max_scans: int | None = 60,
                 log: Callable[[str], None] | None = None, scores: dict | None = None) -> dict:
    """Every method on one scenario: ``{method name: metrics + delay + timings}``. ``scores``, when given,
    receives ``{method name: (score, flagged)}`` arrays aligned with ``test.accounts``."""
    out: dict = {}
    text = [m for m in methods if isinstance(m, BaselineMethod) and m.model.uses_embedding]
    if text:  # the shared embedding, timed on its own rather than charged to the first text baseline
        t0 = time.perf_counter()
        text[0].warm(baseline, test)
        embed_s = time.perf_counter() - t0
        if log:
            log(f"embedding (shared by {', '.join(m.name for m in text)}): {embed_s:.1f}s")
    for m in methods:
        t0 = time.perf_counter()
        m.fit(baseline)
        t1 = time.perf_counter()
        m.prepare(test)
        res = m.run(test, test.events.num_rows)
        t2 = time.perf_counter()
        score, flagged = _align(test, res)
        if scores is not None:
            scores[m.name] = (score, flagged)
        r = evaluate(test, score, flagged, _linked(test, res))
        rep = replay(test, m, fractions, max_scans)
        t3 = time.perf_counter()
        r.update(rep)
        r["seconds"] = {"fit": t1 - t0, "score": t2 - t1, "replay": t3 - t2, "total": t3 - t0}
        if text and m in text:
            r["seconds"]["embedding_shared"] = embed_s
        out[m.name] = r
        if log:
            log(f"{m.name}: recall {r['attack_recall']:.3f}, FPR {r['benign_fpr']:.4f}, "
                f"{r['seconds']['total']:.1f}s")
    return out
