#!/usr/bin/env python
"""Detection benchmark: distillguard's detector beside the volume, PRADA and MMD baselines.

    .venv/bin/python bench/run_detection_bench.py                  # demo scenario, updates docs/benchmarks.md
    .venv/bin/python bench/run_detection_bench.py --scenarios standard
    .venv/bin/python bench/run_detection_bench.py --quick --no-docs

Same options as ``distillguard bench`` (this script only calls it); prints one table per scenario and
writes bench-out/bench.json.
"""

from distillguard.bench.commands import bench

if __name__ == "__main__":
    import typer

    app = typer.Typer(add_completion=False)
    app.command()(bench)
    app()
