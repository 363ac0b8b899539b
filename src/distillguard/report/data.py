"""Aggregates the report needs from the optional events / signals / edges tables, computed in DuckDB.

Only grouped results come back to Python (hourly counts per campaign, per-account totals, a few prompts),
so a report over millions of events stays small and quick.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb
import pyarrow as pa

from .load import ReportInputError, attach_table

__all__ = ["Aggregates", "aggregate"]

#: linking kinds derived from events/signals when no edges table is given: (view, column, kind)
_DERIVED_LINKS = (
    ("ev", "payment_fingerprint", "payment"),
    ("ev", "ip", "ip"),
    ("ev", "user_agent", "user_agent"),
    ("sg", "template_id", "template"),
    ("sg", "system_prompt_id", "system_prompt"),
)


class Aggregates:
    """What the optional tables contributed; every field is empty when its table was not given."""

    def __init__(self) -> None:
        self.has_events = False
        self.has_signals = False
        self.has_edges = False
        self.edges_source = ""  # "edges table" | "events" | ""
        #: campaign index -> list of (hour index, requests, reasoning_tokens)
        self.hourly: dict[int, list[tuple[int, int, int]]] = {}
        #: campaign index -> {hour index: extraction-demanding requests}
        self.hourly_extract: dict[int, dict[int, int]] = {}
        #: campaign index -> totals from events: requests, reasoning_tokens, output_tokens, first, last (epoch s)
        self.totals: dict[int, dict[str, Any]] = {}
        #: campaign index -> {capability: share} from signals
        self.capabilities: dict[int, dict[str, float]] = {}
        #: campaign index -> [(prompt prefix, times seen)]
        self.prompts: dict[int, list[tuple[str, int]]] = {}
        #: account id -> {requests, reasoning_tokens, first, last, extraction_share, capability}
        self.account_stats: dict[str, dict[str, Any]] = {}
        #: campaign index -> [(kind, share of drawn accounts)] for links nearly all drawn accounts share
        self.campaign_wide: dict[int, list[tuple[str, float]]] = {}
        #: campaign index -> list of (src, dst, kind)
        self.edges: dict[int, list[tuple[str, str, str]]] = {}


def _ts_expr(cols: list[str]) -> str:
    return "epoch(CAST(timestamp AS TIMESTAMPTZ))" if "timestamp" in cols else "NULL"


def aggregate(
    members: pa.Table,
    displayed: pa.Table,
    top_accounts: list[str],
    *,
    events: Any = None,
    signals: Any = None,
    edges: Any = None,
    prompts_for: set[int] | None = None,
    extraction_threshold: float = 0.5,
    max_edges: int = 3000,
) -> Aggregates:
    """Compute :class:`Aggregates`.

    members: (ci int32, account_id string) every member of every campaign; displayed: the subset drawn in
    each campaign's graph; top_accounts: ids of the accounts table rows; prompts_for: campaign indices that
    need sample prompts from the events.
    """
    agg = Aggregates()
    if events is None and signals is None and edges is None:
        return agg
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        con.register("members", members)
        con.register("displayed", displayed)
        con.register("top_ids", pa.table({"account_id": pa.array(top_accounts, pa.string())}))
        ev_cols = attach_table(con, "ev", events, table="events")
        sg_cols = attach_table(con, "sg", signals, table="signals")
        ed_cols = attach_table(con, "ed", edges, table="edges")
        for cols, what in ((ev_cols, "events"), (sg_cols, "signals")):
            if cols is not None and not {"account_id", "timestamp"} <= set(cols):
                missing = sorted({"account_id", "timestamp"} - set(cols))
                raise ReportInputError(f"{what} table: field {missing[0]!r}: missing column")
        agg.has_events = ev_cols is not None
        agg.has_signals = sg_cols is not None
        agg.has_edges = ed_cols is not None
        if ev_cols is not None:
            _events_aggregates(con, agg, ev_cols, prompts_for or set())
        if sg_cols is not None:
            _signals_aggregates(con, agg, sg_cols, extraction_threshold, use_for_volume=ev_cols is None)
        if ed_cols is not None:
            if not {"src", "dst", "kind"} <= set(ed_cols):
                raise ReportInputError("edges table: fields 'src', 'dst', 'kind' are required")
            _given_edges(con, agg, ed_cols, max_edges)
            agg.edges_source = "edges table"
        elif ev_cols is not None or sg_cols is not None:
            _derived_edges(con, agg, ev_cols or [], sg_cols or [], max_edges)
            agg.edges_source = "shared values in events"
    finally:
        con.close()
    return agg


def _num(cols: list[str], name: str) -> str:
    return f"coalesce(CAST({name} AS BIGINT), 0)" if name in cols else "0"


def _events_aggregates(con, agg: Aggregates, cols: list[str], prompts_for: set[int]) -> None:
    ts = _ts_expr(cols)
    rt = _num(cols, "reasoning_tokens")
    ot = _num(cols, "output_tokens")
    base = f"""
        SELECT m.ci AS ci, e.account_id AS account_id, {ts} AS t, {rt} AS rt, {ot} AS ot
        FROM ev e JOIN members m ON e.account_id = m.account_id"""
    rows = con.execute(
        f"""SELECT ci, CAST(floor(t / 3600) AS BIGINT) AS h, count(*), sum(rt)
            FROM ({base}) WHERE t IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"""
    ).fetchall()
    for ci, h, n, r in rows:
        agg.hourly.setdefault(ci, []).append((int(h), int(n), int(r or 0)))
    for ci, n, r, o, first, last in con.execute(
        f"SELECT ci, count(*), sum(rt), sum(ot), min(t), max(t) FROM ({base}) GROUP BY 1"
    ).fetchall():
        agg.totals[ci] = {"requests": int(n), "reasoning_tokens": int(r or 0), "output_tokens": int(o or 0),
                          "first": first, "last": last}
    for acct, n, r, first, last in con.execute(
        f"""SELECT e.account_id, count(*), sum({rt}), min({ts}), max({ts})
            FROM ev e JOIN top_ids USING (account_id) GROUP BY 1"""
    ).fetchall():
        agg.account_stats.setdefault(acct, {}).update(
            {"requests": int(n), "reasoning_tokens": int(r or 0), "first": first, "last": last}
        )
    if prompts_for and "user_text" in cols:
        want = pa.table({"ci": pa.array(sorted(prompts_for), pa.int32())})
        con.register("want", want)
        rows = con.execute(
            """SELECT ci, p, c FROM (
                   SELECT ci, p, c, row_number() OVER (PARTITION BY ci ORDER BY c DESC, p) AS rn FROM (
                       SELECT m.ci AS ci, left(e.user_text, 600) AS p, count(*) AS c
                       FROM ev e JOIN members m ON e.account_id = m.account_id JOIN want w ON w.ci = m.ci
                       WHERE e.user_text IS NOT NULL AND length(e.user_text) > 0 GROUP BY 1, 2))
               WHERE rn <= 5 ORDER BY ci, rn"""
        ).fetchall()
        for ci, p, c in rows:
            agg.prompts.setdefault(ci, []).append((p, int(c)))


def _signals_aggregates(con, agg: Aggregates, cols: list[str], threshold: float, use_for_volume: bool) -> None:
    ts = _ts_expr(cols)
    xs = "coalesce(CAST(extraction_score AS DOUBLE), 0)" if "extraction_score" in cols else "0.0"
    cap = "coalesce(CAST(capability AS VARCHAR), 'other')" if "capability" in cols else "'other'"
    base = f"""SELECT m.ci AS ci, {ts} AS t, {xs} AS xs, {cap} AS cap
               FROM sg s JOIN members m ON s.account_id = m.account_id"""
    for ci, h, n, x in con.execute(
        f"""SELECT ci, CAST(floor(t / 3600) AS BIGINT), count(*), count(*) FILTER (WHERE xs >= ?)
            FROM ({base}) WHERE t IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2""",
        [threshold],
    ).fetchall():
        agg.hourly_extract.setdefault(ci, {})[int(h)] = int(x)
        if use_for_volume:
            agg.hourly.setdefault(ci, []).append((int(h), int(n), 0))
    if use_for_volume:
        for ci, n, first, last in con.execute(f"SELECT ci, count(*), min(t), max(t) FROM ({base}) GROUP BY 1").fetchall():
            agg.totals[ci] = {"requests": int(n), "first": first, "last": last}
    if "capability" in cols:
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        for ci, c, n in con.execute(f"SELECT ci, cap, count(*) FROM ({base}) GROUP BY 1, 2").fetchall():
            counts[ci][c] = int(n)
        for ci, mix in counts.items():
            total = sum(mix.values()) or 1
            agg.capabilities[ci] = {k: v / total for k, v in mix.items()}
    rows = con.execute(
        f"""SELECT s.account_id, count(*), avg(CASE WHEN {xs} >= ? THEN 1.0 ELSE 0.0 END), mode({cap}), min({ts}), max({ts})
            FROM sg s JOIN top_ids USING (account_id) GROUP BY 1""",
        [threshold],
    ).fetchall()
    for acct, n, share, topcap, first, last in rows:
        st = agg.account_stats.setdefault(acct, {})
        st["extraction_share"] = share
        st["capability"] = topcap
        if use_for_volume:
            st.update({"requests": int(n), "first": first, "last": last})


def _given_edges(con, agg: Aggregates, cols: list[str], max_edges: int, per_account: int = 2,
                 wide_density: float = 0.5) -> None:
    """Edges from the linking stage between drawn members. Each account keeps its ``per_account``
    heaviest links of each kind (one more for payment), so cliques do not hide the structure; a kind that
    joins ``wide_density`` of all drawn pairs or more is listed in ``campaign_wide`` instead of drawn."""
    w = "CAST(e.weight AS DOUBLE)" if "weight" in cols else "1.0"
    con.execute(
        f"""CREATE TEMP TABLE ge AS
            SELECT a.ci AS ci, CAST(e.src AS VARCHAR) AS src, CAST(e.dst AS VARCHAR) AS dst,
                   CAST(e.kind AS VARCHAR) AS kind, coalesce({w}, 0.0) AS w
            FROM ed e JOIN displayed a ON e.src = a.account_id
                      JOIN displayed b ON e.dst = b.account_id AND a.ci = b.ci
            WHERE e.src <> e.dst AND e.kind IS NOT NULL"""
    )
    wide: set[tuple[int, str]] = set()
    for ci, kind, density in con.execute(
        """SELECT g.ci, g.kind,
                  count(DISTINCT least(g.src, g.dst) || chr(0) || greatest(g.src, g.dst)) * 2.0 / (d.n * (d.n - 1))
           FROM ge g JOIN (SELECT ci, count(*) AS n FROM displayed GROUP BY ci) d ON g.ci = d.ci
           WHERE d.n >= 6 GROUP BY g.ci, g.kind, d.n"""
    ).fetchall():
        if density >= wide_density:
            wide.add((ci, kind))
            agg.campaign_wide.setdefault(ci, []).append((kind, float(min(density, 1.0))))
    rows = con.execute(
        """SELECT ci, a, b, kind FROM (
               SELECT ci, a, b, kind, row_number() OVER (
                   PARTITION BY ci, a, kind ORDER BY w DESC, hash(a || chr(0) || b), b) AS rn
               FROM (SELECT ci, src AS a, dst AS b, kind, w FROM ge
                     UNION ALL SELECT ci, dst AS a, src AS b, kind, w FROM ge))
           WHERE rn <= CASE WHEN kind = 'payment' THEN ? + 1 ELSE ? END ORDER BY ci, a, b, kind""",
        [per_account, per_account],
    ).fetchall()
    per_ci: dict[int, set[tuple[str, str, str]]] = defaultdict(set)
    for ci, a, b, kind in rows:
        if (ci, kind) in wide or len(per_ci[ci]) >= max_edges:
            continue
        per_ci[ci].add((min(a, b), max(a, b), kind))
    for ci, es in per_ci.items():
        agg.edges[ci] = sorted(es)


def _derived_edges(con, agg: Aggregates, ev_cols: list[str], sg_cols: list[str], max_edges: int,
                   per_account: int = 1, wide_share: float = 0.8) -> None:
    """Link drawn members that share values (payment method, IP, user agent, template, system prompt).

    For each kind, each account keeps its ``per_account`` partners (one more for payment methods, the
    strongest identity link) sharing the most values with it (ties
    broken by a hash, not by name), so the drawing stays a readable neighbour graph instead of cliques.
    A kind whose one value is shared by ``wide_share`` of the drawn accounts or more is not drawn but
    listed in ``campaign_wide``."""
    per_ci: dict[int, set[tuple[str, str, str]]] = defaultdict(set)
    for view, col, kind in _DERIVED_LINKS:
        if col not in (ev_cols if view == "ev" else sg_cols):
            continue
        # a value nearly every drawn account shares links them all: say so once instead of drawing it
        for ci, top_share in con.execute(
            f"""SELECT ci, max(n) / max(tot) FROM (
                    SELECT d.ci AS ci, CAST(x.{col} AS VARCHAR) AS v, count(DISTINCT d.account_id) AS n,
                           (SELECT count(*) FROM displayed d2 WHERE d2.ci = d.ci) AS tot
                    FROM {view} x JOIN displayed d ON x.account_id = d.account_id
                    WHERE x.{col} IS NOT NULL GROUP BY 1, 2) GROUP BY 1"""
        ).fetchall():
            if top_share >= wide_share:
                agg.campaign_wide.setdefault(ci, []).append((kind, float(top_share)))
        rows = con.execute(
            f"""WITH av AS (
                    SELECT DISTINCT d.ci AS ci, d.account_id AS a, CAST(x.{col} AS VARCHAR) AS v
                    FROM {view} x JOIN displayed d ON x.account_id = d.account_id WHERE x.{col} IS NOT NULL),
                pairs AS (
                    SELECT p.ci, p.a, q.a AS b, count(*) AS c
                    FROM av p JOIN av q ON p.ci = q.ci AND p.v = q.v AND p.a <> q.a GROUP BY 1, 2, 3)
                SELECT ci, a, b FROM (
                    SELECT ci, a, b, row_number() OVER (
                        PARTITION BY ci, a ORDER BY c DESC, hash(a || chr(0) || b), b) AS rn FROM pairs)
                WHERE rn <= ? ORDER BY 1, 2, 3""",
            [per_account + 1 if kind == "payment" else per_account],
        ).fetchall()
        for ci, a, b in rows:
            if any(k == kind for k, _ in agg.campaign_wide.get(ci, [])):
                continue
            if len(per_ci[ci]) < max_edges:
                per_ci[ci].add((min(a, b), max(a, b), kind))
    for ci, es in per_ci.items():
        agg.edges[ci] = sorted(es)
