"""``distillguard demo``: the whole pipeline on simulated traffic, on the embedded default (DuckDB).

simulate -> ingest into OUT/traffic.duckdb (signals computed at ingest) -> scan the store -> OUT/accounts.csv,
OUT/campaigns.json, OUT/report.html, then a ground-truth check against the simulator's labels.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Optional

import typer


def run_demo(out: Path, *, scenario: str = "demo", seed: int = 0, corpora: Path | None = None,
             use_corpora: bool = True, say=print) -> dict:
    """Run the demo into ``out``; return a summary dict (also used by the tests)."""
    import orjson
    import yaml

    from distillguard.corpora import find_corpora_dir
    from distillguard.detect import Allowlist, DetectConfig, Scanner
    from distillguard.detect.pipeline import write_report
    from distillguard.io import Quarantine, read_events
    from distillguard.signals import compute_signals
    from distillguard.sim import simulate
    from distillguard.store import Store

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpora_dir = (find_corpora_dir(corpora) if use_corpora else None)
    say(f"1/4 simulating the {scenario!r} scenario (prompts: "
        f"{'corpora in ' + str(corpora_dir) if corpora_dir else 'built-in generator'})")
    sim = simulate(out / "traffic", scenario=scenario, seed=seed, corpora=corpora_dir)
    meta = orjson.loads(sim.scenario_path.read_bytes())

    allow_path = out / "allowlist.yaml"
    allow_path.write_text(yaml.safe_dump(
        {"accounts": [{"id": a, "reason": "licensed distillation customer"} for a in meta.get("allowlist", [])]},
        sort_keys=False))

    db = out / "traffic.duckdb"
    if db.exists():
        db.unlink()
    say(f"2/4 ingesting {sim.n_events:,} events into {db} (DuckDB, signals computed at ingest)")
    with Quarantine(out / "rejected.jsonl") as q, Store(str(db)) as store:
        summary = store.ingest(read_events([str(sim.events_path)], quarantine=q), signal_fn=compute_signals)
        rejected = q.count

    say("3/4 scanning the store: account behaviour, campaign linking, calibrated flags")
    scanner = Scanner(DetectConfig(target_fpr=0.001), Allowlist.load(allow_path))
    result = scanner.scan([str(db)], out_dir=out)
    say("4/4 writing the investigator report")
    report_path, warning = write_report(result, out)
    if warning:
        say(f"note: {warning}")

    labels = {}
    with open(sim.labels_path, newline="") as fh:
        for row in csv.DictReader(fh):
            labels[row["account_id"]] = (row["label"], row["group"])
    acc = result.accounts
    flagged = dict(zip(acc.column("account_id").to_pylist(), acc.column("flagged").to_pylist()))
    per_group: dict[str, Counter] = {}
    for account, (label, group) in labels.items():
        c = per_group.setdefault(group, Counter())
        c["label:" + label] += 1
        c["accounts"] += 1
        c["flagged"] += bool(flagged.get(account, False))
    return {
        "out": str(out), "events": sim.n_events, "accounts": sim.n_accounts, "ingested": summary.inserted,
        "rejected": rejected, "flagged": sum(bool(v) for v in flagged.values()),
        "campaigns": len(result.campaigns), "campaigns_flagged": sum(1 for c in result.campaigns if c["flagged"]),
        "report": str(report_path), "per_group": per_group, "hard_negatives":
            {k for k, v in meta.get("groups", {}).items() if v.get("hard_negative")},
    }


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Folder for the traffic, store and findings."),
    scenario: str = typer.Option("demo", "--scenario", help="Simulator scenario (demo | standard | adaptive)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the simulated traffic."),
    corpora: Optional[Path] = typer.Option(
        None, "--corpora", help="Folder of third-party prompt corpora (default: ../shared/data/corpora when present)."),
    no_corpora: bool = typer.Option(False, "--no-corpora", help="Use the built-in prompt generator only."),
) -> None:
    """Run the whole pipeline on simulated traffic: simulate, ingest into DuckDB, scan, report.

    Example: [bold]distillguard demo --out demo-out[/]  then open demo-out/report.html

    Exit codes: 0 ok, 3 corpora folder not found.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console()
    err = Console(stderr=True)
    try:
        s = run_demo(out, scenario=scenario, seed=seed, corpora=corpora, use_corpora=not no_corpora,
                     say=lambda m: err.print(f"[bold cyan]demo[/] {m}"))
    except FileNotFoundError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(3)
    t = Table(title="ground truth check (simulated labels; the detector never sees them)")
    for col in ("group", "label", "hard negative", "accounts", "flagged", "share"):
        t.add_column(col, justify="right" if col in ("accounts", "flagged", "share") else "left")
    for group, c in sorted(s["per_group"].items(), key=lambda kv: (("label:attack" in kv[1]), kv[0])):
        label = "attack" if c["label:attack"] else "benign"
        t.add_row(group, label, "yes" if group in s["hard_negatives"] else "", f"{c['accounts']:,}",
                  f"{c['flagged']:,}", f"{c['flagged'] / max(c['accounts'], 1):.1%}")
    console.print(t)
    console.print(f"{s['events']:,} events, {s['accounts']:,} accounts, {s['rejected']} rejected; "
                  f"{s['flagged']:,} accounts flagged, {s['campaigns_flagged']} of {s['campaigns']} campaigns flagged.")
    console.print(f"findings: {s['out']}/accounts.csv, {s['out']}/campaigns.json; report: [bold]{s['report']}[/]")
