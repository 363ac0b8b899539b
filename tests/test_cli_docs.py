"""Every command and every option of the CLI is documented in docs/cli.md (Datasette-style: an undocumented
setting fails the build)."""

import re
from pathlib import Path

import pytest
import typer.main

from distillguard.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands():
    def walk(c, prefix):
        if hasattr(c, "commands"):
            for n, sub in c.commands.items():
                yield from walk(sub, prefix + [n])
        else:
            yield " ".join(prefix), c

    return dict(walk(typer.main.get_command(app), []))


COMMANDS = _commands()


def test_core_verbs_exist():
    for verb in ("ingest", "scan", "signals", "simulate", "bench", "demo", "report", "gateway", "intel export",
                 "intel import", "attribute"):
        assert verb in COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_and_options_documented(name):
    doc = DOC.read_text("utf-8")
    m = re.search(rf"^## `distillguard {re.escape(name)}`\s*$(.*?)(?=^## |\Z)", doc, re.M | re.S)
    assert m, f"docs/cli.md has no '## `distillguard {name}`' section"
    section = m.group(1)
    for p in COMMANDS[name].params:
        if getattr(p, "param_type_name", "") == "option":
            assert f"`{p.opts[0]}" in section, f"option {p.opts[0]} of {name!r} is not documented"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_has_an_example(name):
    assert "Example" in (COMMANDS[name].help or ""), f"`distillguard {name} --help` shows no example"
