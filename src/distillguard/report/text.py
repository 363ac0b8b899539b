"""Making untrusted text safe to *look at* and numbers easy to read.

HTML escaping is Jinja's job (autoescape is always on). This module handles what escaping does not:
invisible and direction-changing characters (bidi overrides, zero-width joiners, control characters) that
could make an account id or prompt display as something it is not. They are replaced by visible markers
such as ``⟦U+202E⟧`` so the analyst sees exactly what was sent.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any

__all__ = ["clean", "human", "pct", "fmt_num", "fmt_ts", "js_json"]

# Characters shown as markers: C0/C1 controls (not tab/newline), bidi embeddings/overrides/isolates and
# marks, zero-width and invisible fillers, BOM, line/paragraph separators, variation selectors, tag
# characters, surrogates and private-use code points.
_SUSPECT = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u2069\u3164\ufe00-\ufe0f\ufeff\uffa0\ud800-\udfff"
    "\ue000-\uf8ff\U000e0000-\U000e007f\U000f0000-\U0010ffff]"
)


def _marker(m: re.Match) -> str:
    return f"\u27e6U+{ord(m.group()):04X}\u27e7"


def clean(value: Any, limit: int | None = None, *, keep_newlines: bool = False) -> str:
    """``value`` as display text: suspect/control characters made visible, truncated to ``limit`` chars."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit * 4:
        text = text[: limit * 4]  # bound the work before scanning
    if keep_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    else:
        text = " ".join(text.split())
    result = _SUSPECT.sub(_marker, text)
    if limit is not None and len(result) > limit:
        result = result[: max(limit - 1, 0)].rstrip() + "\u2026"
    return result


def fmt_num(value: Any, digits: int = 0) -> str:
    """Exact number with thousands separators (``1,234,567``); blank for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, (int, float)):
        if digits == 0:
            return f"{int(round(value)):,}"
        return f"{value:,.{digits}f}"
    return clean(value, 40)


def human(value: Any) -> str:
    """Short human form: ``950``, ``12.3 K``, ``4.57 M``, ``1.20 B``."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "\u2013"
    v = float(value)
    for div, suffix in ((1e12, " T"), (1e9, " B"), (1e6, " M"), (1e3, " K")):
        if abs(v) >= div:
            q = v / div
            return f"{q:.3g}{suffix}" if q < 100 else f"{q:.0f}{suffix}"
    return f"{v:.0f}" if v == int(v) else f"{v:.2g}"


def pct(value: Any) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "\u2013"
    return f"{100 * value:.0f}%" if value >= 0.1 or value == 0 else f"{100 * value:.1f}%"


def fmt_ts(value: Any) -> str:
    """UTC ``YYYY-MM-DD HH:MM`` from a datetime, epoch seconds or RFC 3339 text; cleaned text otherwise."""
    if value is None or value == "":
        return "\u2013"
    ts: datetime | None = None
    if isinstance(value, datetime):
        ts = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        try:
            ts = datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            ts = None
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            ts = datetime.fromisoformat(text)
            ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
        except ValueError:
            return clean(value, 40)
    if ts is None:
        return clean(value, 40)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def to_epoch(value: Any) -> float | None:
    """Epoch seconds from a datetime / RFC 3339 text / number; None when not a time."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            return None
        return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()
    return None


def js_json(data: Any) -> str:
    """JSON safe to place inside ``<script type="application/json">``: ``<``, ``>``, ``&`` and quotes are
    written as ``\\uXXXX`` so no text can close the script element or open a comment; non-ASCII is
    escaped too (U+2028/U+2029 included)."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=str)
    return (
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")
    )
