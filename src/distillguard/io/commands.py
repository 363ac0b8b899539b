"""``distillguard ingest``: read log files into the DuckDB store, quarantining bad records."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

EXIT_INTERNAL = 1  # exit codes of distillguard.cli (not imported: cli imports this module)
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONFIG = 4


def rejected_path(db: Path) -> Path:
    """Where ``ingest`` writes rejects: ``<db stem>.rejected.jsonl`` beside the store."""
    return db.with_name(f"{db.stem}.rejected.jsonl")


def missing_inputs(paths: List[Path], mapping: Optional[Path] = None) -> Optional[str]:
    """A message naming missing input files (or the mapping file), or None when all exist; commands that
    read logs (ingest, scan) map it to exit code 3."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        return f"no such file: {', '.join(missing)}"
    if mapping is not None and not Path(mapping).is_file():
        return f"no such mapping file: {mapping}"
    return None


def load_signal_fn():
    """``distillguard.signals.compute_signals`` if that part is installed, else ``(None, why)``."""
    try:
        from distillguard.signals import compute_signals  # type: ignore[attr-defined]
    except ImportError as e:
        return None, f"distillguard.signals.compute_signals is not available ({e})"
    return compute_signals, None


def ingest(
    paths: List[Path] = typer.Argument(..., help="Log files: .jsonl/.json (plain or .gz), .parquet or .csv."),
    db: Path = typer.Option(Path("traffic.duckdb"), "--db", help="DuckDB store to add the events to."),
    fmt: str = typer.Option("auto", "--format", "-f",
                            help="auto | canonical | openai | otel | jsonl | parquet | csv."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", "-m",
                                           help="CSV column-mapping file (YAML or JSON); see docs/schema.md."),
    retention: Optional[str] = typer.Option(
        None, "--retention",
        help="Text kept in the store: full | truncated | hashed (default: the store's policy, full when new)."),
    truncate_chars: int = typer.Option(256, "--truncate-chars", help="Characters kept under --retention truncated."),
    strict: bool = typer.Option(False, "--strict", help="Fail (exit 3, nothing stored) at the first bad record."),
    signals: bool = typer.Option(True, "--signals/--no-signals",
                                 help="Compute per-request signals on the full text before retention."),
    workers: Optional[int] = typer.Option(None, "--workers",
                                          help="Parser processes for large JSONL files (default: one per core)."),
    fast: Optional[bool] = typer.Option(
        None, "--fast/--no-fast",
        help="Reader for canonical JSONL (same rows and rejects either way; see docs/schema.md): by default the "
             "Arrow block parser; --fast: DuckDB SQL; --no-fast: the plain Python parser."),
) -> None:
    """Read request logs into the event store, de-duplicated, with bad records quarantined.

    Each record becomes one row of the `events` table, unique on request_id (or a content hash when the log has none), so ingesting the same file twice adds nothing. Records that cannot be read go to `<db stem>.rejected.jsonl` beside the store, with file, line, field and reason.

    Example: [bold]distillguard ingest logs/2026-03-*.jsonl.gz --db traffic.duckdb --retention hashed[/]

    Exit codes: 0 ok (also with rejects), 2 bad option, 3 unreadable input or --strict with a bad record (nothing stored), 4 invalid configuration (e.g. a retention policy that differs from the store's).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from distillguard.io import FORMATS, InputError, Quarantine, read_events
    from distillguard.store import RETENTIONS, Store

    console = Console(stderr=True)
    if fmt not in FORMATS:
        console.print(f"[red]error:[/] --format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        raise typer.Exit(EXIT_USAGE)
    if retention is not None and retention not in RETENTIONS:
        console.print(f"[red]error:[/] --retention must be one of {', '.join(RETENTIONS)}, got {retention!r}")
        raise typer.Exit(EXIT_USAGE)
    problem = missing_inputs(paths, mapping)
    if problem:
        console.print(f"[red]error:[/] {problem}")
        raise typer.Exit(EXIT_INPUT)

    signal_fn = None
    if signals:
        signal_fn, why = load_signal_fn()
        if signal_fn is None:
            console.print(f"[yellow]note:[/] signals not computed: {why}; run with --no-signals to silence")

    try:
        store = Store(db, retention=retention, truncate_chars=truncate_chars)
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_CONFIG)
    except Exception as e:  # duckdb IOException (locked / not a database file)
        console.print(f"[red]error:[/] cannot open store {db}: {e}")
        raise typer.Exit(EXIT_INPUT)

    rej_path = rejected_path(db)
    quarantine = Quarantine(rej_path)
    t0 = time.perf_counter()
    total_bytes = sum(p.stat().st_size for p in paths)
    with store, quarantine:
        try:
            stream = read_events(paths, fmt=fmt, mapping=mapping, quarantine=quarantine, strict=strict,
                                 workers="auto" if workers is None else workers, fast=fast)
        except InputError as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(EXIT_INPUT)
        with Progress(SpinnerColumn(), TextColumn("[bold]ingest[/]"), BarColumn(),
                      TextColumn("{task.fields[files]} files · {task.completed:,.0f} events · "
                                 "{task.fields[rejected]:,} rejected"),
                      TimeElapsedColumn(), console=console, transient=True,
                      disable=not console.is_terminal) as progress:
            task = progress.add_task("ingest", total=None, files=f"0/{len(paths)}", rejected=0)

            def tick(n: int) -> None:
                done = sum(1 for f in stream.summary.files.values() if f["records"])
                progress.update(task, advance=n, rejected=stream.summary.rejected,
                                files=f"{min(done, len(paths))}/{len(paths)}")

            try:
                result = store.ingest(stream, signal_fn=signal_fn, progress=tick, atomic=strict)
            except InputError as e:
                console.print(f"[red]error:[/] {e}\n(--strict: nothing was stored)")
                raise typer.Exit(EXIT_INPUT)
            except ValueError as e:
                console.print(f"[red]error:[/] {e}")
                raise typer.Exit(EXIT_CONFIG)
    elapsed = time.perf_counter() - t0
    s = stream.summary
    table = Table(title=f"ingest → {db}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("files", f"{len(paths)} ({total_bytes / 1e6:,.1f} MB)")
    table.add_row("records read", f"{s.records:,}")
    table.add_row("events stored (new)", f"{result.inserted:,}")
    table.add_row("duplicates skipped", f"{result.duplicates:,}")
    if s.skipped:
        table.add_row("non-GenAI spans skipped", f"{s.skipped:,}")
    table.add_row("rejected", f"{s.rejected:,}" + (f" → {rej_path}" if s.rejected else ""))
    for kind, n in sorted(s.by_reason.items()):
        table.add_row(f"  {kind}", f"{n:,}")
    table.add_row("signals stored", f"{result.signals:,}" if signal_fn else "not computed")
    table.add_row("retention", store.retention)
    table.add_row("time", f"{elapsed:,.1f} s ({s.records / max(elapsed, 1e-9):,.0f} records/s)")
    Console().print(table)
