"""``distillguard report``: render the investigator report from a findings folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

_TABLE_NAMES = {"events": ("events.parquet", "events", "events.duckdb"),
                "signals": ("signals.parquet", "signals"),
                "edges": ("edges.parquet", "edges")}


def _find(folder: Path, kind: str) -> Path | None:
    for name in _TABLE_NAMES[kind]:
        p = folder / name
        if p.exists():
            return p
    return None


def report(
    findings_dir: Path = typer.Argument(..., help="Folder with the scan's accounts.csv and campaigns.json."),
    out: Path = typer.Option(..., "--out", "-o", help="HTML file to write."),
    events: Optional[Path] = typer.Option(
        None, "--events", help="Events (parquet file or folder, or DuckDB file with table 'events') for timelines."),
    signals: Optional[Path] = typer.Option(
        None, "--signals", help="Per-request signals table (default: signals.parquet in FINDINGS_DIR if present)."),
    edges: Optional[Path] = typer.Option(
        None, "--edges", help="Account-link edges table (default: edges.parquet in FINDINGS_DIR if present)."),
    title: Optional[str] = typer.Option(None, "--title", help="Report title."),
    max_accounts: int = typer.Option(500, "--max-accounts", min=1, help="Rows in the top flagged accounts table."),
) -> None:
    """Write the investigator report: one self-contained HTML file (no network needed to open it).

    Example: [bold]distillguard report findings --out findings/report.html[/]
    """
    from distillguard.cli import EXIT_INPUT
    from distillguard.report import ReportInputError, render_report

    if not findings_dir.is_dir():
        typer.echo(f"error: {findings_dir}: findings folder not found", err=True)
        raise typer.Exit(EXIT_INPUT)
    accounts = findings_dir / "accounts.csv"
    campaigns = findings_dir / "campaigns.json"
    for p in (accounts, campaigns):
        if not p.exists():
            typer.echo(f"error: {p}: not found (run the scan first)", err=True)
            raise typer.Exit(EXIT_INPUT)
    try:
        path = render_report(
            accounts, campaigns,
            events=events if events is not None else _find(findings_dir, "events"),
            signals=signals if signals is not None else _find(findings_dir, "signals"),
            edges=edges if edges is not None else _find(findings_dir, "edges"),
            out_path=out, title=title, max_account_rows=max_accounts,
        )
    except ReportInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
