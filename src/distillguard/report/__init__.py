"""The investigator report: findings rendered as one self-contained HTML file (see docs/report.md)."""

from __future__ import annotations

from .load import ReportInputError
from .render import render_report

__all__ = ["render_report", "ReportInputError"]
