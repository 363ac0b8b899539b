"""Account-level detectors ("tells"). Each follows :mod:`distillguard.api`'s contract.

A tell reads one derived value per account from the feature table, learns its firing threshold from a
benign (or assumed-benign) baseline in :meth:`fit` — a high quantile of the baseline, clipped between a
floor and a cap so that neither a spotless nor a contaminated baseline moves it to a silly place — and
scores each account in [0, 1]: 0 below the threshold, rising linearly to 1 at ``saturate`` times it.
Lower-is-worse tells (account age) mirror this. Every score row carries the value, the threshold and a
human-readable explanation, which become the evidence items of a flag.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from distillguard.api import Detector, register

__all__ = ["AccountTell", "TELLS", "derived_values", "default_tells"]

_REASONING_CAPS = {"math", "code", "reasoning", "tool_use", "grading"}
#: pseudo-requests without extraction added to every account's extraction share (n_ext / (n + prior))
EXTRACTION_PRIOR = 6.0


def _col(features: pa.Table, name: str, fill: float = 0.0) -> np.ndarray:
    if name not in features.column_names:
        return np.full(features.num_rows, fill, dtype=float)
    arr = features.column(name).to_numpy(zero_copy_only=False)
    arr = np.asarray(arr, dtype=float)
    return np.where(np.isnan(arr), fill, arr)


def derived_values(features: pa.Table) -> dict[str, np.ndarray]:
    """The per-account values the tells read, computed from the feature table (numpy, vectorised)."""
    n = _col(features, "n_requests")
    shrink = n / (n + EXTRACTION_PRIOR) if "n_requests" in features.column_names else 1.0
    volume_ok = np.clip((n - 5.0) / 15.0, 0.0, 1.0)  # need ~20 requests before shape tells speak
    top_cap = _col(features, "top_capability_share")
    reasoning_share = _col(features, "reasoning_capability_share")
    diversity = _col(features, "template_diversity")
    top_tpl = _col(features, "top_template_share")
    pivot_lag = _col(features, "pivot_lag_hours", fill=np.inf)
    age = _col(features, "account_age_days", fill=np.inf)
    return {
        # shrunk towards 0 for small accounts (EXTRACTION_PRIOR pseudo-requests without extraction): one or
        # two curious requests among a handful are not a harvesting share; a harvester's first few still count
        "extraction_share": _col(features, "extraction_share") * shrink,
        "extraction_mean": volume_ok * _col(features, "extraction_mean"),
        # many distinct items, one reasoning-heavy capability, no single dominant template
        "harvest_focus": volume_ok * np.minimum(top_cap, reasoning_share) * diversity * (1.0 - top_tpl),
        # public benchmark items, each asked once (a partition of a data set, not a repeated eval run)
        "benchmark_sweep": volume_ok * _col(features, "benchmark_share") * (1.0 - _col(features, "benchmark_item_repeat")),
        # share of traffic moved onto a newly released model within a day of its release
        "fast_pivot": np.where(pivot_lag <= 24.0, _col(features, "new_model_share"), 0.0),
        "account_age_days": age,
        # long, high-effort reasoning asked for with explicit token budgets
        "reasoning_harvest": volume_ok * _col(features, "high_effort_share") * np.minimum(
            1.0, _col(features, "reasoning_ratio") / 0.5) * _col(features, "max_tokens_share"),
        # round-the-clock, evenly spaced traffic
        "machine_timing": volume_ok * _col(features, "hour_entropy") * np.clip(1.0 - _col(features, "gap_cv"), 0.0, 1.0),
        "requests_per_day": _col(features, "requests_per_day"),
        # distinct source addresses: rotating proxy pools give one account dozens
        "n_ips": _col(features, "n_ips"),
    }


class AccountTell(Detector):
    """One behavioural tell with a baseline-fitted threshold (see module docstring)."""

    level: ClassVar[str] = "account"
    inputs: ClassVar[tuple[str, ...]] = ("account_id",)
    requires_fit: ClassVar[bool] = False
    value_key: ClassVar[str] = ""
    higher_is_worse: ClassVar[bool] = True
    label: ClassVar[str] = ""

    def __init__(self, *, floor: float, cap: float, quantile: float = 0.99, saturate: float = 2.0,
                 weight: float = 1.0):
        self.floor = float(floor)
        self.cap = float(cap)
        self.quantile = float(quantile)
        self.saturate = float(saturate)
        self.weight = float(weight)

    @property
    def outputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (f"{self.name}_score", f"{self.name}_value", f"{self.name}_threshold")

    def _values(self, features: pa.Table) -> np.ndarray:
        return derived_values(features)[self.value_key]

    def reset(self) -> "AccountTell":
        """Back to the prior threshold (the floor) before any fit."""
        for k in [k for k in vars(self) if k.endswith("_")]:
            delattr(self, k)
        return self

    def fit(self, baseline: pa.Table) -> "AccountTell":
        v = self._values(baseline)
        v = v[np.isfinite(v)]
        if self.higher_is_worse:
            q = float(np.quantile(v, self.quantile)) if v.size else self.floor
            self.threshold_ = float(min(max(q, self.floor), self.cap))
        else:  # floor is the largest, cap the smallest threshold allowed
            q = float(np.quantile(v, 1.0 - self.quantile)) if v.size else self.floor
            self.threshold_ = float(max(min(q, self.floor), self.cap))
        self.n_baseline_ = int(v.size)
        return self

    def threshold(self) -> float:
        return getattr(self, "threshold_", self.floor)

    def score_values(self, v: np.ndarray) -> np.ndarray:
        th = self.threshold()
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.higher_is_worse:
                top = th * self.saturate if th > 0 else 1.0
                s = np.where(v > th, (v - th) / max(top - th, 1e-9), 0.0)
            else:
                s = np.where(v < th, (th - v) / max(th - th / self.saturate, 1e-9), 0.0)
        s = np.where(np.isfinite(v), s, 0.0)
        return np.clip(s, 0.0, 1.0)

    def score(self, batch: pa.Table) -> pa.Table:
        self._check_fitted()
        v = self._values(batch)
        s = self.score_values(v)
        th = self.threshold()
        op = ">" if self.higher_is_worse else "<"
        expl = [f"{self.label}: {x:.3g} {op} {th:.3g}" if sc > 0 else "" for x, sc in zip(v, s)]
        return pa.table({
            f"{self.name}_score": pa.array(s, pa.float64()),
            f"{self.name}_value": pa.array(np.where(np.isfinite(v), v, np.nan), pa.float64()),
            f"{self.name}_threshold": pa.array(np.full(len(v), th), pa.float64()),
            "explanation": pa.array(expl, pa.string()),
        })


def _tell(name: str, value_key: str, label: str, higher: bool = True) -> type[AccountTell]:
    cls = type(f"{''.join(p.title() for p in name.split('_'))}Tell", (AccountTell,), {
        "name": name, "value_key": value_key, "label": label, "higher_is_worse": higher,
        "__doc__": f"Account tell: {label}.",
    })
    return register(cls)


#: name -> (class, default config). The extraction tells carry most weight; any other single tell stays
#: well below the default flag threshold (raw 0.92 for score 0.6), so benign heavy users showing one or two
#: of them (eval runners: fast pivot + long reasoning; enterprise: machine timing + volume) are not flagged.
TELLS: dict[str, tuple[type[AccountTell], dict]] = {
    "extraction_share": (_tell("extraction_share", "extraction_share", "share of requests demanding hidden reasoning"),
                         dict(floor=0.05, cap=0.15, saturate=4.0, weight=1.5)),
    "extraction_intensity": (_tell("extraction_intensity", "extraction_mean", "mean extraction score of the requests"),
                             dict(floor=0.20, cap=0.30, saturate=2.0, weight=0.6)),
    "ip_rotation": (_tell("ip_rotation", "n_ips", "distinct source IP addresses"),
                    dict(floor=8.0, cap=20.0, saturate=2.5, weight=0.6)),
    "young_account": (_tell("young_account", "account_age_days", "account age in days at first request", higher=False),
                      dict(floor=30.0, cap=7.0, quantile=0.99, saturate=30.0, weight=0.6)),
    "machine_timing": (_tell("machine_timing", "machine_timing", "round-the-clock evenly spaced traffic"),
                       dict(floor=0.30, cap=0.60, saturate=2.0, weight=0.35)),
    "benchmark_sweep": (_tell("benchmark_sweep", "benchmark_sweep", "share of public benchmark items, each asked once"),
                        dict(floor=0.30, cap=0.70, saturate=2.5, weight=0.3)),
    "harvest_focus": (_tell("harvest_focus", "harvest_focus", "narrow reasoning focus over many distinct items"),
                      dict(floor=0.45, cap=0.85, saturate=1.6, weight=0.15)),
    "fast_pivot": (_tell("fast_pivot", "fast_pivot", "share of traffic moved to a model within 24 h of its release"),
                   dict(floor=0.20, cap=0.60, saturate=3.0, weight=0.2)),
    "reasoning_harvest": (_tell("reasoning_harvest", "reasoning_harvest", "high-effort long-reasoning requests with token budgets"),
                          dict(floor=0.30, cap=0.70, saturate=2.5, weight=0.1)),
    "volume": (_tell("volume", "requests_per_day", "requests per day"),
               dict(floor=500.0, cap=20000.0, quantile=0.995, saturate=4.0, weight=0.1)),
}


for _cls, _cfg in TELLS.values():
    _cls.default_config = dict(_cfg)  # get_detector(name) builds a tell with its shipped configuration


def default_tells(overrides: dict[str, dict] | None = None) -> list[AccountTell]:
    """Fresh instances of the built-in tells, with per-tell config overrides (``{name: {weight: 0}}``)."""
    out = []
    for name, (cls, cfg) in TELLS.items():
        conf = dict(cfg)
        conf.update((overrides or {}).get(name, {}))
        out.append(cls(**conf))
    return out


