"""Per-account behaviour features (distillguard.features.account_features)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import ibis
import ibis.expr.types as ir
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from detect_fixtures import T0, mini_world, record, tables  # noqa: E402

from distillguard.features import FEATURE_COLUMNS, FeatureConfig, account_features  # noqa: E402


def _rows(pairs, config=None):
    ev, sg = tables(pairs)
    expr = account_features(ibis.memtable(ev), ibis.memtable(sg), config=config)
    return {r["account_id"]: r for r in expr.to_pyarrow().to_pylist()}


def test_is_a_lazy_ibis_expression_with_the_documented_columns():
    ev, sg = tables(mini_world(n_benign=3, n_attack=2))
    expr = account_features(ibis.memtable(ev), ibis.memtable(sg))
    assert isinstance(expr, ir.Table)
    assert tuple(expr.columns) == FEATURE_COLUMNS
    out = expr.to_pyarrow()
    assert out.num_rows == 5
    assert sorted(out.column("account_id").to_pylist()) == sorted(set(ev.column("account_id").to_pylist()))


def test_counts_shares_and_token_ratios():
    rows = _rows(mini_world(n_benign=4, n_attack=3))
    ring, user = rows["ring-001"], rows["user-002"]
    assert ring["n_requests"] == 60 and user["n_requests"] == 30
    assert ring["extraction_share"] == 1.0 and user["extraction_share"] == 0.0
    assert ring["top_capability"] == "math" and ring["top_capability_share"] == 1.0
    assert user["n_capabilities"] >= 3
    assert ring["out_in_ratio"] == pytest.approx(2.0) and ring["reasoning_ratio"] == pytest.approx(0.25)
    assert ring["high_effort_share"] == 1.0 and ring["max_tokens_share"] == 1.0
    assert ring["mean_max_tokens"] == 8000 and user["max_tokens_share"] == 0.0
    assert ring["benchmark_share"] == 1.0 and ring["n_benchmark_items"] == 60
    assert ring["benchmark_item_repeat"] == 0.0
    assert ring["template_diversity"] == 1.0
    assert user["top_template_share"] == pytest.approx(5 / 30)  # templates cycle over i % 7: 5 of 30 each at most
    assert ring["account_age_days"] == pytest.approx(1.0 + 1 / 1440)  # created day 4, first request day 5 + 1 min
    assert user["account_age_days"] > 190


def test_timing_regularity_and_hours():
    pairs = [record("cron", T0 + timedelta(minutes=10 * i), f"job {i}", i=i) for i in range(144)]  # 24 h, every 10 min
    pairs += [record("human", T0 + timedelta(hours=h, minutes=m), f"q {h} {m}", i=h * 100 + m)
              for h, m in [(9, 0), (9, 3), (9, 40), (11, 5), (14, 0), (14, 1), (16, 30)]]
    rows = _rows(pairs)
    cron, human = rows["cron"], rows["human"]
    assert cron["gap_cv"] == pytest.approx(0.0, abs=1e-9) and cron["gap_median_s"] == pytest.approx(600)
    assert human["gap_cv"] > 0.5
    assert cron["active_hours"] == 24 and cron["hour_entropy"] == pytest.approx(1.0)
    assert human["active_hours"] == 4 and human["hour_entropy"] < 0.5
    assert cron["peak_hour_requests"] == 6 and cron["peak_day_requests"] == 144
    assert cron["requests_per_day"] == pytest.approx(144.0)  # spans under a day count as one day


def test_model_pivot_is_relative_to_first_appearance_and_can_be_overridden():
    pairs = [record("old", T0 + timedelta(hours=i), f"a {i}", i=i, model="m1") for i in range(100)]
    # m2 first appears at T0 + 50 h (its release); "early" moves within 2 h, "late" after 3 days
    pairs += [record("early", T0 + timedelta(hours=52 + i), f"b {i}", i=i, model="m2") for i in range(10)]
    pairs += [record("late", T0 + timedelta(hours=122 + i), f"c {i}", i=i, model="m2") for i in range(10)]
    pairs.append(record("old", T0 + timedelta(hours=50), "first m2", i=999, model="m2"))
    rows = _rows(pairs)
    assert rows["early"]["pivot_lag_hours"] == pytest.approx(2.0)
    assert rows["early"]["new_model_share"] == 1.0
    assert rows["late"]["pivot_lag_hours"] == pytest.approx(72.0)
    assert rows["old"]["pivot_lag_hours"] == pytest.approx(0.0)
    assert rows["old"]["new_model_share"] == pytest.approx(1 / 101)
    # m1 exists from the start of the traffic: not a pivot target
    assert rows["old"]["n_models"] == 2
    # an operator-supplied release time 20 h earlier moves every lag by 20 h
    rows2 = _rows(pairs, FeatureConfig(releases={"m2": T0 + timedelta(hours=30)}))
    assert rows2["early"]["pivot_lag_hours"] == pytest.approx(22.0)
    # a release before the traffic started (+ grace) is not "new" at all
    rows3 = _rows(pairs, FeatureConfig(releases={"m2": "2026-02-01T00:00:00Z"}))
    assert rows3["early"]["pivot_lag_hours"] is None and rows3["early"]["new_model_share"] == 0.0


def test_benchmark_repeats_and_missing_signals():
    pairs = [record("evalrun", T0 + timedelta(minutes=i), f"item {i % 20}", i=i, benchmark="gsm8k",
                    item=f"gsm8k/{i % 20}", capability="math") for i in range(60)]
    ev, sg = tables(pairs)
    rows = _rows(pairs)
    assert rows["evalrun"]["n_benchmark_items"] == 20
    assert rows["evalrun"]["benchmark_item_repeat"] == pytest.approx(1 - 20 / 60)
    # events without a signal row still get features (signals left-joined; capability falls back to other)
    out = account_features(ibis.memtable(ev), ibis.memtable(sg.slice(0, 0))).to_pyarrow().to_pylist()[0]
    assert out["n_requests"] == 60 and out["top_capability"] == "other" and out["extraction_share"] == 0.0
    assert out["account_age_days"] is None


def test_compiles_for_pyspark_without_a_session():
    """The same expression must run on Spark: it compiles to Spark SQL (executing it is the Spark part's job)."""
    _ = ibis.pyspark  # loading the backend registers its compile options
    ev, sg = tables(mini_world(n_benign=2, n_attack=1))
    e = ibis.table(ibis.Schema.from_pyarrow(ev.schema), name="events")
    s = ibis.table(ibis.Schema.from_pyarrow(sg.schema), name="signals")
    sql = ibis.to_sql(account_features(e, s), dialect="pyspark")
    assert "GROUP BY" in sql and "`account_id`" in sql and "LAG(" in sql.upper()


def test_prejoined_events_give_the_same_features():
    """The Spark engine hands over events with their signal columns already attached (signals=None)."""
    ev, sg = tables(mini_world(n_benign=3, n_attack=2))
    joined = ev.join(sg.drop_columns([c for c in sg.column_names if c in ev.column_names and c != "event_id"]),
                     "event_id")
    a = account_features(ibis.memtable(ev), ibis.memtable(sg)).to_pyarrow().sort_by("account_id")
    b = account_features(ibis.memtable(joined), None).to_pyarrow().sort_by("account_id")
    assert a.num_rows == 5
    for ra, rb in zip(a.to_pylist(), b.to_pylist()):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], float):  # sums over a different row order may differ in the last bit
                assert ra[k] == pytest.approx(rb[k], rel=1e-12, abs=1e-12), k
            else:
                assert ra[k] == rb[k], (ra["account_id"], k)
    with pytest.raises(ValueError, match="capability"):
        account_features(ibis.memtable(ev), None)


