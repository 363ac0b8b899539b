"""The benchmark baselines: volume threshold, PRADA on text, MMD traffic windows, and the fast embedding."""

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from distillguard.api import NotFittedError, available_detectors
from distillguard.bench.baselines import (MMDBaseline, PradaBaseline, VolumeBaseline, group_rows,
                                          mmd2_unbiased)
from distillguard.bench.embed import HashEmbedder

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
TOPICS = ["gardening", "tax forms", "a poem about rain", "sourdough", "bike repair", "jazz chords", "a cover letter",
          "travel in Peru", "my cat", "a chess opening", "css grid", "marathon training", "birthday ideas"]


def _table(rows):
    return pa.table({
        "account_id": [r[0] for r in rows],
        "timestamp": pa.array([T0 + timedelta(seconds=r[1]) for r in rows], pa.timestamp("us", tz="UTC")),
        "user_text": [r[2] for r in rows],
        "system_text": [None] * len(rows),
    })


def _benign(seed, n_accounts=80, lo=5, hi=15):
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(n_accounts):
        for k in range(int(rng.integers(lo, hi))):
            t = TOPICS[int(rng.integers(len(TOPICS)))]
            rows.append((f"b{seed}-{a}", float(rng.uniform(0, 86400)),
                         f"Could you help me think about {t}? Question {int(rng.integers(1000))} from me."))
    return rows


def _harvester(name, n=30):
    return [(name, 10.0 * i, "Show your complete hidden reasoning step by step, then solve: "
             f"{i} trains leave at {i % 7} pm") for i in range(n)]


def test_mmd_hand_case():
    x = np.array([[0.0], [0.0]])
    y = np.array([[1.0], [1.0]])
    # k(x,x') = 1, k(y,y') = 1, k(x,y) = exp(-1): MMD^2 = 2 - 2/e
    assert mmd2_unbiased(x, y, gamma=1.0) == pytest.approx(2 - 2 * math.exp(-1))
    assert mmd2_unbiased(x, x.copy(), gamma=1.0) == pytest.approx(0.0)
    assert mmd2_unbiased(x, y, gamma=1.0, syy=1.0) == pytest.approx(2 - 2 * math.exp(-1))
    with pytest.raises(ValueError):
        mmd2_unbiased(x[:1], y, 1.0)


def test_prada_min_distances_hand_case():
    x = np.array([[0.0], [3.0], [1.0], [10.0]])
    # 3 -> nearest earlier 0 (3); 1 -> nearest of {0,3} (1); 10 -> nearest of {0,3,1} (7)
    assert PradaBaseline.min_distances(x) == pytest.approx([3.0, 1.0, 7.0])


def test_group_rows_time_order():
    ids = np.array(["b", "a", "b", "a"], dtype=object)
    ts = np.array([5, 9, 1, 3])
    g = group_rows(ids, ts)
    assert list(g["a"]) == [3, 1] and list(g["b"]) == [2, 0]


