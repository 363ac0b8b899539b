"""Account tells, their combination into one score, evidence and calibration (distillguard.detect)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from distillguard.api import available_detectors
from distillguard.detect import TELLS, AccountScorer, DetectConfig, default_tells
from distillguard.detect.detectors import EXTRACTION_PRIOR


def feats(n_benign=400, n_attack=0, seed=0, **attack_overrides):
    """A synthetic feature table: benign accounts with mild noise, attackers with extraction and youth."""
    rng = np.random.default_rng(seed)
    n = n_benign + n_attack
    cols = {
        "account_id": [f"b{i}" for i in range(n_benign)] + [f"a{i}" for i in range(n_attack)],
        "org_id": [None] * n,
        "n_requests": np.r_[rng.integers(20, 200, n_benign), np.full(n_attack, 120)].astype(float),
        "extraction_share": np.r_[rng.uniform(0, 0.02, n_benign), np.full(n_attack, 0.6)],
        "extraction_mean": np.r_[rng.uniform(0.05, 0.15, n_benign), np.full(n_attack, 0.55)],
        "account_age_days": np.r_[rng.uniform(40, 900, n_benign), np.full(n_attack, 2.0)],
        "requests_per_day": np.r_[rng.uniform(1, 50, n_benign), np.full(n_attack, 20.0)],
    }
    for k, v in attack_overrides.items():
        cols[k][n_benign:] = v
    return pa.table(cols)


def test_tells_are_registered_account_detectors():
    reg = available_detectors()
    for name in TELLS:
        assert name in reg and reg[name].level == "account"


def test_tell_threshold_is_a_baseline_quantile_clipped_to_floor_and_cap():
    t = TELLS["extraction_share"][0](floor=0.05, cap=0.15, quantile=0.99, saturate=4.0)
    assert t.threshold() == 0.05  # prior before fit
    clean = pa.table({"extraction_share": np.zeros(100)})
    assert t.fit(clean).threshold_ == 0.05  # spotless baseline cannot lower it under the floor
    noisy = pa.table({"extraction_share": np.linspace(0, 0.5, 100)})
    assert t.fit(noisy).threshold_ == 0.15  # contaminated baseline cannot raise it over the cap
    mid = pa.table({"extraction_share": np.r_[np.zeros(98), [0.1, 0.1]]})
    assert 0.05 < t.fit(mid).threshold_ <= 0.1
    out = t.reset().score(pa.table({"extraction_share": [0.0, 0.05, 0.125, 0.2, 0.9]}))
    # 0 at or below the threshold, linear to 1 at saturate x threshold
    assert out.column("extraction_share_score").to_pylist() == pytest.approx([0, 0, 0.5, 1, 1])
    assert out.column("explanation").to_pylist()[2].endswith("0.125 > 0.05")


def test_lower_is_worse_tell_for_account_age():
    t = TELLS["young_account"][0](floor=30.0, cap=7.0, saturate=30.0)
    s = t.score(pa.table({"account_age_days": [None, 400.0, 30.0, 15.5, 1.0, 0.0]}))
    vals = s.column("young_account_score").to_pylist()
    assert vals[0] == 0 and vals[1] == 0 and vals[2] == 0  # unknown age is no evidence
    assert vals[3] == pytest.approx(0.5) and vals[4] == pytest.approx(1.0) and vals[5] == 1.0
    # a benign population of young accounts moves the threshold down, never under the cap
    t.fit(pa.table({"account_age_days": np.full(50, 1.0)}))
    assert t.threshold_ == 7.0


def test_no_single_non_extraction_tell_flags_an_account():
    cfg = DetectConfig()
    for name, (_cls, conf) in TELLS.items():
        alone = 1.0 - math.exp(-conf["weight"])
        if name.startswith("extraction"):
            continue
        assert alone < cfg.min_threshold, name
    # the extraction share at saturation does cross the lowest threshold on its own
    assert 1.0 - math.exp(-TELLS["extraction_share"][1]["weight"]) >= cfg.min_threshold


def test_score_is_the_sum_of_its_evidence():
    scorer = AccountScorer()
    scorer.fit(feats(), assumed_benign=False)
    f = feats(n_benign=5, n_attack=2, seed=1)
    raw, score, evidence = scorer.score(f)
    assert np.all((score >= 0) & (score <= 1))
    for r, s, ev in zip(raw, score, evidence):
        assert s == pytest.approx(1 - math.exp(-r))
        assert r == pytest.approx(sum(e["contribution"] for e in ev), abs=1e-3)
        for e in ev:
            assert {"signal", "value", "threshold", "detail"} <= set(e)
            assert (e["value"] > e["threshold"]) if e["direction"] == ">" else (e["value"] < e["threshold"])
    attack = evidence[-1]
    assert [e["signal"] for e in attack][:1] == ["extraction_share"]
    assert {"young_account", "extraction_intensity"} <= {e["signal"] for e in attack}


def test_calibration_on_known_benign_baseline_hits_the_target_rate():
    cfg = DetectConfig(target_fpr=0.01, min_threshold=0.01)
    scorer = AccountScorer(cfg)
    # benign baseline where 5 % of accounts carry a weak tell
    base = feats(n_benign=1000, seed=3)
    ext = base.column("extraction_share").to_numpy().copy()
    ext[:50] = 0.09
    base = base.set_column(base.schema.get_field_index("extraction_share"), "extraction_share", pa.array(ext))
    cal = scorer.fit(base, assumed_benign=False, label="benign.jsonl")
    assert cal.baseline == "benign.jsonl" and cal.n_baseline_accounts == 1000
    _, s, _ = scorer.score(base)
    assert (s >= cal.threshold).mean() <= 0.01
    fresh = feats(n_benign=1000, seed=4)
    _, s2, _ = scorer.score(fresh)
    assert (s2 >= cal.threshold).mean() <= 0.02


def test_assumed_benign_calibration_survives_a_hostile_minority():
    f = feats(n_benign=850, n_attack=150, seed=5)
    scorer = AccountScorer(DetectConfig(target_fpr=0.001))
    cal = scorer.fit(f, assumed_benign=True)
    assert cal.baseline == "assumed-benign"
    assert cal.n_baseline_accounts <= 850  # the 150 attackers were set aside before fitting
    assert DetectConfig().min_threshold <= cal.threshold <= DetectConfig().max_threshold
    lo, hi = TELLS["extraction_share"][1]["floor"], TELLS["extraction_share"][1]["cap"]
    assert lo <= cal.tell_thresholds["extraction_share"] <= hi
    _, s, _ = scorer.score(f)
    flagged = s >= cal.threshold
    assert flagged[850:].all() and flagged[:850].sum() == 0
    # the naive approach (quantile over everything) would have put the threshold inside the attackers
    naive = np.quantile(s, 1 - 0.001)
    assert naive > cal.threshold


def test_weights_can_be_overridden_and_config_is_checked():
    tells = default_tells({"extraction_share": {"weight": 0.0}, "extraction_intensity": {"weight": 0.0}})
    scorer = AccountScorer(DetectConfig(), tells)
    raw, _, ev = scorer.score(feats(n_benign=0, n_attack=1))
    assert all(not e["signal"].startswith("extraction") for e in ev[0])
    with pytest.raises(ValueError, match="target_fpr"):
        DetectConfig(target_fpr=0)
    with pytest.raises(ValueError, match="min_threshold"):
        DetectConfig(min_threshold=0.9, max_threshold=0.5)


def test_one_curious_request_among_a_few_is_not_a_harvesting_share():
    scorer = AccountScorer()
    scorer.fit(feats(), assumed_benign=False)
    f = pa.table({"account_id": ["curious", "harvester"], "n_requests": [7.0, 3.0],
                  "extraction_share": [1 / 7, 1.0], "extraction_mean": [0.2, 0.6]})
    _, s, ev = scorer.score(f)
    assert s[0] < scorer.threshold_ <= s[1]
    # the shrunk share n_ext / (n + prior) is the evidence value
    assert ev[0][0]["value"] == pytest.approx(1 / (7 + EXTRACTION_PRIOR), abs=1e-3)
