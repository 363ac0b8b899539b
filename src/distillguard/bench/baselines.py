"""Baseline detectors the benchmark runs beside distillguard's own detector.

Each follows :mod:`distillguard.api`'s contract: configuration in ``__init__``, :meth:`fit` on benign
baseline traffic (a separate simulated seed's benign accounts, never the test labels), and :meth:`score`
returning one row per account with ``account_id, score, flagged, n_requests, explanation``. Every baseline
sets its threshold so that at most ``target_fpr`` of the benign baseline accounts would be flagged
(:func:`distillguard.bench.metrics.calibrate_threshold`); a higher score is more suspicious.

* :class:`VolumeBaseline`: requests per account.
* :class:`PradaBaseline`: PRADA (Juuti et al., 2019) adapted to text: per account, the minimum distance of
  each prompt embedding to the account's earlier prompts; score ``1 - W`` of the Shapiro-Wilk normality
  test on those distances.
* :class:`MMDBaseline`: per-account traffic windows tested against benign history with the maximum mean
  discrepancy (the detector of arXiv 2606.05725), threshold from benign-vs-benign windows.

The text baselines embed prompts with :class:`distillguard.bench.embed.HashEmbedder`. The benchmark embeds
the whole test stream once and calls :meth:`score_arrays` on prefixes of it during the replay.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
import pyarrow as pa

from distillguard.api import Detector, register
from distillguard.bench.embed import HashEmbedder, event_texts
from distillguard.bench.metrics import calibrate_threshold

__all__ = ["AccountBaseline", "VolumeBaseline", "PradaBaseline", "MMDBaseline", "BASELINES", "group_rows"]

RESULT_SCHEMA = pa.schema([
    ("account_id", pa.string()),
    ("score", pa.float64()),
    ("statistic", pa.float64()),
    ("flagged", pa.bool_()),
    ("n_requests", pa.int64()),
    ("explanation", pa.string()),
])


def group_rows(account_ids: np.ndarray, ts: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of each account, in time order (ties kept in input order)."""
    order = np.lexsort((np.arange(len(ts)), ts))
    acc = account_ids[order]
    srt = np.argsort(acc, kind="stable")
    acc_s = acc[srt]
    idx_s = order[srt]
    bounds = np.flatnonzero(acc_s[1:] != acc_s[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(acc_s)]])
    return {str(acc_s[s]): idx_s[s:e] for s, e in zip(starts, ends)}


def _columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    for col in ("account_id", "timestamp"):
        if col not in table.column_names:
            raise ValueError(f"events table has no {col!r} column")
    ids = np.asarray(table.column("account_id").to_pylist(), dtype=object)
    ts = table.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(
        zero_copy_only=False)
    return ids, ts


def squash(statistic: float, threshold: float) -> float:
    """The raw statistic mapped into [0, 1], strictly increasing, 0.5 exactly at the threshold (so
    ``score > 0.5`` iff flagged, and rankings, hence average precision, are unchanged). The softsign keeps
    very large statistics distinguishable, unlike a logistic that saturates. Untested accounts score 0."""
    if math.isnan(statistic):
        return 0.0
    z = (statistic - threshold) / max(abs(threshold), 1e-12)
    return 0.5 + 0.5 * z / (1.0 + abs(z))


