"""The bench run end to end on a small labelled folder: JSON, docs section, table, replay, bad input."""

import json

import pytest
from typer.testing import CliRunner

from bench_fixtures import make_traffic
from distillguard.bench.commands import run_bench
from distillguard.bench.report import BEGIN, END, update_docs
from distillguard.bench.traffic import load_traffic


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return make_traffic(root / "test", seed=1), make_traffic(root / "base", seed=2, n_benign=120)


@pytest.fixture(scope="module")
def report(folders, tmp_path_factory):
    test, base = folders
    out = tmp_path_factory.mktemp("out")
    docs = out / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nHand-written intro.\n\n" + BEGIN + "\nold\n" + END + "\n\nLead's notes.\n")
    rep = run_bench([], out, traffic=test, baseline_traffic=base, docs=docs, command="distillguard bench --x",
                    quick=True)
    return rep, out, docs


def test_load_traffic_ground_truth(folders):
    t = load_traffic(folders[0])
    assert t.events.num_rows > 0
    ts = t.events.column("timestamp").to_pylist()
    assert ts == sorted(ts)
    assert int(t.is_attack.sum()) == 12
    assert set(t.campaign_of.values()) == {"C0001", "C0002"}  # from scenario.json campaigns[].accounts
    assert t.allowlist == {"lic1-0"}


def test_report_has_every_method_and_metric(report):
    rep, out, _ = report
    data = json.loads((out / "bench.json").read_text())
    scn = data["scenarios"]["test"]
    assert scn["n_attack_accounts"] == 12 and scn["n_campaigns"] == 2
    methods = scn["methods"]
    assert {"baseline-volume", "baseline-prada", "baseline-mmd"} <= set(methods)
    # the detection engine is in the tree: it runs in the same report, first column
    assert data["detector_available"] and list(methods)[0] == "distillguard"
    for name, m in methods.items():
        for key in ("attack_recall", "benign_fpr", "persona_fpr", "flag_share_by_group", "campaign_recall",
                    "average_precision", "median_delay_requests", "median_delay_reasoning_tokens", "seconds"):
            assert key in m, (name, key)
        assert set(m["per_campaign"]) == {"C0001", "C0002"}
        assert m["flag_share_by_group"]["licensed"] == 0.0  # allowlisted: never flagged
    # campaign-linking figures exist for the method that links accounts, not for the baselines
    det = methods["distillguard"]
    assert set(det["campaign_completeness"]) == {"C0001", "C0002"}
    assert 0.0 <= det["campaign_completeness_mean"] <= 1.0 and det["campaigns_mixed"] >= 0
    assert methods["baseline-volume"]["campaign_completeness"] == {}
    import csv

    rows = list(csv.DictReader(open(out / "test.accounts.csv", encoding="utf-8")))
    assert len(rows) == 75 and sum(int(r["attack"]) for r in rows) == 12
    flagged = sum(int(r["baseline-mmd:flagged"]) for r in rows)
    assert flagged == methods["baseline-mmd"]["n_flagged"]


def test_volume_baseline_calibrated_on_baseline_seed(report):
    # the fixture's eval runners (80 requests) out-volume the attack accounts (40): at any FPR target the
    # volume threshold sits above every attack account, so it catches nothing and its delay is the whole run
    m = report[0]["scenarios"]["test"]["methods"]["baseline-volume"]
    assert m["attack_recall"] == 0.0
    assert m["median_delay_requests"] == 1.0


def test_mmd_recovers_fixture_campaigns_with_replay_delay(report):
    m = report[0]["scenarios"]["test"]["methods"]["baseline-mmd"]
    assert m["attack_recall"] == 1.0 and m["campaign_recall"] == 1.0
    # each attack account needs 5 requests before MMD tests it: no detection in the first 1% of the replay
    for d in m["per_campaign"].values():
        assert d["detected"] and 0.01 < d["requests"] < 1.0


def test_docs_section_replaced_between_markers(report):
    _, _, docs = report
    text = docs.read_text()
    assert "Hand-written intro." in text and "Lead's notes." in text
    assert "\nold\n" not in text
    body = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert "| attack-account recall |" in body and "baseline-mmd" in body
    assert "distillguard bench --x" in body


def test_update_docs_appends_markers(tmp_path):
    p = tmp_path / "b.md"
    p.write_text("# Title\n")
    update_docs(p, "one")
    update_docs(p, "two")
    text = p.read_text()
    assert text.count(BEGIN) == 1 and "two" in text and "one" not in text and text.startswith("# Title")


def test_markdown_escapes_untrusted_names(tmp_path):
    from distillguard.bench.report import markdown_section

    m = {"attack_recall": 1.0, "benign_fpr": 0.0, "persona_fpr": {"<script>|x": 0.0}, "persona_fpr_max": 0.0,
         "flag_share_by_group": {"<script>|x": 0.0}, "campaign_recall": 1.0, "average_precision": 1.0,
         "median_delay_requests": 0.0, "median_delay_reasoning_tokens": 0.0, "max_delay_requests": 0.0,
         "seconds": {"fit": 0, "score": 0, "replay": 0}}
    rep = {"date": "d", "command": "c", "machine": "m", "target_fpr": 0.001,
           "scenarios": {"s": {"seed": 1, "baseline_seed": 2, "n_events": 1, "n_accounts": 1,
                               "n_attack_accounts": 0, "n_campaigns": 0, "methods": {"det": m}}}}
    md = markdown_section(rep)
    assert "<script>" not in md and "&lt;script&gt;\\|x" in md


def test_bad_labels_name_file_and_line(tmp_path):
    folder = make_traffic(tmp_path / "t", seed=3, n_benign=5, n_attack_campaigns=1)
    lines = (folder / "labels.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",,benign"
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"labels.csv:4: field label"):
        load_traffic(folder)


def test_cli_bench_on_folder(folders, tmp_path):
    from distillguard.bench.commands import bench
    import typer

    app = typer.Typer()
    app.command()(bench)
    res = CliRunner().invoke(app, ["--traffic", str(folders[0]), "--baseline-traffic", str(folders[1]),
                                   "--quick", "--no-detector", "--no-docs", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "attack-account recall" in res.output and "baseline-prada" in res.output
    assert (tmp_path / "o" / "bench.json").is_file()
    bad = CliRunner().invoke(app, ["--traffic", str(tmp_path / "missing"), "--no-docs", "--out", str(tmp_path / "p")])
    assert bad.exit_code == 3 and "not found" in bad.output


def test_replay_memo_matches_full_scoring(folders):
    from distillguard.bench.runner import available_methods

    test, base = load_traffic(folders[0]), load_traffic(folders[1])
    wanted = {a for a, c in test.campaign_of.items() if c == "C0001"} | {"u1-0", "eval1-0"}
    for m in available_methods(target_fpr=0.01, detector=False):
        m.fit(base)
        m.prepare(test)
        for k in (50, 400, 800, test.events.num_rows, 400):  # the repeated cut comes from the memo
            full = m.run(test, k)
            part = m.run(test, k, accounts=wanted)
            ref = {a: f for a, f in zip(full.accounts, full.flagged) if a in wanted}
            assert dict(zip(part.accounts, part.flagged)) == ref, (m.name, k)
