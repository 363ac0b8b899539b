"""Chart geometry for the report, drawn as inline SVG by the template (no JavaScript library, no network).

Functions here return plain numbers and labels; the template turns them into SVG elements with
autoescaping, so untrusted text (account ids) never becomes markup.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .text import clean, fmt_num, human

__all__ = ["KIND_COLORS", "CAP_COLORS", "kind_color", "cap_color", "timeline", "graph", "bar_segments"]

#: edge kind -> colour (docs/architecture.md edge kinds); unknown kinds are grey.
KIND_COLORS = {
    "payment": "#d1495b",
    "ip": "#edae49",
    "ip24": "#c9a227",
    "asn": "#a68a64",
    "user_agent": "#8d6cab",
    "created_burst": "#00798c",
    "template": "#30638e",
    "template_set": "#5b8fc9",
    "sync": "#e07a1f",
    "partition": "#2a9d8f",
    "system_prompt": "#6a4c93",
    "peer_intel": "#3d3d3d",
}
#: how strongly a link kind pulls two accounts together in the layout (identity links pull hardest)
_KIND_PULL = {"payment": 4.0, "system_prompt": 2.0, "created_burst": 2.0, "peer_intel": 2.0, "ip": 1.5,
              "sync": 1.5, "partition": 1.5, "ip24": 1.0, "asn": 0.5, "user_agent": 0.5, "template": 0.7,
              "template_set": 0.7}
CAP_COLORS = {
    "math": "#30638e",
    "code": "#2a9d8f",
    "reasoning": "#6a4c93",
    "tool_use": "#e07a1f",
    "grading": "#d1495b",
    "chat": "#9aa5b1",
    "other": "#cbd2d9",
}
_EXTRA = ["#577590", "#f3722c", "#43aa8b", "#90be6d", "#f9c74f", "#277da1", "#b5838d"]


def kind_color(kind: str) -> str:
    if kind in KIND_COLORS:
        return KIND_COLORS[kind]
    return "#8a8f98"


def cap_color(name: str, i: int = 0) -> str:
    return CAP_COLORS.get(name, _EXTRA[i % len(_EXTRA)])


def bar_segments(mix: dict[str, float], limit: int = 8) -> list[dict[str, Any]]:
    """Stacked 100% bar: one segment per share (largest first), the tail folded into 'other'."""
    items = sorted(((k, v) for k, v in mix.items() if v and v > 0), key=lambda kv: (-kv[1], kv[0]))
    total = sum(v for _, v in items)
    if total <= 0:
        return []
    if len(items) > limit:
        rest = sum(v for _, v in items[limit - 1:])
        items = items[: limit - 1] + [("(others)", rest)]
    out, x = [], 0.0
    for i, (k, v) in enumerate(items):
        share = v / total
        out.append({"name": clean(k, 40), "share": share, "x": 100 * x, "w": 100 * share,
                    "color": cap_color(k, i)})
        x += share
    return out


# --- timelines ---------------------------------------------------------------------------------------------

_BINS = (1, 2, 3, 4, 6, 12, 24, 48, 72, 168, 336, 720)
_TICKS = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720, 1440, 2880, 8760)
W, LEFT, RIGHT = 880.0, 62.0, 14.0


def _hour_label(h: int, step: int) -> str:
    dt = datetime.fromtimestamp(h * 3600, tz=timezone.utc)
    if step < 24:
        return dt.strftime("%b %d %H:00")
    return dt.strftime("%b %d") if step < 8760 else dt.strftime("%Y")


def _bin_label(b: int) -> str:
    if b == 1:
        return "per hour"
    if b % 24 == 0:
        d = b // 24
        return "per day" if d == 1 else ("per week" if d == 7 else f"per {d} days")
    return f"per {b} hours"


def timeline(hourly: list[tuple[int, int, int]], extract: dict[int, int] | None, *, has_tokens: bool,
             max_bins: int = 240) -> dict[str, Any] | None:
    """Two stacked bar panels over one time axis: requests (with the reasoning-demanding share) and
    reasoning tokens, binned per hour (coarser when the span would need more than ``max_bins`` bars)."""
    if not hourly:
        return None
    hours = [h for h, _, _ in hourly]
    h_min, h_max = min(hours), max(hours)
    span = h_max - h_min + 1
    b = next((x for x in _BINS if math.ceil(span / x) <= max_bins), _BINS[-1])
    start = (h_min // b) * b
    nb = (h_max - start) // b + 1
    req = np.zeros(nb, dtype=np.int64)
    tok = np.zeros(nb, dtype=np.int64)
    ext = np.zeros(nb, dtype=np.int64)
    for h, n, r in hourly:
        i = (h - start) // b
        req[i] += n
        tok[i] += r
    for h, x in (extract or {}).items():
        i = (h - start) // b
        if 0 <= i < nb:
            ext[i] += x
    plot_w = W - LEFT - RIGHT
    bw = plot_w / nb
    gap = 0.18 * bw if bw >= 3 else 0.0
    panels = []
    y0 = 22.0
    specs = [("Requests", req, "bar-req", 120.0)]
    if has_tokens:
        specs.append(("Reasoning tokens", tok, "bar-tok", 100.0))
    for title, values, cls, ph in specs:
        vmax = int(values.max()) if nb else 0
        top = vmax if vmax > 0 else 1
        bars, overlay = [], []
        for i in range(nb):
            v = int(values[i])
            if v <= 0:
                continue
            hgt = ph * v / top
            x = LEFT + i * bw + gap / 2
            h0 = start + i * b
            when = _hour_label(h0, 1 if b < 24 else 24) + " UTC"
            tip = f"{when} \u00b7 {fmt_num(v)} {title.lower()}"
            if cls == "bar-req" and extract is not None:
                tip += f" \u00b7 {fmt_num(int(ext[i]))} demand reasoning"
                xv = int(ext[i])
                if xv > 0:
                    xh = ph * min(xv, v) / top
                    overlay.append({"x": round(x, 2), "y": round(y0 + ph - xh, 2), "w": round(max(bw - gap, 0.6), 2),
                                    "h": round(xh, 2)})
            bars.append({"x": round(x, 2), "y": round(y0 + ph - hgt, 2), "w": round(max(bw - gap, 0.6), 2),
                         "h": round(max(hgt, 0.5), 2), "tip": tip})
        grid = [{"y": round(y0 + ph - ph * f, 2), "label": human(top * f) if vmax else "0"} for f in (0, 0.5, 1)]
        panels.append({"title": title, "cls": cls, "y0": y0, "h": ph, "bars": bars, "overlay": overlay,
                       "grid": grid, "total": int(values.sum()), "peak": vmax})
        y0 += ph + 30.0
    axis_y = y0 - 30.0 + 4.0
    # ticks on round UTC boundaries
    step = next((s for s in _TICKS if span / s <= 7), _TICKS[-1])
    ticks = []
    first = -(-start // step) * step
    end_h = start + nb * b
    for h in range(first, end_h + 1, step):
        x = LEFT + (h - start) / b * bw
        if LEFT - 0.5 <= x <= W - RIGHT + 0.5:
            anchor = "start" if x < LEFT + 30 else ("end" if x > W - RIGHT - 30 else "middle")
            ticks.append({"x": round(x, 2), "label": _hour_label(h, step), "anchor": anchor})
    return {"width": W, "height": axis_y + 22.0, "left": LEFT, "right": W - RIGHT, "axis_y": axis_y,
            "panels": panels, "ticks": ticks, "bin": _bin_label(b), "has_extract": extract is not None,
            "peak_req": int(req.max()), "bins": nb}


# --- campaign graph ----------------------------------------------------------------------------------------

GW, GH, PAD = 640.0, 430.0, 18.0


def graph(nodes: list[dict[str, Any]], edges: list[tuple[str, str, str]], *, seed: int = 7) -> dict[str, Any]:
    """Force-directed layout of member accounts; one line per (pair, link kind), parallel when several.

    nodes: dicts with ``account_id``, ``score``, ``flagged``; edges: (src, dst, kind) between node ids.
    Accounts with no link among the drawn ones are lined up along the bottom."""
    import igraph as ig

    index = {n["account_id"]: i for i, n in enumerate(nodes)}
    pair_kinds: dict[tuple[int, int], set[str]] = {}
    for s, d, k in edges:
        a, c = index.get(s), index.get(d)
        if a is None or c is None or a == c:
            continue
        key = (min(a, c), max(a, c))
        pair_kinds.setdefault(key, set()).add(k)
    linked = sorted({i for p in pair_kinds for i in p})
    lonely = [i for i in range(len(nodes)) if i not in set(linked)]
    pos = np.zeros((len(nodes), 2))
    strip = 34.0 if lonely else 0.0
    if linked:
        sub = {v: j for j, v in enumerate(linked)}
        g = ig.Graph(n=len(linked), edges=[(sub[a], sub[c]) for a, c in pair_kinds])
        rng = np.random.default_rng(seed)
        init = rng.uniform(-1, 1, size=(len(linked), 2)).tolist()
        weights = [sum(_KIND_PULL.get(k, 1.0) for k in ks) for ks in pair_kinds.values()]
        ig.set_random_number_generator(random.Random(seed))  # same input, same picture
        try:
            lay = np.array(g.layout_fruchterman_reingold(seed=init, niter=500, weights=weights).coords, dtype=float)
        finally:
            ig.set_random_number_generator(random)
        if len(linked) == 1:
            lay = np.zeros((1, 2))
        lo, hi = lay.min(axis=0), lay.max(axis=0)
        rngw = np.where(hi - lo > 1e-9, hi - lo, 1.0)
        norm = (lay - lo) / rngw
        if len(linked) <= 2:
            norm = np.array([[0.35 + 0.3 * j, 0.5] for j in range(len(linked))])
        pos[linked, 0] = PAD + norm[:, 0] * (GW - 2 * PAD)
        pos[linked, 1] = PAD + norm[:, 1] * (GH - 2 * PAD - strip)
    if lonely:
        per_row = max(1, int((GW - 2 * PAD) // 12))
        rows = math.ceil(len(lonely) / per_row)
        strip = max(strip, rows * 12.0 + 10)
        for j, i in enumerate(lonely):
            pos[i, 0] = PAD + (j % per_row) * 12.0 + 6
            pos[i, 1] = GH - strip + 12 + (j // per_row) * 12.0 if linked else PAD + 6 + (j // per_row) * 12.0
    kinds_seen: dict[str, int] = {}
    lines = []
    for (a, c), ks in sorted(pair_kinds.items()):
        ks_sorted = sorted(ks, key=lambda k: (list(KIND_COLORS).index(k) if k in KIND_COLORS else 99, k))
        (x1, y1), (x2, y2) = pos[a], pos[c]
        dx, dy = x2 - x1, y2 - y1
        length = math.hypot(dx, dy) or 1.0
        ox, oy = -dy / length, dx / length
        m = len(ks_sorted)
        for j, k in enumerate(ks_sorted):
            off = (j - (m - 1) / 2) * 2.2
            kinds_seen[k] = kinds_seen.get(k, 0) + 1
            lines.append({"x1": round(x1 + ox * off, 1), "y1": round(y1 + oy * off, 1),
                          "x2": round(x2 + ox * off, 1), "y2": round(y2 + oy * off, 1),
                          "color": kind_color(k), "kind": clean(k, 30), "a": a, "b": c})
    circles = []
    for i, n in enumerate(nodes):
        score = n.get("score")
        r = 3.2 + 4.0 * (score if isinstance(score, (int, float)) and 0 <= score <= 1 else 0.2)
        circles.append({"i": i, "x": round(float(pos[i, 0]), 1), "y": round(float(pos[i, 1]), 1), "r": round(r, 1),
                        "cls": "n-flag" if n.get("flagged") else "n-mem",
                        "tip": f"{clean(n['account_id'], 80)} \u00b7 score {fmt_num(score, 2) if score is not None else '-'}"})
    legend = [{"kind": clean(k, 30), "color": kind_color(k), "pairs": v}
              for k, v in sorted(kinds_seen.items(), key=lambda kv: -kv[1])]
    return {"width": GW, "height": GH, "lines": lines, "circles": circles, "legend": legend,
            "n_linked": len(linked), "n_lonely": len(lonely), "lonely_y": GH - strip if (lonely and linked) else None}
