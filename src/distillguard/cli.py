"""The ``distillguard`` command line: one thin command per verb, each calling a part of the package.

Each part owns ``<part>/commands.py``; this module only registers them. Exit codes (docs/cli.md):
0 success, 1 internal error, 2 usage error, 3 input error, 4 invalid configuration or policy.
"""

from __future__ import annotations

import importlib

import typer

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONFIG = 4

app = typer.Typer(
    name="distillguard",
    help="Detect, stop, attribute and share intelligence on LLM distillation attacks.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

#: (module, function, command name). Sub-apps (typer.Typer objects) are added as groups.
_COMMANDS: list[tuple[str, str, str]] = [
    ("distillguard.io.commands", "ingest", "ingest"),
    ("distillguard.signals.commands", "signals", "signals"),
    ("distillguard.report.commands", "report", "report"),
    ("distillguard.sim.commands", "simulate", "simulate"),
    ("distillguard.detect.commands", "scan", "scan"),
    ("distillguard.bench.commands", "bench", "bench"),
    ("distillguard.gateway.commands", "gateway", "gateway"),
    ("distillguard.demo", "demo", "demo"),
    ("distillguard.intel.commands", "attribute", "attribute"),
]
_GROUPS: list[tuple[str, str, str]] = [
    ("distillguard.intel.commands", "intel_app", "intel"),
]


def _register() -> None:
    for module, func, name in _COMMANDS:
        app.command(name)(getattr(importlib.import_module(module), func))
    for module, attr, name in _GROUPS:
        app.add_typer(getattr(importlib.import_module(module), attr), name=name)


_register()


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
