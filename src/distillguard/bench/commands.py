"""``distillguard bench``: the detector and the baselines on the same simulated traffic, one table."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

EXIT_INPUT = 3  # exit codes of distillguard.cli (not imported: cli imports this module)
EXIT_CONFIG = 4
EXIT_USAGE = 2


class BenchInputError(ValueError):
    """The traffic to benchmark cannot be simulated or read (the message names the file and field)."""


def _traffic(folder: Path, scenario: str, seed: int, corpora, scale: float, reuse: bool):
    import orjson

    from distillguard.bench.traffic import load_traffic, simulate_traffic

    meta = folder / "scenario.json"
    if reuse and meta.is_file() and (folder / "labels.csv").is_file():
        doc = orjson.loads(meta.read_bytes())
        if doc.get("name") == scenario and doc.get("seed") == seed and doc.get("scale") == scale:
            return load_traffic(folder)
    return simulate_traffic(folder, scenario, seed, corpora, scale)


def run_bench(scenarios: list[str], out: Path, seed: int = 1, baseline_seed: int = 1001, quick: bool = False,
              corpora: Optional[str] = None, scale: float = 1.0, target_fpr: float = 0.001,
              traffic: Optional[Path] = None, baseline_traffic: Optional[Path] = None,
              detector: bool = True, docs: Optional[Path] = None, command: str = "", log=None,
              reuse: bool = False) -> dict:
    """Run the benchmark and write ``out/bench.json`` (and the docs section when ``docs`` is given).
    Returns the report dict."""
    import orjson

    from distillguard.bench import report as R
    from distillguard.bench import runner
    from distillguard.bench.traffic import load_traffic

    if quick:
        scale = min(scale, 0.25)
    fractions = runner.QUICK_FRACTIONS if quick else runner.FRACTIONS
    max_scans = 20 if quick else 60
    out.mkdir(parents=True, exist_ok=True)
    if corpora is None and traffic is None:
        from distillguard.corpora import find_corpora_dir

        found = find_corpora_dir()  # the shared third-party corpora when present, else the built-in prompts
        corpora = str(found) if found else None
    report: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": R.machine_info(),
        "target_fpr": target_fpr,
        "quick": quick,
        "scenarios": {},
    }
    jobs = [(str(traffic.name), None)] if traffic else [(s, s) for s in scenarios]
    detector_seen = False
    for name, scenario in jobs:
        try:
            if traffic:
                test = load_traffic(traffic)
                base = load_traffic(baseline_traffic) if baseline_traffic else test
            else:
                test = _traffic(out / name / f"seed{seed}", scenario, seed, corpora, scale, reuse)
                base = _traffic(out / name / f"seed{baseline_seed}", scenario, baseline_seed, corpora, scale, reuse)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise BenchInputError(str(exc)) from exc
        methods = runner.available_methods(target_fpr=target_fpr, detector=detector)
        detector_seen = detector_seen or any(isinstance(m, runner.DetectorMethod) for m in methods)
        scores: dict = {}
        results = runner.run_scenario(test, base, methods, fractions, max_scans, log=log, scores=scores)
        _write_account_scores(out / f"{name}.accounts.csv", test, scores)
        report["scenarios"][name] = {
            "seed": seed if not traffic else str(traffic),
            "baseline_seed": baseline_seed if not traffic else (
                str(baseline_traffic) if baseline_traffic else "the test folder itself (in-sample calibration)"),
            "n_events": test.events.num_rows,
            "n_accounts": len(test.accounts),
            "n_attack_accounts": int(test.is_attack.sum()),
            "n_campaigns": len(set(test.campaign_of.values())),
            "prompt_source": test.scenario.get("prompt_source"),
            "scale": scale if not traffic else test.scenario.get("scale"),
            "methods": results,
        }
    report["detector_available"] = detector_seen
    (out / "bench.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                                                  | orjson.OPT_NON_STR_KEYS))
    if docs is not None:
        R.update_docs(docs, R.markdown_section(report, runner.TARGETS))
    return report


def _write_account_scores(path: Path, test, scores: dict) -> None:
    """One row per labelled account: its group, label and each method's score and flag."""
    import csv

    names = list(scores)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["account_id", "group", "attack", "campaign_id"]
                   + [f"{n}:{c}" for n in names for c in ("score", "flagged")])
        for i, acc in enumerate(test.accounts):
            row = [acc, test.groups[i], int(test.is_attack[i]), test.campaign_of.get(acc, "")]
            for n in names:
                sc, fl = scores[n]
                row += ["" if sc[i] != sc[i] else f"{sc[i]:.6g}", int(fl[i])]
            w.writerow(row)