class AccountBaseline(Detector):
    """Common machinery: per-account scores from arrays, calibration on benign baseline accounts."""

    level: ClassVar[str] = "account"
    outputs: ClassVar[tuple[str, ...]] = ("account_id", "score", "statistic", "flagged", "n_requests")
    inputs: ClassVar[tuple[str, ...]] = ("account_id", "timestamp", "user_text", "system_text")
    requires_fit: ClassVar[bool] = True
    uses_embedding: ClassVar[bool] = True
    label: ClassVar[str] = ""

    def __init__(self, target_fpr: float = 0.001, min_requests: int = 5, embed_dim: int = 64, seed: int = 0):
        self.target_fpr = target_fpr
        self.min_requests = min_requests
        self.embed_dim = embed_dim
        self.seed = seed

    # -- subclass hooks ---------------------------------------------------------------------------------
    def _fit_state(self, groups: dict[str, np.ndarray], emb: np.ndarray | None) -> None:
        """Learn anything beyond the threshold from the baseline (before calibration)."""

    def _account_score(self, rows: np.ndarray, emb: np.ndarray | None) -> tuple[float, str]:
        raise NotImplementedError

    # -- contract -----------------------------------------------------------------------------------------
    def embed(self, table: pa.Table) -> np.ndarray | None:
        if not self.uses_embedding:
            return None
        return self.embedder_.transform(event_texts(table))

    def fit(self, baseline: pa.Table) -> "AccountBaseline":
        if baseline.num_rows == 0:
            raise ValueError(f"{self.name}: empty baseline traffic")
        ids, ts = _columns(baseline)
        emb = None
        if self.uses_embedding:
            self.embedder_ = HashEmbedder(dim=self.embed_dim, seed=self.seed).fit(event_texts(baseline))
            emb = self.embedder_.transform(event_texts(baseline))
        self.fit_arrays(ids, ts, emb)
        return self

    def fit_arrays(self, account_ids, ts, emb: np.ndarray | None) -> "AccountBaseline":
        groups = group_rows(np.asarray(account_ids, dtype=object), np.asarray(ts))
        calib = self._fit_state(groups, emb) or groups
        scores = [self._account_score(rows, emb)[0] for rows in calib.values()]
        scores = [s for s in scores if not math.isnan(s)]
        if not scores:
            raise ValueError(f"{self.name}: no baseline account has {self.min_requests}+ requests to calibrate on")
        self.threshold_ = calibrate_threshold(scores, self.target_fpr)
        self.n_calibration_accounts_ = len(scores)
        return self

    def score(self, batch: pa.Table) -> pa.Table:
        self._check_fitted()
        ids, ts = _columns(batch)
        return self.score_arrays(ids, ts, self.embed(batch))

    def score_arrays(self, account_ids, ts, emb: np.ndarray | None) -> pa.Table:
        self._check_fitted()
        groups = group_rows(np.asarray(account_ids, dtype=object), np.asarray(ts))
        out_ids, scores, stats, flags, counts, why = [], [], [], [], [], []
        for acc, rows in groups.items():
            s, detail = self._account_score(rows, emb)
            hit = (not math.isnan(s)) and s > self.threshold_
            out_ids.append(acc)
            scores.append(squash(s, self.threshold_))
            stats.append(s)
            flags.append(hit)
            counts.append(len(rows))
            op = ">" if hit else "<="
            why.append(detail if math.isnan(s) else f"{detail}; {self.label} {s:.4g} {op} threshold {self.threshold_:.4g}")
        return pa.table([out_ids, scores, stats, flags, counts, why], schema=RESULT_SCHEMA)


@register
class VolumeBaseline(AccountBaseline):
    """Flag accounts whose request count exceeds the benign baseline's (1 - target_fpr) quantile."""

    name = "baseline-volume"
    inputs = ("account_id", "timestamp")
    uses_embedding = False
    label = "requests"

    def __init__(self, target_fpr: float = 0.001, min_requests: int = 1, seed: int = 0):
        super().__init__(target_fpr=target_fpr, min_requests=min_requests, seed=seed)

    def _account_score(self, rows, emb):
        return float(len(rows)), f"{len(rows)} requests"


@register
class PradaBaseline(AccountBaseline):
    """PRADA adapted to text prompts.

    For each account's prompts in time order, the distance of each prompt's embedding to the nearest of the
    account's earlier prompts (at most ``max_queries`` most recent prompts are used); the Shapiro-Wilk ``W``
    of those distances measures how normal they look, and the score is ``1 - W``. A set of distances with
    no spread at all (e.g. one prompt sent again and again) gets ``W = 0``: it is as far from normal as a
    sample can be. Accounts with fewer than ``min_requests`` prompts are not scored.
    """

    name = "baseline-prada"
    label = "1-W"

    def __init__(self, target_fpr: float = 0.001, min_requests: int = 10, max_queries: int = 300,
                 embed_dim: int = 64, seed: int = 0):
        super().__init__(target_fpr=target_fpr, min_requests=min_requests, embed_dim=embed_dim, seed=seed)
        self.max_queries = max_queries

    @staticmethod
    def min_distances(x: np.ndarray) -> np.ndarray:
        """For rows 1..n-1 of ``x``, the Euclidean distance to the nearest earlier row."""
        sq = (x * x).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        d2 = np.maximum(d2, 0.0)
        d2[np.triu_indices(len(x))] = np.inf  # only earlier rows (j < i) count
        return np.sqrt(d2[1:].min(axis=1))

    def _account_score(self, rows, emb):
        if len(rows) < self.min_requests:
            return math.nan, f"{len(rows)} requests < {self.min_requests}: not tested"
        x = emb[rows[-self.max_queries:]].astype(np.float64)
        d = self.min_distances(x)
        if np.ptp(d) < 1e-9:
            w = 0.0
        else:
            from scipy.stats import shapiro

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = float(shapiro(d).statistic)
        return 1.0 - w, f"Shapiro-Wilk W={w:.3f} over {len(d)} nearest-earlier-prompt distances (median {np.median(d):.3f})"


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.exp(-gamma * np.maximum(d2, 0.0))


