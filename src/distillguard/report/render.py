"""``render_report``: findings (+ optional events/signals/edges) to one self-contained HTML file."""

from __future__ import annotations

import math
from importlib import resources
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from . import charts
from .data import aggregate
from .load import ReportInputError, load_accounts, load_campaigns
from .text import clean, fmt_num, fmt_ts, human, js_json, pct, to_epoch

__all__ = ["render_report", "build_model"]

#: Limits that keep the report readable (and a few MB at most) whatever the input size.
MAX_GRAPH_NODES = 150
MAX_ACCOUNT_ROWS = 500
MAX_PROMPTS = 6
PROMPT_CHARS = 280


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("distillguard.report", "templates"),
        autoescape=True,  # every template, whatever its extension
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({"human": human, "num": fmt_num, "pct": pct, "ts": fmt_ts, "clean": clean})
    return env


def _asset(name: str) -> str:
    return (resources.files("distillguard.report") / "templates" / name).read_text(encoding="utf-8")


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _evidence_rows(items: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for it in items:
        value, thr = it.get("value"), it.get("threshold")
        v, t = _finite(value), _finite(thr)
        op = it.get("op") if isinstance(it.get("op"), str) else (">=")
        fired = None
        if v is not None and t is not None:
            fired = v <= t if op.strip() in ("<=", "<") else v >= t
        ratio = None
        if v is not None and t is not None and t > 0 and op.strip() not in ("<=", "<"):
            ratio = min(v / t, 3.0) / 3.0
        rows.append({
            "signal": clean(it.get("signal", ""), 60),
            "value": fmt_num(v, 3 if abs(v) < 10 and v != int(v) else 0) if v is not None else clean(value, 60),
            "threshold": (f"{clean(op, 3)} " + (fmt_num(t, 3 if abs(t) < 10 and t != int(t) else 0)))
            if t is not None else clean(thr, 60),
            "fired": fired, "ratio": ratio, "numeric": v is not None,
            "detail": clean(it.get("detail", ""), 300),
        })
    return rows


def _indicator_rows(ind: dict) -> list[dict[str, Any]]:
    rows = []
    for key, vals in ind.items():
        if vals is None:
            continue
        vals = vals if isinstance(vals, list) else [vals]
        if not vals:
            continue
        rows.append({"name": clean(key, 40).replace("_", " "), "count": len(vals),
                     "vals": [clean(v, 90) for v in vals[:12]], "more": max(len(vals) - 12, 0)})
    return rows


def _members(c: dict, by_campaign: dict[str, list[str]]) -> list[str]:
    if c.get("accounts"):
        return list(dict.fromkeys(c["accounts"]))
    return by_campaign.get(c["campaign_id"], [])


def build_model(accounts: pa.Table, doc: dict, *, events: Any = None, signals: Any = None, edges: Any = None,
                title: str | None = None, max_account_rows: int = MAX_ACCOUNT_ROWS,
                max_graph_nodes: int = MAX_GRAPH_NODES) -> dict[str, Any]:
    """Everything the template shows, with untrusted text cleaned and numbers formatted."""
    camps = sorted(doc["campaigns"], key=lambda c: (not c["flagged"], -(c.get("score") or 0.0), c["campaign_id"]))
    acc_rows = accounts.to_pylist()
    info = {r["account_id"]: r for r in acc_rows}
    by_campaign: dict[str, list[str]] = {}
    for r in acc_rows:
        if r["campaign_id"]:
            by_campaign.setdefault(r["campaign_id"], []).append(r["account_id"])

    # members of each campaign and the subset drawn in its graph
    m_ci, m_acct, d_ci, d_acct = [], [], [], []
    drawn: list[list[dict[str, Any]]] = []
    for ci, c in enumerate(camps):
        mem = _members(c, by_campaign)
        m_ci += [ci] * len(mem)
        m_acct += mem
        ranked = sorted(mem, key=lambda a: (not (info.get(a) or {}).get("flagged", False),
                                            -((info.get(a) or {}).get("score") or 0.0), a))[:max_graph_nodes]
        d_ci += [ci] * len(ranked)
        d_acct += ranked
        drawn.append([{"account_id": a, "score": (info.get(a) or {}).get("score"),
                       "flagged": (info.get(a) or {}).get("flagged", False)} for a in ranked])
    members = pa.table({"ci": pa.array(m_ci, pa.int32()), "account_id": pa.array(m_acct, pa.string())})
    displayed = pa.table({"ci": pa.array(d_ci, pa.int32()), "account_id": pa.array(d_acct, pa.string())})

    top = sorted(acc_rows, key=lambda r: (not r["flagged"], -(r["score"] if r["score"] is not None else -1.0),
                                          r["account_id"]))
    top = [r for r in top if r["flagged"]][:max_account_rows] or top[: min(max_account_rows, 50)]
    need_prompts = {ci for ci, c in enumerate(camps) if not c["sample_prompts"]}
    agg = aggregate(members, displayed, [r["account_id"] for r in top], events=events, signals=signals,
                    edges=edges, prompts_for=need_prompts)

    cal = doc.get("calibration") or {}
    campaigns_out, graph_data = [], {}
    for ci, c in enumerate(camps):
        tot = agg.totals.get(ci, {})
        mem_n = c.get("n_accounts") if c.get("n_accounts") is not None else len(_members(c, by_campaign))
        flagged_n = c.get("n_flagged_accounts")
        if flagged_n is None:
            flagged_n = sum(1 for a in _members(c, by_campaign) if (info.get(a) or {}).get("flagged"))
        requests = c.get("requests") if c.get("requests") is not None else tot.get("requests")
        rtok = c.get("reasoning_tokens") if c.get("reasoning_tokens") is not None else tot.get("reasoning_tokens")
        otok = c.get("output_tokens") if c.get("output_tokens") is not None else tot.get("output_tokens")
        first = to_epoch(c.get("first_seen")) if c.get("first_seen") else tot.get("first")
        last = to_epoch(c.get("last_seen")) if c.get("last_seen") else tot.get("last")
        caps = c["capabilities"] or agg.capabilities.get(ci, {})
        if c.get("sample_prompts"):
            prompts = [{"text": clean(p, PROMPT_CHARS, keep_newlines=True), "count": None, "full_len": len(p)}
                       for p in c["sample_prompts"][:MAX_PROMPTS]]
        else:
            prompts = [{"text": clean(p, PROMPT_CHARS, keep_newlines=True), "count": n, "full_len": len(p)}
                       for p, n in agg.prompts.get(ci, [])[:MAX_PROMPTS]]
        g = None
        if agg.edges_source and drawn[ci]:
            g = charts.graph(drawn[ci], agg.edges.get(ci, []))
            graph_data[f"g{ci}"] = [
                [n["account_id"], n["score"], bool(n["flagged"]), (info.get(n["account_id"]) or {}).get("reasons")]
                for n in drawn[ci]
            ]
        tl = charts.timeline(agg.hourly.get(ci, []), agg.hourly_extract.get(ci) if agg.has_signals else None,
                             has_tokens=agg.has_events)
        edges_summary = []
        for e in c["edges"]:
            kind = str(e.get("kind", ""))
            edges_summary.append({"kind": clean(kind, 30), "color": charts.kind_color(kind),
                                  "pairs": _finite(e.get("pairs")), "accounts": _finite(e.get("accounts")),
                                  "weight": _finite(e.get("weight")), "detail": clean(e.get("detail", ""), 240)})
        span_h = (last - first) / 3600 if first is not None and last is not None else None
        campaigns_out.append({
            "ci": ci, "anchor": f"campaign-{ci + 1}", "id": clean(c["campaign_id"], 80),
            "score": c.get("score"), "flagged": c["flagged"], "n_accounts": mem_n, "n_flagged": flagged_n,
            "requests": requests, "reasoning_tokens": rtok, "output_tokens": otok,
            "first_seen": fmt_ts(first), "last_seen": fmt_ts(last),
            "span": (f"{span_h:.0f} h" if span_h < 72 else f"{span_h / 24:.1f} days") if span_h is not None else None,
            "caps": charts.bar_segments(caps), "benchmarks": charts.bar_segments(c["benchmarks"]),
            "top_cap": max(caps, key=caps.get) if caps else None,
            "edges": edges_summary, "evidence": _evidence_rows(c["evidence"]),
            "prompts": prompts, "prompts_from_events": not c.get("sample_prompts") and bool(prompts),
            "atlas": [{"id": clean(a.get("id", ""), 30), "name": clean(a.get("name", ""), 120)} for a in c["atlas"]],
            "indicators": _indicator_rows(c["indicators"]), "graph": g, "graph_key": f"g{ci}",
            "graph_total": len(_members(c, by_campaign)), "timeline": tl,
            "campaign_wide": [{"kind": clean(k, 30), "share": sh, "color": charts.kind_color(k)}
                              for k, sh in agg.campaign_wide.get(ci, [])],
        })

    flagged_c = [c for c in campaigns_out if c["flagged"]]
    for c in campaigns_out:
        c["first_below"] = c["last_below"] = False
    below = [c for c in campaigns_out if not c["flagged"]]
    if below:
        below[0]["first_below"] = True
        below[-1]["last_below"] = True

    def total(key: str) -> int | None:
        vals = [c[key] for c in flagged_c if isinstance(c[key], (int, float))]
        return sum(vals) if vals else (0 if not flagged_c else None)

    firsts = [to_epoch(c.get("first_seen")) or agg.totals.get(ci, {}).get("first") for ci, c in enumerate(camps) if c["flagged"]]
    lasts = [to_epoch(c.get("last_seen")) or agg.totals.get(ci, {}).get("last") for ci, c in enumerate(camps) if c["flagged"]]
    firsts = [f for f in firsts if f is not None]
    lasts = [x for x in lasts if x is not None]
    n_flagged_accounts = sum(1 for r in acc_rows if r["flagged"])
    verdict = {
        "n_campaigns": len(flagged_c), "n_campaigns_all": len(campaigns_out),
        "n_accounts": total("n_accounts"), "n_flagged_accounts": n_flagged_accounts,
        "n_accounts_all": len(acc_rows),
        "requests": total("requests"), "reasoning_tokens": total("reasoning_tokens"),
        "output_tokens": total("output_tokens"),
        "first": fmt_ts(min(firsts)) if firsts else None, "last": fmt_ts(max(lasts)) if lasts else None,
        "top_caps": _top_caps(flagged_c),
    }

    camp_anchor = {c["campaign_id"]: f"campaign-{ci + 1}" for ci, c in enumerate(camps)}
    rows = []
    for rank, r in enumerate(top, 1):
        st = agg.account_stats.get(r["account_id"], {})
        rows.append({
            "rank": rank, "id": clean(r["account_id"], 80), "score": r["score"], "flagged": r["flagged"],
            "campaign": clean(r["campaign_id"], 40) if r["campaign_id"] else "",
            "campaign_anchor": camp_anchor.get(r["campaign_id"]) if r["campaign_id"] else None,
            "reasons": clean(r["reasons"], 160), "requests": st.get("requests"),
            "reasoning_tokens": st.get("reasoning_tokens"), "extraction_share": st.get("extraction_share"),
            "capability": clean(st.get("capability"), 20) if st.get("capability") else "",
            "first": fmt_ts(st.get("first")) if st.get("first") is not None else "",
            "last": fmt_ts(st.get("last")) if st.get("last") is not None else "",
        })

    # JSON for the page script: graph node details (cleaned) and counts the script checks against the DOM.
    data = {
        "graphs": {k: [[clean(a, 120), s, f, clean(r, 400)] for a, s, f, r in v] for k, v in graph_data.items()},
        "campaigns": [{"id": c["id"], "anchor": c["anchor"], "flagged": c["flagged"]} for c in campaigns_out],
        "n_account_rows": len(rows),
    }
    gen = doc.get("generated_at")
    return {
        "title": clean(title, 120) if title else "Distillation campaign report",
        "generated_at": fmt_ts(gen) if gen else None,
        "rendered_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "calibration": {"threshold": _finite(cal.get("threshold")), "target_fpr": _finite(cal.get("target_fpr")),
                        "baseline": clean(cal.get("baseline"), 60) if cal.get("baseline") else None},
        "verdict": verdict, "campaigns": campaigns_out, "accounts": rows,
        "accounts_truncated": max(0, (n_flagged_accounts or len(acc_rows)) - len(rows)),
        "has_events": agg.has_events, "has_signals": agg.has_signals, "edges_source": agg.edges_source,
        "kind_colors": charts.KIND_COLORS, "data_json": Markup(js_json(data)),
    }