def bench(
    scenarios: str = typer.Option("demo", "--scenarios", help="Comma-separated simulator scenarios."),
    quick: bool = typer.Option(False, "--quick", help="Smaller traffic and a coarser replay."),
    seed: int = typer.Option(1, help="Seed of the test traffic."),
    baseline_seed: int = typer.Option(1001, help="Seed of the benign baseline traffic every method fits on."),
    scale: float = typer.Option(1.0, help="Traffic scale passed to the simulator."),
    corpora: Optional[str] = typer.Option(None, help="Corpora folder (default: ../shared/data/corpora)."),
    target_fpr: float = typer.Option(0.001, help="Benign FPR every baseline is calibrated to."),
    traffic: Optional[Path] = typer.Option(None, help="Use this simulator output folder instead of simulating."),
    baseline_traffic: Optional[Path] = typer.Option(None, help="Baseline folder for --traffic (default: itself)."),
    no_detector: bool = typer.Option(False, "--no-detector", help="Run the baselines only."),
    out: Path = typer.Option(Path("bench-out"), help="Output folder (bench.json, simulated traffic)."),
    docs: Optional[Path] = typer.Option(Path("docs/benchmarks.md"), help="Markdown file to update."),
    no_docs: bool = typer.Option(False, "--no-docs", help="Do not touch the markdown file."),
    reuse_traffic: bool = typer.Option(False, "--reuse-traffic",
                                       help="Reuse traffic already simulated in --out for the same scenario, "
                                            "seed and scale."),
) -> None:
    """Run the detector and the baselines (volume, PRADA, MMD) on the same traffic and print one table.

    Example: [bold]distillguard bench --scenarios demo,standard --out bench-out[/]
    """
    from rich.console import Console
    from rich.markup import escape

    from distillguard.bench import report as R
    from distillguard.bench.runner import TARGETS

    console = Console()
    if not console.is_terminal or console.width < 150:
        console = Console(width=150)  # the table has one column per method: do not wrap it into a tower
    if not 0 <= target_fpr < 1:
        console.print(f"[red]--target-fpr must be in [0, 1), got {target_fpr}[/red]")
        raise typer.Exit(EXIT_CONFIG)
    names = [s.strip() for s in scenarios.split(",") if s.strip()]
    if not names and traffic is None:
        console.print("[red]--scenarios is empty[/red]")
        raise typer.Exit(EXIT_USAGE)
    args = sys.argv[1:]
    if args[:1] == ["bench"]:
        args = args[1:]
    command = " ".join(["distillguard bench", *args])
    try:
        rep = run_bench(names, out, seed=seed, baseline_seed=baseline_seed, quick=quick, corpora=corpora,
                        scale=scale, target_fpr=target_fpr, traffic=traffic, baseline_traffic=baseline_traffic,
                        detector=not no_detector, docs=None if no_docs else docs, command=command,
                        log=lambda s: console.print(f"[dim]{escape(s)}[/dim]"), reuse=reuse_traffic)
    except BenchInputError as exc:
        console.print(f"[red]input error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_INPUT)
    for name, scn in rep["scenarios"].items():
        console.print(R.rich_table(name, scn["methods"], TARGETS))
    if not rep["detector_available"]:
        console.print("[yellow]detection engine not available: baselines only[/yellow]")
    console.print(f"wrote {out / 'bench.json'}" + ("" if no_docs or docs is None else f" and {docs}"))