def _mean_offdiag(k: np.ndarray) -> float:
    n = len(k)
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, gamma: float, syy: float | None = None) -> float:
    """Unbiased estimate of the squared MMD between samples ``x`` and ``y`` with an RBF kernel
    ``exp(-gamma * |a-b|^2)``. Needs at least two rows in each sample. ``syy``: the mean off-diagonal
    kernel value of ``y`` when already known (it does not depend on ``x``)."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two rows in each sample")
    sxx = _mean_offdiag(_rbf(x, x, gamma))
    if syy is None:
        syy = _mean_offdiag(_rbf(y, y, gamma))
    return float(sxx + syy - 2.0 * _rbf(x, y, gamma).mean())


@register
class MMDBaseline(AccountBaseline):
    """Traffic-window MMD test against benign history (arXiv 2606.05725), one window per account.

    ``fit`` splits the baseline accounts in two: the prompts of one half are the benign history (a sample of
    ``reference_size`` embeddings); each account of the other half is a benign window, and its MMD to the
    history sets the threshold (benign-vs-benign). At scoring, each account's window is its ``window`` most
    recent prompts. RBF kernel, bandwidth by the median heuristic on the history.
    """

    name = "baseline-mmd"
    label = "MMD^2"

    def __init__(self, target_fpr: float = 0.001, min_requests: int = 5, window: int = 64,
                 reference_size: int = 512, embed_dim: int = 64, seed: int = 0):
        super().__init__(target_fpr=target_fpr, min_requests=min_requests, embed_dim=embed_dim, seed=seed)
        self.window = window
        self.reference_size = reference_size

    def _fit_state(self, groups, emb):
        rng = np.random.default_rng(self.seed)
        accounts = sorted(groups)
        rng.shuffle(accounts)
        half = max(1, len(accounts) // 2)
        ref_rows = np.concatenate([groups[a] for a in accounts[:half]])
        if len(ref_rows) > self.reference_size:
            ref_rows = rng.choice(ref_rows, self.reference_size, replace=False)
        if len(ref_rows) < 2:
            raise ValueError(f"{self.name}: baseline too small for a benign history")
        self.reference_ = emb[np.sort(ref_rows)].astype(np.float64)
        r = self.reference_
        d2 = (r * r).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * (r @ r.T)
        med = float(np.median(np.maximum(d2[np.triu_indices(len(r), 1)], 0.0)))
        self.gamma_ = 1.0 / med if med > 0 else 1.0
        self.reference_kernel_mean_ = _mean_offdiag(_rbf(r, r, self.gamma_))
        calib = {a: groups[a] for a in accounts[half:]}
        return calib or groups

    def _account_score(self, rows, emb):
        if len(rows) < self.min_requests:
            return math.nan, f"{len(rows)} requests < {self.min_requests}: not tested"
        x = emb[rows[-self.window:]].astype(np.float64)
        v = mmd2_unbiased(x, self.reference_, self.gamma_, self.reference_kernel_mean_)
        return v, f"window of {len(x)} prompts vs {len(self.reference_)} benign-history prompts"


#: the baselines the benchmark runs, in table order
BASELINES: tuple[type[AccountBaseline], ...] = (VolumeBaseline, PradaBaseline, MMDBaseline)
