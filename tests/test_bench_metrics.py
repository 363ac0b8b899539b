"""Each benchmark metric against a case computed by hand."""

import math

import numpy as np
import pytest

from distillguard.bench import metrics as M


def test_flag_share_by_group():
    groups = ["a", "a", "a", "b", "b", "c"]
    flagged = [True, False, False, True, True, False]
    assert M.flag_share_by_group(groups, flagged) == {"a": pytest.approx(1 / 3), "b": 1.0, "c": 0.0}


def test_fpr_overall_and_per_persona():
    # 6 benign (2 of them flagged: one campus, one eval), 2 attack (1 flagged)
    is_attack = [0, 0, 0, 0, 0, 0, 1, 1]
    groups = ["campus", "campus", "campus", "eval", "eval", "chat", "hydra", "hydra"]
    flagged = [1, 0, 0, 1, 0, 0, 1, 0]
    assert M.false_positive_rate(is_attack, flagged) == pytest.approx(2 / 6)
    per = M.fpr_by_group(groups, is_attack, flagged)
    assert per == {"campus": pytest.approx(1 / 3), "chat": 0.0, "eval": 0.5}
    assert "hydra" not in per  # attack accounts are not false positives
    assert M.recall(is_attack, flagged) == 0.5


def test_fpr_and_recall_without_class_are_nan():
    assert math.isnan(M.false_positive_rate([1, 1], [True, False]))
    assert math.isnan(M.recall([0, 0], [True, False]))


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="different lengths"):
        M.recall([1, 0, 1], [True, False])


def test_campaign_recall_half_rule():
    # C1: 2 of 4 flagged (exactly half -> counts); C2: 1 of 3 (no); C3: 3 of 3 (yes); None: outside campaigns
    camp = ["C1"] * 4 + ["C2"] * 3 + ["C3"] * 3 + [None, ""]
    flagged = [1, 1, 0, 0] + [1, 0, 0] + [1, 1, 1] + [1, 1]
    rec, shares = M.campaign_recall(camp, flagged)
    assert rec == pytest.approx(2 / 3)
    assert shares == {"C1": 0.5, "C2": pytest.approx(1 / 3), "C3": 1.0}
    rec_strict, _ = M.campaign_recall(camp, flagged, min_share=0.6)
    assert rec_strict == pytest.approx(1 / 3)


def test_average_precision_hand_case():
    # ranking by score: A(+) 0.9, B(-) 0.8, C(+) 0.7, D(-) 0.1
    # AP = (1/2) * (P@1 + P@3) = (1/2) * (1 + 2/3) = 5/6
    assert M.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    # an unscored (NaN) positive ranks last: A(+) .9, B(-) .8, D(-) .1, C(+) NaN -> (1 + 2/4)/2 = 0.75
    assert M.average_precision([1, 0, 1, 0], [0.9, 0.8, float("nan"), 0.1]) == pytest.approx(0.75)
    assert math.isnan(M.average_precision([0, 0], [0.1, 0.2]))


def test_calibrate_threshold():
    scores = list(range(1, 1001))  # 1..1000
    t = M.calibrate_threshold(scores, 0.001)  # one score may exceed: threshold = 999
    assert t == 999
    assert sum(s > t for s in scores) == 1
    assert M.calibrate_threshold(scores, 0.0) == 1000
    assert M.calibrate_threshold([5, 1, 3, float("nan")], 0.5) == 3  # k = 1 of 3 -> 2nd highest
    with pytest.raises(ValueError):
        M.calibrate_threshold([], 0.01)
    with pytest.raises(ValueError):
        M.calibrate_threshold([1.0], 1.0)


def test_served_before():
    ts = [10, 20, 30, 40]
    assert M.served_before(ts, None, 20) == 0.5
    assert M.served_before(ts, [100, 0, 0, 300], 20) == 0.25  # 100 of 400 tokens
    assert M.served_before(ts, None, None) == 1.0  # never flagged
    assert M.served_before(ts, [0, 0, 0, 0], 30) == 0.75  # no tokens: request share