def test_top_capability_ties_go_to_the_alphabetically_first():
    """Tied capabilities must not depend on row order (a tie once made CI flaky between two plans)."""
    for order in (["reasoning", "coding"], ["coding", "reasoning"]):
        pairs = [record("acct", T0 + timedelta(minutes=i), f"text {i}", i=i, capability=cap)
                 for i, cap in enumerate(order * 3)]
        row = _rows(pairs)["acct"]
        assert row["top_capability"] == "coding"
        assert row["top_capability_share"] == pytest.approx(0.5)


def test_epochs_keep_milliseconds():
    """Gaps of 250 ms: whole-second epochs (Spark's unix_timestamp) would give gaps of 0 or 1 s."""
    pairs = [record("ms-1", T0 + timedelta(milliseconds=250 * i), f"q{i}", i=i) for i in range(9)]
    row = _rows(pairs)["ms-1"]
    assert row["gap_median_s"] == pytest.approx(0.25, abs=1e-9)
    assert row["gap_cv"] == pytest.approx(0.0, abs=1e-9)
    assert row["span_hours"] == pytest.approx(2.0 / 3600, abs=1e-12)


def test_time_columns_from_arrow_equal_the_engines():
    """time_columns (Arrow, numpy) gives what the engine derives: epoch to the millisecond (sub-millisecond
    digits dropped), day and hour cut, hour of day; also before 1970 and on exact boundaries."""
    import numpy as np
    import pyarrow as pa

    from distillguard.features import _epoch, time_columns

    rng = np.random.default_rng(3)
    us = np.concatenate([rng.integers(-2 * 10**15, 2 * 10**15, 500),
                         [0, -1, 1, 86_400_000_000, -86_400_000_000, 3_600_000_000 - 1, 999_999, -999_999,
                          1_772_409_600_910_123]])
    ts = pa.array(us, pa.timestamp("us", tz="UTC"))
    t = ibis.memtable(pa.table({"timestamp": ts}))
    want = t.select(epoch=_epoch(t.timestamp), day=t.timestamp.truncate("D"), hour_ts=t.timestamp.truncate("h"),
                    hod=t.timestamp.hour()).to_pyarrow()
    got = time_columns(ts)
    assert got["epoch"].to_pylist() == want["epoch"].to_pylist()
    assert got["day"].to_pylist() == want["day"].to_pylist()
    assert got["hour_ts"].to_pylist() == want["hour_ts"].to_pylist()
    assert got["hod"].to_pylist() == want["hod"].to_pylist()
    with pytest.raises(ValueError):
        time_columns(pa.array([None, 1], pa.timestamp("us", tz="UTC")))
