"""The README's demo runs end to end on a machine without the corpora (built-in prompt generator)."""

import csv

from typer.testing import CliRunner

from distillguard.cli import app


def test_demo_without_corpora_finds_the_campaigns(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--no-corpora", "--seed", "3"])
    assert res.exit_code == 0, res.output
    for name in ("accounts.csv", "campaigns.json", "report.html", "traffic.duckdb", "allowlist.yaml"):
        assert (out / name).is_file(), name
    with open(out / "accounts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["account_id", "score", "flagged", "campaign_id", "reasons"]
    labels = {}
    with open(out / "traffic" / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            labels[r["account_id"]] = r["label"]
    flagged = {r["account_id"] for r in rows if r["flagged"] == "true"}
    attack = {a for a, lab in labels.items() if lab == "attack"}
    benign = {a for a, lab in labels.items() if lab == "benign"}
    assert len(flagged & attack) >= 0.9 * len(attack)
    assert len(flagged & benign) <= 0.01 * len(benign)
    assert "ground truth check" in res.output
