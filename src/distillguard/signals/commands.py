"""``distillguard signals``: per-request signals of log files (or an event store) to CSV."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

EXIT_USAGE = 2  # exit codes of distillguard.cli (not imported: cli imports this module)
EXIT_INPUT = 3
EXIT_CONFIG = 4


def _batches(paths: list[Path], fmt: str, strict: bool):
    """Event batches from log files (via distillguard.io) or from the ``events`` table of .duckdb stores."""
    stores = [p for p in paths if p.suffix == ".duckdb"]
    logs = [p for p in paths if p.suffix != ".duckdb"]
    for p in stores:
        import duckdb

        con = duckdb.connect(str(p), read_only=True)
        try:
            cols = "event_id, request_id, account_id, timestamp, system_text, user_text, n_tools"
            reader = con.execute(f"SELECT {cols} FROM events").fetch_record_batch(100_000)
            for b in reader:
                yield b
        finally:
            con.close()
    if logs:
        from distillguard.io import read_events

        stream = read_events(logs, fmt=fmt, strict=strict, batch_rows=100_000)
        yield from stream
        q = stream.quarantine
        if q.count:
            typer.echo(f"{q.count} record(s) rejected: " + ", ".join(f"{k} {v}" for k, v in q.by_reason.items()),
                       err=True)


def signals(
    paths: List[Path] = typer.Argument(..., help="Log files (.jsonl/.json[.gz], .parquet, .csv) or .duckdb stores."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write, one row per request."),
    fmt: str = typer.Option("auto", "--format", "-f", help="Input format of log files (see `ingest --help`)."),
    corpora: Optional[Path] = typer.Option(None, "--corpora",
                                           help="Folder of public task sets for the benchmark match."),
    no_benchmark: bool = typer.Option(False, "--no-benchmark", help="Skip the public task-set match."),
    strict: bool = typer.Option(False, "--strict", help="Fail (exit 3) at the first bad record."),
) -> None:
    """Write per-request signals: extraction score and reason, capability, benchmark match, template ids.

    Columns: event_id, request_id, account_id, timestamp, extraction_score, extraction_reason, capability,
    benchmark, benchmark_item, benchmark_score, template_id, template_sig, system_prompt_id, text_len
    (docs/detectors.md). Useful to check why a request counted, or to evaluate the extraction classifier
    on your own labelled traffic.

    Example: [bold]distillguard signals logs/*.jsonl.gz --out signals.csv[/]

    Exit codes: 0 ok, 2 bad option, 3 unreadable input (or --strict with a bad record).
    """
    import pyarrow.csv as pacsv

    from distillguard.signals import BenchmarkIndex, SIGNAL_SCHEMA, compute_signals, default_benchmark_index

    for p in paths:
        if not p.exists():
            typer.echo(f"error: {p}: no such file", err=True)
            raise typer.Exit(EXIT_INPUT)
    try:
        if no_benchmark:
            index = BenchmarkIndex.empty()
        elif corpora is not None:
            index = BenchmarkIndex.from_corpora(corpora)
        else:
            index = default_benchmark_index()
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT_INPUT)
    n = 0
    try:
        from distillguard.io import InputError
    except ImportError:  # pragma: no cover - io part missing
        InputError = OSError  # type: ignore[misc,assignment]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with pacsv.CSVWriter(str(out), SIGNAL_SCHEMA) as writer:
            for batch in _batches(list(paths), fmt, strict):
                table = compute_signals(batch, benchmark_index=index)
                writer.write_table(table)
                n += table.num_rows
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT_INPUT)
    except OSError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT_INPUT)
    typer.echo(f"wrote signals of {n} request(s) to {out}", err=True)
