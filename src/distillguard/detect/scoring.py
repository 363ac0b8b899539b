"""Combining the account tells into one explainable score, and calibrating its flag threshold.

score = 1 - exp(-sum_i weight_i * tell_i), with every tell_i in [0, 1]. Each non-zero term is an evidence
item (signal, value, threshold, contribution), so the score is the sum of what a reviewer can check.

Calibration (``target_fpr``): the threshold is the (1 - target_fpr) quantile of the scores of benign
accounts, clipped to [min_threshold, max_threshold].
- With a baseline (known-benign traffic), the tells are fitted on it and the quantile is taken over it.
- Without one, the scanned traffic is *assumed mostly benign*, but may hold a sizeable hostile minority
  (10-15 % of accounts in the simulator). A quantile over all accounts would then sit inside the attackers,
  so: (1) every account is scored with the tells at their prior thresholds (the floors); (2) accounts whose
  score reaches ``exclude_share * min_threshold`` and the top ``tail_exclude`` share of the rest are set
  aside; (3) the tells are fitted on the remaining bulk and the quantile is taken over the bulk's scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from distillguard.detect.detectors import AccountTell, default_tells
from distillguard.features import FeatureConfig

__all__ = ["DetectConfig", "AccountScorer", "Calibration"]


@dataclass
class DetectConfig:
    """Everything the detect stage can be told. ``tells`` overrides per-tell config, e.g.
    ``{"volume": {"weight": 0}}``; ``edge_weights`` sets how much each link kind adds to a campaign."""

    target_fpr: float = 0.001
    min_threshold: float = 0.6
    max_threshold: float = 0.97
    tail_exclude: float = 0.05
    exclude_share: float = 0.5
    tells: dict = field(default_factory=dict)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    linking: dict = field(default_factory=dict)
    #: campaign scores (from distillguard.linking) lift members whose own score reaches this, or who share
    #: one of ``strong_edge_kinds`` with another member
    propagate_min_own: float = 0.5
    strong_edge_kinds: tuple = ("payment", "sync", "peer_intel")
    sample_prompts: int = 3
    sample_chars: int = 200
    write_signals: bool = False
    #: memory budget of a scan, in MB per million events: while it computes features, links and findings,
    #: DuckDB may use what the process has not used yet (at least 512 MB; it spills to disk beyond that);
    #: None: DuckDB's own limit (80% of RAM)
    memory_budget_mb_per_m_events: float | None = 2000.0

    def __post_init__(self) -> None:
        if not (0.0 < self.target_fpr < 1.0):
            raise ValueError(f"target_fpr must be in (0, 1), got {self.target_fpr}")
        if not (0.0 < self.min_threshold <= self.max_threshold < 1.0):
            raise ValueError("need 0 < min_threshold <= max_threshold < 1")


@dataclass
class Calibration:
    target_fpr: float
    threshold: float
    baseline: str  # "assumed-benign" or the baseline's description
    n_baseline_accounts: int
    tell_thresholds: dict

    def to_dict(self) -> dict:
        return {"target_fpr": self.target_fpr, "threshold": round(self.threshold, 6), "baseline": self.baseline,
                "n_baseline_accounts": self.n_baseline_accounts,
                "tell_thresholds": {k: round(v, 6) for k, v in self.tell_thresholds.items()}}


class AccountScorer:
    """Fits the tells and the flag threshold; scores feature tables."""

    def __init__(self, config: DetectConfig | None = None, tells: list[AccountTell] | None = None):
        self.config = config or DetectConfig()
        self.tells = tells if tells is not None else default_tells(self.config.tells)

    # -- scoring
    def _matrix(self, features: pa.Table) -> tuple[list[pa.Table], np.ndarray]:
        outs = [t.score(features) for t in self.tells]
        raw = np.zeros(features.num_rows)
        for t, o in zip(self.tells, outs):
            raw += t.weight * o.column(f"{t.name}_score").to_numpy()
        return outs, raw

    def raw_scores(self, features: pa.Table) -> np.ndarray:
        return self._matrix(features)[1]

    @staticmethod
    def squash(raw: np.ndarray) -> np.ndarray:
        return 1.0 - np.exp(-np.asarray(raw, dtype=float))

    def score(self, features: pa.Table) -> tuple[np.ndarray, np.ndarray, list[list[dict]]]:
        """``(raw, score, evidence)`` per feature row; evidence sorted by contribution, largest first."""
        outs, raw = self._matrix(features)
        evidence: list[list[dict]] = [[] for _ in range(features.num_rows)]
        for t, o in zip(self.tells, outs):
            s = o.column(f"{t.name}_score").to_numpy()
            v = o.column(f"{t.name}_value").to_numpy(zero_copy_only=False)
            th = t.threshold()
            expl = o.column("explanation").to_pylist()
            for i in np.nonzero((s > 0) & (t.weight > 0))[0]:
                evidence[i].append({"signal": t.name, "value": _r(v[i]), "threshold": _r(th),
                                    "direction": ">" if t.higher_is_worse else "<",
                                    "contribution": _r(t.weight * s[i]), "detail": expl[i]})
        for ev in evidence:
            ev.sort(key=lambda e: -e["contribution"])
        return raw, self.squash(raw), evidence

    # -- fitting and calibration
    def fit(self, baseline_features: pa.Table, *, assumed_benign: bool, label: str = "baseline") -> Calibration:
        cfg = self.config
        bulk = baseline_features
        for t in self.tells:
            if assumed_benign:
                t.reset()
            else:
                t.fit(baseline_features)
        if assumed_benign and baseline_features.num_rows:
            s = self.squash(self.raw_scores(baseline_features))
            keep = s < cfg.exclude_share * cfg.min_threshold
            if keep.sum() > 10 and cfg.tail_exclude > 0:
                cut = np.quantile(s[keep], 1.0 - cfg.tail_exclude)
                keep &= s <= cut
            if keep.sum() > 0:
                bulk = baseline_features.filter(pa.array(keep))
                for t in self.tells:
                    t.fit(bulk)
        s = self.squash(self.raw_scores(bulk)) if bulk.num_rows else np.zeros(0)
        q = float(np.quantile(s, 1.0 - cfg.target_fpr)) + 1e-6 if s.size else cfg.min_threshold
        self.threshold_ = round(float(min(max(q, cfg.min_threshold), cfg.max_threshold)), 6)
        self.calibration_ = Calibration(
            target_fpr=cfg.target_fpr, threshold=self.threshold_,
            baseline="assumed-benign" if assumed_benign else label, n_baseline_accounts=int(bulk.num_rows),
            tell_thresholds={t.name: t.threshold() for t in self.tells})
        return self.calibration_


def _r(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(x, 4) if np.isfinite(x) else None