def test_replay_cut_times():
    # campaign A has 10 requests at t=1..10, campaign B 4 at t=100..103, one benign request
    ts = list(range(1, 11)) + [100, 101, 102, 103] + [50]
    camp = ["A"] * 10 + ["B"] * 4 + [None]
    cuts = M.replay_cut_times(ts, camp, [0.1, 0.25, 0.5, 1.0])
    # A: ceil(1)=1st -> t=1; ceil(2.5)=3rd -> t=3; 5th -> t=5; 10th -> t=10
    assert cuts["A"] == [1, 3, 5, 10]
    # B: ceil(.4)=1st -> 100; ceil(1)=1st -> 100; 2nd -> 101; 4th -> 103
    assert cuts["B"] == [100, 101, 103]
    with pytest.raises(ValueError):
        M.replay_cut_times(ts, camp, [0.0])


def test_replay_first_flag_and_delay():
    ts = np.array(list(range(1, 11)) + [100, 101, 102, 103])
    camp = ["A"] * 10 + ["B"] * 4
    rt = [10] * 10 + [0, 0, 0, 400]
    cuts = M.replay_cut_times(ts, camp, [0.1, 0.25, 0.5, 1.0])
    calls = []

    def detector(cut, pending):
        # flags campaign A once 5 of its requests are visible; never flags B
        calls.append(cut)
        return {"A"} if (ts[:10] <= cut).sum() >= 5 else set()

    first = M.replay_first_flag(cuts, detector)
    assert first == {"A": 5, "B": None}
    assert calls == [1, 3, 5, 100, 101, 103]  # A's cut at 10 skipped once A is found
    d = M.detection_delay(ts, camp, first, rt)
    assert d["A"] == {"requests": 0.5, "reasoning_tokens": 0.5, "detected": True}
    assert d["B"] == {"requests": 1.0, "reasoning_tokens": 1.0, "detected": False}


def test_replay_detects_other_campaign_at_earlier_cut_and_caps_scans():
    cuts = {"A": [1, 2, 3], "B": [10, 20]}
    first = M.replay_first_flag(cuts, lambda cut, pending: {"A", "B"} if cut >= 2 else set())
    assert first == {"A": 2, "B": 2}  # B caught at A's cut, before any of its own
    capped = M.replay_first_flag(cuts, lambda cut, pending: set(), max_scans=2)
    assert capped == {"A": None, "B": None}


def test_reasoning_token_delay_differs_from_request_delay():
    # first flag after 2 of 4 requests, but those 2 carried 10% of the reasoning tokens
    ts = [1, 2, 3, 4]
    d = M.detection_delay(ts, ["C"] * 4, {"C": 2}, [5, 5, 45, 45])
    assert d["C"]["requests"] == 0.5
    assert d["C"]["reasoning_tokens"] == pytest.approx(0.1)


def test_campaign_linking_hand_case():
    # true: A has 4 accounts, B 2, C 2; benign b1, b2.  linked: X = 3 of A + 1 of B + b1 (mixed),
    # Y = 1 of B, the 4th A account and both C accounts unlinked, Z = b2 alone (no campaign account)
    true = ["A", "A", "A", "A", "B", "B", "C", "C", None, ""]
    linked = ["X", "X", "X", None, "X", "Y", None, "", "X", "Z"]
    r = M.campaign_linking(true, linked)
    assert r["completeness"] == {"A": 0.75, "B": 0.5, "C": 0.0}
    assert r["completeness_mean"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    # X: 5 members, largest true group A (3); Y: 1 member (B); Z holds no campaign account: not counted
    assert r["purity_mean"] == pytest.approx((3 + 1) / (5 + 1))
    assert r["mixed"] == 1
    empty = M.campaign_linking([None, None], ["X", None])
    assert math.isnan(empty["completeness_mean"]) and math.isnan(empty["purity_mean"]) and empty["mixed"] == 0
    with pytest.raises(ValueError):
        M.campaign_linking(["A"], [])
