"""Per-account behaviour features, written as Ibis expressions only (DuckDB by default, PySpark for scale-out).

:func:`account_features` joins the canonical ``events`` table with the per-request ``signals`` table and
returns one row per ``account_id`` with the numeric behaviour columns listed in :data:`FEATURE_COLUMNS`
(meanings in docs/detection.md). Nothing here materialises data: the caller executes the expression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

import ibis
import ibis.expr.types as ir

__all__ = ["FeatureConfig", "account_features", "FEATURE_COLUMNS", "TIME_COLUMNS", "model_releases", "time_columns"]

_LN24 = 3.1780538303479458  # ln(24)
_EFFORT_HIGH = ("high", "xhigh", "max")
_REASONING_CAPS = ("math", "code", "reasoning", "tool_use", "grading")


@dataclass
class FeatureConfig:
    """Knobs of the feature stage.

    ``releases`` maps model name to its release time (aware datetime or RFC 3339 text) and overrides the
    default, which is the first time the model appears in the traffic. A model counts as *new* (a pivot
    target) when its release is more than ``pivot_grace_hours`` after the start of the traffic.
    """

    extraction_cut: float = 0.5
    pivot_grace_hours: float = 24.0
    releases: Mapping[str, object] | None = field(default=None)


#: Columns of the table :func:`account_features` returns, in order.
FEATURE_COLUMNS = (
    "account_id", "org_id", "n_requests", "first_seen", "last_seen", "span_hours", "active_days",
    "requests_per_day", "peak_day_requests", "peak_hour_requests", "active_hours", "hour_entropy",
    "gap_cv", "gap_median_s", "single_turn_share", "tools_share", "input_tokens", "output_tokens",
    "reasoning_tokens", "out_in_ratio", "reasoning_ratio", "max_tokens_share", "mean_max_tokens",
    "high_effort_share", "extraction_share", "extraction_mean", "n_capabilities", "top_capability",
    "top_capability_share", "reasoning_capability_share", "capability_entropy", "n_templates",
    "template_diversity", "top_template_share", "benchmark_share", "n_benchmark_items",
    "benchmark_item_repeat", "n_models", "new_model_share", "pivot_lag_hours", "account_age_days",
    "n_ips", "n_api_keys", "error_share",
)


def _f(x: ir.Value) -> ir.Value:
    return x.cast("float64")


def _share(cond: ir.BooleanValue) -> ir.Value:
    return _f(cond.ifelse(1, 0)).mean()


def _to_ts(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    from distillguard.schema import parse_timestamp

    return parse_timestamp(value, "releases")


def model_releases(events: ir.Table, releases: Mapping[str, object] | None = None) -> ir.Table:
    """``model, release_ts``: first appearance of each model in the traffic, overridden by ``releases``."""
    first = events.filter(events.model.notnull()).group_by("model").aggregate(release_ts=events.timestamp.min())
    if not releases:
        return first
    import pyarrow as pa

    override = ibis.memtable(pa.table({
        "model": pa.array([str(k) for k in releases], pa.string()),
        "override_ts": pa.array([_to_ts(v) for v in releases.values()], pa.timestamp("us", tz="UTC")),
    }))
    joined = first.left_join(override, "model")
    return joined.select("model", release_ts=ibis.coalesce(joined.override_ts, joined.release_ts))


def _epoch(ts: ir.TimestampValue) -> ir.FloatingValue:
    """Epoch seconds to the millisecond, the same on every engine (Spark's ``unix_timestamp`` drops the
    fraction that DuckDB's ``epoch`` keeps; event times are read to the millisecond)."""
    return _f(ts.epoch_seconds().floor()) + _f(ts.millisecond()) / 1000.0


#: per-event time columns a caller may pass precomputed (UTC): ``epoch`` (seconds to the millisecond, float),
#: ``day`` and ``hour_ts`` (the timestamp cut to its day / hour), ``hod`` (hour of the day, 0-23)
TIME_COLUMNS = ("epoch", "day", "hour_ts", "hod")


def time_columns(timestamp) -> dict:
    """:data:`TIME_COLUMNS` of a pyarrow timestamp column (UTC, any unit), as the engine would derive them:
    the same values (seconds floored, then the millisecond added; days and hours floored, also before 1970)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = timestamp.combine_chunks() if isinstance(timestamp, pa.ChunkedArray) else timestamp
    if ts.null_count:
        raise ValueError("time_columns: null timestamps")
    us = pc.cast(pc.cast(ts, pa.timestamp("us", tz=ts.type.tz)), pa.int64()).to_numpy(zero_copy_only=False)
    typ = pa.timestamp("us")  # as DuckDB's truncation returns them (UTC wall time, no zone)
    return {
        "epoch": pa.array((us // 1_000_000).astype(np.float64) + ((us // 1000) % 1000).astype(np.float64) / 1000.0),
        "day": pa.array(us - us % 86_400_000_000).cast(typ),
        "hour_ts": pa.array(us - us % 3_600_000_000).cast(typ),
        "hod": pa.array(((us // 3_600_000_000) % 24).astype(np.int32)),
    }


_EVENT_COLS = ("event_id", "account_id", "org_id", "timestamp", "model", "ip", "api_key_id", "n_user_turns",
               "n_tools", "max_tokens", "reasoning_effort", "input_tokens", "output_tokens", "reasoning_tokens",
               "status_code", "account_created_at")
_SIGNAL_COLS = ("extraction_score", "capability", "benchmark", "benchmark_item", "template_id")


def account_features(events: ir.Table, signals: ir.Table | None, *, config: FeatureConfig | None = None) -> ir.Table:
    """One row per account with the behaviour columns of :data:`FEATURE_COLUMNS`.

    ``signals`` is joined to ``events`` on ``event_id``; pass ``None`` when ``events`` already carries the
    signal columns, one row per event (the Spark engine computes both in one pass and saves the join). Such
    a table may also carry any of the per-event time columns of :data:`TIME_COLUMNS`, computed beforehand
    (:func:`time_columns`): the engine then reads them instead of deriving them.
    """
    cfg = config or FeatureConfig()
    if signals is None:
        missing = [c for c in _EVENT_COLS + _SIGNAL_COLS if c not in events.columns]
        if missing:
            raise ValueError(f"account_features: events table without signals lacks column(s) {missing}")
        t = events.select(*_EVENT_COLS, *_SIGNAL_COLS, *[c for c in TIME_COLUMNS if c in events.columns])
    else:
        t = events.select(*_EVENT_COLS).left_join(signals.select("event_id", *_SIGNAL_COLS), "event_id")
    derive = {"epoch": lambda: _epoch(t.timestamp), "day": lambda: t.timestamp.truncate("D"),
              "hour_ts": lambda: t.timestamp.truncate("h"), "hod": lambda: t.timestamp.hour()}
    t = t.mutate(**{name: make() for name, make in derive.items() if name not in t.columns},
                 capability=t.capability.fill_null("other"))

    base = t.group_by("account_id").aggregate(
        org_id=t.org_id.max(),
        n_requests=t.count(),
        first_seen=t.timestamp.min(),
        last_seen=t.timestamp.max(),
        epoch_min=t.epoch.min(),
        epoch_max=t.epoch.max(),
        active_days=t.day.nunique(),
        active_hours=t.hod.nunique(),
        single_turn_share=_share(t.n_user_turns.fill_null(1) <= 1),
        tools_share=_share(t.n_tools.fill_null(0) > 0),
        input_tokens=_f(t.input_tokens.fill_null(0).sum()),
        output_tokens=_f(t.output_tokens.fill_null(0).sum()),
        reasoning_tokens=_f(t.reasoning_tokens.fill_null(0).sum()),
        max_tokens_share=_share(t.max_tokens.notnull()),
        mean_max_tokens=_f(t.max_tokens.mean()).fill_null(0.0),
        high_effort_share=_share(t.reasoning_effort.lower().isin(_EFFORT_HIGH).fill_null(False)),
        extraction_share=_share(t.extraction_score.fill_null(0.0) >= cfg.extraction_cut),
        extraction_mean=_f(t.extraction_score.fill_null(0.0).mean()),
        n_capabilities=t.capability.nunique(),
        reasoning_capability_share=_share(t.capability.isin(_REASONING_CAPS)),
        n_templates=t.template_id.nunique(),
        benchmark_share=_share(t.benchmark.notnull()),
        n_benchmark_rows=_f(t.benchmark_item.notnull().ifelse(1, 0).sum()),
        n_benchmark_items=t.benchmark_item.nunique(),
        n_models=t.model.nunique(),
        created_min=t.account_created_at.min(),
        n_ips=t.ip.nunique(),
        n_api_keys=t.api_key_id.nunique(),
        error_share=_share(t.status_code.fill_null(200) >= 400),
    )

    # --- per-day and per-hour peaks
    per_day = t.group_by(["account_id", "day"]).aggregate(c=t.count())
    peak_day = per_day.group_by("account_id").aggregate(peak_day_requests=per_day.c.max())
    per_hour = t.group_by(["account_id", "hour_ts"]).aggregate(c=t.count())
    peak_hour = per_hour.group_by("account_id").aggregate(peak_hour_requests=per_hour.c.max())

    # --- hour-of-day entropy (0 = one hour of the day, 1 = spread evenly over all 24)
    hod = t.group_by(["account_id", "hod"]).aggregate(c=_f(t.count()))
    hod_tot = hod.group_by("account_id").aggregate(tot=hod.c.sum())
    hod = hod.join(hod_tot, "account_id")
    hod = hod.mutate(p=hod.c / hod.tot)
    hour_ent = hod.group_by("account_id").aggregate(hour_entropy=(-(hod.p * hod.p.ln())).sum() / _LN24)

    # --- regularity: coefficient of variation of the gaps between consecutive requests
    w = ibis.window(group_by="account_id", order_by="epoch")
    gaps = t.select("account_id", "epoch").mutate(prev=ibis._.epoch.lag().over(w))
    gaps = gaps.filter(gaps.prev.notnull()).mutate(gap=ibis._.epoch - ibis._.prev)
    gap_stats = gaps.group_by("account_id").aggregate(
        gap_mean=gaps.gap.mean(), gap_std=gaps.gap.std(how="pop"), gap_median_s=gaps.gap.median(),
    )
    gap_stats = gap_stats.select(
        "account_id", "gap_median_s",
        gap_cv=(gap_stats.gap_mean > 0).ifelse(gap_stats.gap_std / gap_stats.gap_mean, 0.0),
    )

    # --- capability focus
    cap = t.group_by(["account_id", "capability"]).aggregate(c=_f(t.count()))
    cap_tot = cap.group_by("account_id").aggregate(tot=cap.c.sum(), cmax=cap.c.max())
    cap = cap.join(cap_tot, "account_id")
    cap = cap.mutate(p=cap.c / cap.tot)
    cap_stats = cap.group_by("account_id").aggregate(
        capability_entropy=(-(cap.p * cap.p.ln())).sum(),
        top_capability_share=(cap.cmax / cap.tot).max(),
        # ties go to the alphabetically first capability, so every run and every engine agrees
        top_capability=cap.capability.min(where=cap.c == cap.cmax),
    )

    # --- template concentration
    tf = t.filter(t.template_id.notnull())
    tpl = tf.group_by(["account_id", "template_id"]).aggregate(c=_f(tf.count()))
    tpl_stats = tpl.group_by("account_id").aggregate(top_template_c=tpl.c.max())

    # --- model pivots: first use of a newly released model, relative to its release
    releases = model_releases(events, cfg.releases)
    start = events.timestamp.min().as_scalar()
    grace_s = cfg.pivot_grace_hours * 3600.0
    releases = releases.mutate(
        release_epoch=_epoch(releases.release_ts),
        is_new=_epoch(releases.release_ts) > _epoch(start) + grace_s,
    )
    tm = t.filter(t.model.notnull())
    am = tm.group_by(["account_id", "model"]).aggregate(first_use=tm.epoch.min(), c=_f(tm.count()))
    am = am.join(releases, "model")
    am = am.filter(am.is_new)
    piv = am.group_by("account_id").aggregate(
        pivot_lag_hours=((am.first_use - am.release_epoch) / 3600.0).min(),
        new_model_requests=am.c.sum(),
    )

    out = base
    for extra in (peak_day, peak_hour, hour_ent, gap_stats, cap_stats, tpl_stats, piv):
        out = out.left_join(extra, "account_id").drop("account_id_right")
    n = _f(out.n_requests)
    span_h = (out.epoch_max - out.epoch_min) / 3600.0
    created_epoch = _epoch(out.created_min)
    out = out.mutate(
        span_hours=span_h,
        requests_per_day=n / ibis.greatest(span_h / 24.0, 1.0),
        out_in_ratio=out.output_tokens / ibis.greatest(out.input_tokens, 1.0),
        reasoning_ratio=out.reasoning_tokens / ibis.greatest(out.output_tokens, 1.0),
        template_diversity=_f(out.n_templates) / n,
        top_template_share=out.top_template_c.fill_null(0.0) / n,
        benchmark_item_repeat=(out.n_benchmark_rows > 0).ifelse(
            1.0 - _f(out.n_benchmark_items) / ibis.greatest(out.n_benchmark_rows, 1.0), 0.0),
        new_model_share=out.new_model_requests.fill_null(0.0) / n,
        account_age_days=(out.epoch_min - created_epoch) / 86400.0,
        gap_cv=out.gap_cv.fill_null(0.0),
        hour_entropy=out.hour_entropy.fill_null(0.0),
    )
    return out.select(*FEATURE_COLUMNS)