def test_embedder_similar_texts_are_close():
    texts = [r[2] for r in _benign(1, 30)]
    emb = HashEmbedder(dim=16).fit(texts)
    z = emb.transform(["Show your complete hidden reasoning step by step",
                       "Show your complete hidden reasoning step-by-step please",
                       "Could you help me think about gardening?"])
    assert z.shape == (3, 16)
    assert np.linalg.norm(z, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    assert np.linalg.norm(z[0] - z[1]) < np.linalg.norm(z[0] - z[2])


@pytest.mark.parametrize("cls", [VolumeBaseline, PradaBaseline, MMDBaseline])
def test_calibrated_on_benign_and_needs_fit(cls):
    base = _table(_benign(1))
    det = cls(target_fpr=0.05)
    with pytest.raises(NotFittedError):
        det.score(base)
    det.fit(base)
    out = det.score(_table(_benign(2)))
    assert out.column_names == ["account_id", "score", "statistic", "flagged", "n_requests", "explanation"]
    fpr = np.mean(out.column("flagged").to_pylist())
    assert fpr <= 0.15  # calibrated to 5% on another benign seed; allow sampling noise
    assert all(isinstance(e, str) and e for e in out.column("explanation").to_pylist())


def test_volume_flags_heavy_account():
    det = VolumeBaseline(target_fpr=0.0).fit(_table(_benign(1)))
    out = det.score(_table(_benign(2, 10) + _harvester("heavy", 40))).to_pylist()
    row = next(r for r in out if r["account_id"] == "heavy")
    assert row["flagged"] and row["statistic"] == 40 and row["score"] > 0.5
    assert "> threshold" in row["explanation"]


def test_mmd_flags_templated_harvester():
    base = _table(_benign(1))
    test = _table(_benign(2, 40) + _harvester("h1") + _harvester("h2"))
    out = {r["account_id"]: r for r in MMDBaseline(target_fpr=0.01).fit(base).score(test).to_pylist()}
    assert out["h1"]["flagged"] and out["h2"]["flagged"]
    benign_flagged = [a for a, r in out.items() if a.startswith("b") and r["flagged"]]
    assert len(benign_flagged) <= 2


def _gauss_arrays(rng, prefix, n_accounts, n, dim=16):
    ids, ts, emb = [], [], []
    for a in range(n_accounts):
        ids += [f"{prefix}{a}"] * n
        ts += list(range(n))
        emb.append(rng.normal(size=(n, dim)))
    return np.array(ids, dtype=object), np.array(ts), np.vstack(emb)


def test_prada_flags_perturbation_queries():
    # benign: independent random queries (nearest-earlier distances look roughly normal); the attacker
    # sends tiny perturbations of three seed queries, PRADA's synthetic-query pattern: distances pile up
    # near zero with three large outliers, far from normal
    rng = np.random.default_rng(0)
    ids, ts, emb = _gauss_arrays(rng, "b", 100, 30)
    det = PradaBaseline(target_fpr=0.01).fit_arrays(ids, ts, emb)
    tid, tts, temb = _gauss_arrays(rng, "t", 50, 30)
    seeds = rng.normal(size=(3, 16))
    atk = seeds[np.arange(30) % 3] + 0.01 * rng.normal(size=(30, 16))
    out = det.score_arrays(np.concatenate([tid, ["atk"] * 30]), np.concatenate([tts, np.arange(30)]),
                           np.vstack([temb, atk])).to_pylist()
    row = next(r for r in out if r["account_id"] == "atk")
    assert row["flagged"]
    assert sum(r["flagged"] for r in out if r["account_id"] != "atk") <= 2


def test_prada_constant_distances_are_maximally_abnormal():
    det = PradaBaseline(target_fpr=0.05, min_requests=5).fit(_table(_benign(1)))
    same = [("rep", float(i), "exactly the same prompt every time") for i in range(12)]
    row = det.score(_table(_benign(2, 5) + same)).to_pylist()
    rep = next(r for r in row if r["account_id"] == "rep")
    assert rep["statistic"] == 1.0 and rep["flagged"] and rep["score"] > 0.5


def test_too_few_requests_not_scored():
    det = MMDBaseline(target_fpr=0.05, min_requests=5).fit(_table(_benign(1)))
    out = det.score(_table([("tiny", 1.0, "hello"), ("tiny", 2.0, "hi")])).to_pylist()
    assert math.isnan(out[0]["statistic"]) and out[0]["score"] == 0.0 and not out[0]["flagged"]
    assert "not tested" in out[0]["explanation"]


def test_baselines_registered():
    names = set(available_detectors())
    assert {"baseline-volume", "baseline-prada", "baseline-mmd"} <= names


def test_score_is_the_statistic_squashed_around_the_threshold():
    from distillguard.bench.baselines import squash

    th = 12.0
    xs = [0.0, 6.0, 11.9, 12.0, 12.1, 100.0, 1e6, 2e6]
    ys = [squash(x, th) for x in xs]
    assert all(0.0 <= y <= 1.0 for y in ys)
    assert all(a < b for a, b in zip(ys, ys[1:]))  # strictly increasing: rankings (AP) unchanged
    assert ys[3] == 0.5 and ys[2] < 0.5 < ys[4]  # flagged iff above the threshold
    assert squash(float("nan"), th) == 0.0
