"""``distillguard simulate``: write a labelled synthetic traffic scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def simulate(
    out: Path = typer.Option(..., "--out", help="Output folder (events.jsonl, labels.csv, scenario.json)."),
    scenario: str = typer.Option("demo", "--scenario", help="demo | standard | adaptive | scale2026, or a "
                                 "JSON/YAML file overriding one (key 'base')."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    corpora: Optional[Path] = typer.Option(None, "--corpora", help="Folder of the third-party prompt corpora; "
                                           "without it the built-in prompt generator is used."),
    scale: float = typer.Option(1.0, "--scale", help="Multiply every account count by this factor."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes rendering the text "
                                          "(default: 2 above 300k events); the output does not depend on it."),
) -> None:
    """Simulate benign personas and distillation campaigns as canonical events with ground-truth labels.

    Example: [bold]distillguard simulate --out sim --scenario standard --corpora ../shared/data/corpora[/]
    """
    import orjson
    import yaml
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from distillguard.cli import EXIT_CONFIG, EXIT_INPUT
    from distillguard.sim import SCENARIOS, simulate as run

    console = Console(stderr=True)
    spec: str | dict = scenario
    if scenario not in SCENARIOS:
        p = Path(scenario)
        if not p.is_file():
            console.print(f"[red]error:[/] --scenario: unknown scenario {scenario!r} and no such file; "
                          f"known: {', '.join(SCENARIOS)}")
            raise typer.Exit(EXIT_CONFIG)
        try:
            text = p.read_bytes()
            spec = orjson.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            console.print(f"[red]error:[/] {p}: cannot parse scenario file: {exc}")
            raise typer.Exit(EXIT_CONFIG) from None
        if not isinstance(spec, dict):
            console.print(f"[red]error:[/] {p}: a scenario file must hold a mapping")
            raise typer.Exit(EXIT_CONFIG)
    if corpora is not None and not corpora.is_dir():
        console.print(f"[red]error:[/] --corpora: folder not found: {corpora}")
        raise typer.Exit(EXIT_INPUT)
    if scale <= 0:
        console.print(f"[red]error:[/] --scale must be positive, got {scale}")
        raise typer.Exit(EXIT_CONFIG)
    with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:,} events"),
                  TimeRemainingColumn(), console=console, transient=True) as prog:
        task = prog.add_task("events", total=1)

        def tick(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        try:
            res = run(out, scenario=spec, seed=seed, corpora=corpora, scale=scale, progress=tick,
                      workers=workers)
        except (KeyError, ValueError, TypeError) as exc:
            console.print(f"[red]error:[/] invalid scenario: {exc}")
            raise typer.Exit(EXIT_CONFIG) from None
    table = Table(title=f"{res.n_events:,} events, {res.n_accounts:,} accounts in {res.seconds:.1f} s "
                        f"({res.events_per_s:,.0f} events/s)")
    for col in ("group", "label", "hard negative", "accounts", "events"):
        table.add_column(col, justify="right" if col in ("accounts", "events") else "left")
    for name, g in res.groups.items():
        table.add_row(name, g["label"], "yes" if g["hard_negative"] else "", f"{g['accounts']:,}", f"{g['events']:,}")
    Console().print(table)
    Console().print(f"wrote {res.events_path}, {res.labels_path}, {res.scenario_path}")