def _top_caps(campaigns: list[dict]) -> list[dict[str, Any]]:
    weights: dict[str, float] = {}
    for c in campaigns:
        w = c["requests"] if isinstance(c["requests"], (int, float)) else 1
        for seg in c["caps"]:
            weights[seg["name"]] = weights.get(seg["name"], 0.0) + seg["share"] * w
    return charts.bar_segments(weights)[:4]


def render_report(
    accounts: pa.Table | str | os.PathLike | None,
    campaigns: dict | str | os.PathLike | None,
    *,
    events: Any = None,
    signals: Any = None,
    edges: Any = None,
    out_path: str | os.PathLike,
    title: str | None = None,
    max_account_rows: int = MAX_ACCOUNT_ROWS,
) -> Path:
    """Write the investigator report to ``out_path`` and return its path.

    accounts: accounts.csv path or an Arrow table (``account_id`` required; ``score, flagged, campaign_id,
    reasons`` optional). campaigns: campaigns.json path or its parsed dict. events / signals / edges (all
    optional): Arrow tables, parquet files or folders, DuckDB files or connections (tables ``events``,
    ``signals``, ``edges``); they add timelines, per-account volumes, sample prompts and the link graph.
    Raises :class:`ReportInputError` for unusable inputs (message names file, line/path and field).
    """
    acc = load_accounts(accounts)
    doc = load_campaigns(campaigns)
    model = build_model(acc, doc, events=events, signals=signals, edges=edges, title=title,
                        max_account_rows=max_account_rows)
    html = _env().get_template("report.html.j2").render(css=Markup(_asset("style.css.txt")),
                                                          js=Markup(_asset("script.js.txt")), **model)
    out = Path(out_path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise ReportInputError(f"{out}: cannot write report: {exc.strerror or exc}") from None
    return out
