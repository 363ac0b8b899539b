"""``distillguard scan``: score accounts, link campaigns, write findings."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

EXIT_INTERNAL = 1  # exit codes of distillguard.cli (not imported: cli imports this module)
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONFIG = 4


def scan(
    paths: List[Path] = typer.Argument(..., help="Event files (.jsonl, .jsonl.gz, .parquet, .csv) or one .duckdb store."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for accounts.csv, campaigns.json, report.html, rejected.jsonl."),
    target_fpr: float = typer.Option(0.001, "--target-fpr", help="False-positive rate the flag threshold is set for."),
    baseline: Optional[List[Path]] = typer.Option(
        None, "--baseline", help="Known-benign traffic to calibrate on (default: the scanned traffic, assumed mostly benign)."),
    allowlist: Optional[Path] = typer.Option(None, "--allowlist", help="YAML/CSV of account or org ids never flagged."),
    strict: bool = typer.Option(False, "--strict", help="Fail (exit 3) at the first bad input record."),
    fmt: str = typer.Option("auto", "--format", "-f", help="Input format: auto | canonical | openai | otel | jsonl | parquet | csv."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", "-m", help="CSV column-mapping file (see docs/schema.md)."),
    write_signals: bool = typer.Option(False, "--signals", help="Also write signals.parquet and features.parquet."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html."),
    peer_intel: Optional[Path] = typer.Option(
        None, "--peer-intel", help="Folder of peers' STIX bundles (distillguard intel import/pull); key from DISTILLGUARD_SHARING_KEY."),
    engine: str = typer.Option("duckdb", "--engine", help="Where the relational stages run: duckdb (this machine) or spark (docs/scale.md)."),
    spark_master: Optional[str] = typer.Option(
        None, "--spark-master", help="Spark master for --engine spark (local[4], yarn, spark://host:7077; default: spark-submit's, else local[*])."),
) -> None:
    """Find distillation campaigns in request traffic.

    Writes OUT/accounts.csv (account_id,score,flagged,campaign_id,reasons), OUT/campaigns.json, OUT/report.html and OUT/rejected.jsonl, and prints a summary. See docs/detection.md.

    Example: [bold]distillguard scan events.jsonl.gz --out findings --target-fpr 0.001 --allowlist allow.yaml[/]

    Exit codes: 0 ok, 2 bad option, 3 unreadable input (or --strict with a bad record), 4 invalid allowlist or configuration.
    """
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from distillguard.detect import Allowlist, AllowlistError, DetectConfig, Scanner

    console = Console(stderr=True)
    if not (0.0 < target_fpr < 1.0):
        console.print(f"[red]error:[/] --target-fpr must be between 0 and 1, got {target_fpr}")
        raise typer.Exit(EXIT_USAGE)
    from distillguard.engine import ENGINES

    if engine not in ENGINES:
        console.print(f"[red]error:[/] --engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        raise typer.Exit(EXIT_USAGE)
    if engine == "spark":  # Spark reads URIs (s3a://, hdfs://, ...): only local paths are checked here
        from distillguard.engine.spark import is_uri, restore_uri

        paths = [restore_uri(p) if is_uri(p) else p for p in paths]
        baseline = [restore_uri(p) if is_uri(p) else p for p in baseline or []]
    for group in (paths, baseline or []):
        missing = [str(p) for p in group if isinstance(p, Path) and not p.exists()]
        if missing:
            console.print(f"[red]error:[/] no such file: {', '.join(missing)}")
            raise typer.Exit(EXIT_INPUT)
    if mapping is not None and not mapping.is_file():
        console.print(f"[red]error:[/] no such mapping file: {mapping}")
        raise typer.Exit(EXIT_INPUT)
    try:
        allow = Allowlist.load(allowlist) if allowlist is not None else None
    except AllowlistError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_CONFIG)
    config = DetectConfig(target_fpr=target_fpr, write_signals=write_signals)
    peers = None
    if peer_intel is not None:
        from distillguard.intel.commands import load_peer_intel

        peers = load_peer_intel(peer_intel, console)
    if engine == "spark":
        from distillguard.engine import make_scanner

        if peers is not None:
            console.print("[red]error:[/] --peer-intel is not supported with --engine spark yet")
            raise typer.Exit(EXIT_CONFIG)
        try:
            scanner = make_scanner("spark", config, allow, master=spark_master)
        except ImportError as e:
            console.print(f"[red]error:[/] --engine spark needs PySpark: pip install 'distillguard[spark]' ({e})")
            raise typer.Exit(EXIT_CONFIG)
    else:
        scanner = Scanner(config, allow, peers)
    input_errors = _input_errors()
    with Progress(SpinnerColumn(), TextColumn("[bold]scan[/] {task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("starting", total=None)

        def say(msg: str) -> None:
            progress.update(task, description=msg)

        try:
            if baseline:
                say("fitting on the baseline")
                scanner.fit([str(p) for p in baseline], label=",".join(map(str, baseline)))
            result = scanner.scan([str(p) for p in paths], out_dir=out, strict=strict, fmt=fmt,
                                  mapping=str(mapping) if mapping else None, progress=say)
        except input_errors as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(EXIT_INPUT)
    if report:
        from distillguard.detect.pipeline import write_report

        _path, warning = write_report(result, out)
        if warning:
            console.print(f"[yellow]note:[/] {warning}")

    acc = result.accounts
    n_flag = sum(acc.column("flagged").to_pylist())
    n_allow = sum(acc.column("allowlisted").to_pylist())
    tbl = Table(title=f"distillguard scan → {out}", show_header=True)
    tbl.add_column("accounts", justify="right")
    tbl.add_column("flagged", justify="right")
    tbl.add_column("allowlisted", justify="right")
    tbl.add_column("campaigns (flagged)", justify="right")
    tbl.add_column("threshold", justify="right")
    tbl.add_column("rejected", justify="right")
    tbl.add_column("seconds", justify="right")
    n_camp_flag = sum(1 for c in result.campaigns if c["flagged"])
    tbl.add_row(f"{acc.num_rows:,}", f"{n_flag:,}", f"{n_allow:,}", f"{len(result.campaigns)} ({n_camp_flag})",
                f"{result.calibration['threshold']:.3f} ({result.calibration['baseline']})",
                f"{result.rejected:,}", f"{result.timings.get('total_s', 0):.1f}")
    Console().print(tbl)
    if strict and result.rejected:
        raise typer.Exit(EXIT_INPUT)


def _input_errors() -> tuple[type[BaseException], ...]:
    from distillguard.io import InputError

    return (InputError, FileNotFoundError, IsADirectoryError, PermissionError)
