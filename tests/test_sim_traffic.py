"""Simulator: output validity, determinism, campaign traits present, benign personas free of extraction."""

from __future__ import annotations

import csv
import re
import statistics
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from distillguard.corpora import find_corpora_dir
from distillguard.schema import normalize
from distillguard.sim import SCENARIOS, get_scenario, phrases, simulate
from distillguard.sim.commands import simulate as simulate_cmd
from distillguard.sim.textgen import Pools

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpora"


def _load(out: Path):
    labels = {}
    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        rd = csv.reader(fh)
        assert next(rd) == ["account_id", "label", "group"]
        for a, lab, g in rd:
            labels[a] = (lab, g)
    rows = []
    with open(out / "events.jsonl", "rb") as fh:
        for n, line in enumerate(fh, 1):
            rows.append(normalize(orjson.loads(line), f"events.jsonl:{n}"))
    meta = orjson.loads((out / "scenario.json").read_bytes())
    return rows, labels, meta


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    res = simulate(out, scenario="demo", seed=3, scale=0.6)
    rows, labels, meta = _load(out)
    by_group = defaultdict(list)
    for row in rows:
        by_group[labels[row["account_id"]][1]].append(row)
    return res, rows, labels, meta, by_group


def _ts(s) -> float:
    if isinstance(s, datetime):
        return s.timestamp()
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _text(row) -> str:
    return (row["system_text"] or "") + "\n" + row["user_text"]


def test_every_event_is_canonical_sorted_and_labelled(demo):
    res, rows, labels, meta, by_group = demo
    assert len(rows) == res.n_events == meta["n_events"] > 5000
    assert len({r["request_id"] for r in rows}) == len(rows)
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps)
    assert {r["account_id"] for r in rows} == set(labels)
    groups = set(g for _, g in labels.values())
    assert set(SCENARIOS["demo"]["personas"]) <= groups  # every benign persona
    assert {c["id"] for c in SCENARIOS["demo"]["campaigns"]} <= groups
    for a, (lab, g) in labels.items():
        assert lab == ("benign" if g in meta["personas"] else "attack")
    for col in ("org_id", "api_key_id", "ip", "asn", "user_agent", "payment_fingerprint", "account_created_at",
                "model", "response", "input_tokens", "output_tokens"):
        assert all(r[col] is not None for r in rows), col
    assert any(r["reasoning_content"] for r in rows) and any(r["n_tools"] for r in rows)
    assert any(r["n_user_turns"] > 1 for r in by_group["casual"])  # multi-turn chat
    # ids carry no label
    assert not any(g in a for a, (_, g) in labels.items())


def test_deterministic_for_a_seed(tmp_path):
    a = simulate(tmp_path / "a", scenario="demo", seed=11, scale=0.1, chunk=1000, workers=1)
    b = simulate(tmp_path / "b", scenario="demo", seed=11, scale=0.1, chunk=1000, workers=2)  # parallel render
    c = simulate(tmp_path / "c", scenario="demo", seed=12, scale=0.1, chunk=1000)
    for name in ("events.jsonl", "labels.csv", "scenario.json"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    assert (a.out_dir / "events.jsonl").read_bytes() != (c.out_dir / "events.jsonl").read_bytes()


def test_benign_personas_free_of_extraction_phrasing(demo):
    _, rows, labels, meta, by_group = demo
    bank = phrases.EXTRACTION + phrases.JSON_SPECS + tuple(w.split("{inner}")[0].strip() for w in phrases.ROLEPLAY)
    for g, evs in by_group.items():
        if g in meta["personas"] and g != "licensed_distiller":
            hits = [r["user_text"][:80] for r in evs if any(p in _text(r) for p in bank)]
            assert not hits, (g, hits[:3])
    # ... while harvesting campaigns really carry it, and the licensed distiller does too
    for g in ("hydra_math", "hydra_code", "licensed_distiller"):
        share = sum(any(p in _text(r) for p in phrases.EXTRACTION) for r in by_group[g]) / len(by_group[g])
        assert share > 0.4, (g, share)
    # legitimate chain-of-thought prompting is present among eval runners
    assert all(any(c in r["user_text"] for c in phrases.BENIGN_COT) for r in by_group["eval_runner"])
    assert {r["reasoning_effort"] for r in by_group["eval_runner"]} == {"high"}


def test_shared_payment_and_burst_creation(demo):
    _, rows, labels, meta, by_group = demo
    camp = {c["id"]: c for c in meta["campaigns"]}
    for g in ("hydra_math", "hydra_code"):
        accts = defaultdict(set)
        for r in by_group[g]:
            accts[r["payment_fingerprint"]].add(r["account_id"])
        n_acc = len({r["account_id"] for r in by_group[g]})
        per = camp[g]["traits"]["accounts_per_payment"]
        assert len(accts) <= n_acc // per + 2 and max(len(v) for v in accts.values()) >= per // 2
        created = sorted({_ts(r["account_created_at"]) for r in by_group[g]})
        gaps = [b - a for a, b in zip(created, created[1:])]
        assert statistics.median(gaps) < 120  # registered in batches, seconds apart
    # casual users each pay with their own card; low-and-slow shares nothing
    for g in ("casual", "adaptive_lowslow"):
        owners = defaultdict(set)
        for r in by_group[g]:
            owners[r["payment_fingerprint"]].add(r["account_id"])
        assert max(len(v) for v in owners.values()) == 1, g


def test_ip_rotation_and_shared_proxies(demo):
    *_, by_group = demo
    ips = defaultdict(set)
    users = defaultdict(set)
    for r in by_group["hydra_math"]:
        ips[r["account_id"]].add(r["ip"])
        users[r["ip"]].add(r["account_id"])
    assert statistics.median(len(v) for v in ips.values()) >= 5  # rotates per request
    assert statistics.median(len(v) for v in users.values()) >= 5  # each proxy serves many accounts
    low = defaultdict(set)
    for r in by_group["adaptive_lowslow"]:
        low[r["ip"]].add(r["account_id"])
    assert max(len(v) for v in low.values()) == 1  # no shared infrastructure
    # the campus: many students behind one NAT address
    campus_ips = Counter(r["ip"] for r in by_group["campus"])
    assert len({r["account_id"] for r in by_group["campus"]}) > 20 and len(campus_ips) <= 2


def test_model_pivot_within_a_day(demo):
    _, rows, labels, meta, by_group = demo
    new = meta["models"][-1]
    release = _ts(new["released_at"])
    for c in meta["campaigns"]:
        evs = by_group[c["id"]]
        first_new = min(r["timestamp"].timestamp() for r in evs if r["model"] == new["name"])
        assert 0 <= first_new - release < 86400 * (1.5 if c["adaptive"] else 1.0), c["id"]
        if c["traits"]["timing"] == "sync":
            after = [r for r in evs if r["timestamp"].timestamp() > _ts(c["pivot_at"])]
            assert sum(r["model"] == new["name"] for r in after) / len(after) > 0.9
    # eval runners adopt within hours; casual users mostly stay on the old model the first day
    ev_first = min(r["timestamp"].timestamp() for r in by_group["eval_runner"] if r["model"] == new["name"])
    assert ev_first - release < 6 * 3600
    day1 = [r for r in by_group["casual"] if release <= r["timestamp"].timestamp() < release + 86400]
    assert sum(r["model"] == new["name"] for r in day1) / len(day1) < 0.3
    assert not any(r["model"] == new["name"] and r["timestamp"].timestamp() < release for r in rows)


_LEAD = re.compile(r"^(Problem: |Question: |Task: |Q: |Solve: |Item \d+: |### Input\n|Here is a task\.\n)")


def _shape(row, tasks: set[str]) -> str | None:
    """The prompt with its task replaced by <T> (None when no known task is in it)."""
    paras = row["user_text"].split("\n\n")
    for k, para in enumerate(paras):
        task = _LEAD.sub("", para)
        if task in tasks or task.rstrip("\n") in tasks:
            paras[k] = "<T>"
            return re.sub(r"\d+", "#", (row["system_text"] or "") + "|" + "\n\n".join(paras))
    return None


def test_template_reuse_versus_paraphrase(tmp_path):
    simulate(tmp_path, scenario="standard", seed=5, scale=0.12)
    rows, labels, _ = _load(tmp_path)
    pools = Pools(5)
    tasks = {t for p in (pools.math_train, pools.code_train, pools.mc) for _, t in p}
    shapes = defaultdict(Counter)
    for r in rows:
        lab, g = labels[r["account_id"]]
        if lab == "attack" and r["n_user_turns"] == 1 and (key := _shape(r, tasks)) is not None:
            shapes[g][key] += 1
    hydra = shapes["hydra_math"]
    assert len(hydra) <= 4 and sum(hydra.values()) > 100  # a few fixed templates, reused
    para = shapes["adaptive_paraphrase"]
    assert sum(para.values()) > 100 and len(para) > 0.6 * sum(para.values())  # reworded nearly every time
    # several languages among the instructions
    instr = [r["system_text"] or r["user_text"] for r in rows if labels[r["account_id"]][0] == "attack"]
    assert any(any(p in t for t in instr) for p in phrases.EXTRACTION_OTHER)


def test_partition_each_item_asked_by_one_account(demo):
    *_, by_group = demo
    askers = defaultdict(set)
    for r in by_group["adaptive_partition"]:
        askers[r["user_text"].split("\n\n")[0]].add(r["account_id"])
    assert len(askers) > 50
    assert max(len(v) for v in askers.values()) == 1


def test_sync_load_balanced_timing(demo):
    *_, by_group = demo
    evs = by_group["hydra_math"]
    per_acct = Counter(r["account_id"] for r in evs)
    first = {}
    for r in evs:
        first.setdefault(r["account_id"], r["timestamp"].timestamp())
    t0 = min(first.values())
    old = [per_acct[a] for a, t in first.items() if t - t0 < 3600]  # accounts active from the start
    assert len(old) > 5 and statistics.pstdev(old) / statistics.mean(old) < 0.1  # round-robin
    hours = Counter(int(r["timestamp"].timestamp() // 3600) for r in evs)
    span = range(min(hours), max(hours) + 1)
    assert sum(1 for h in span if hours[h] == 0) > 3  # whole network idles together between shifts


def test_allowlist_and_metadata(demo):
    res, rows, labels, meta, by_group = demo
    assert meta["allowlist"] and all(labels[a] == ("benign", "licensed_distiller") for a in meta["allowlist"])
    for c in meta["campaigns"]:
        assert set(c["accounts"]) == {a for a, (_, g) in labels.items() if g == c["id"]}
        assert c["traits"]["accounts"] >= c["n_accounts"] > 0
    assert meta["groups"]["enterprise"]["hard_negative"] and not meta["groups"]["casual"]["hard_negative"]
    assert sum(g["events"] for g in res.groups.values()) == res.n_events


def test_corpora_prompts_used_when_given(tmp_path):
    from distillguard.corpora import load_texts

    folder = find_corpora_dir(CORPORA)
    simulate(tmp_path, scenario="demo", seed=1, scale=0.1, corpora=folder)
    rows, labels, meta = _load(tmp_path)
    assert meta["prompt_source"] == "corpora"
    harvest = set(load_texts("gsm8k_train", folder)) | set(load_texts("math", folder)) | set(load_texts("mmlu", folder))
    chat = {t[:6000] for t in load_texts("oasst", folder) + load_texts("arena_hard", folder)}
    hydra = [r for r in rows if labels[r["account_id"]][1] == "hydra_math"]
    assert sum(_shape(r, harvest) is not None for r in hydra) > 0.4 * len(hydra)
    casual = [next(m for m in orjson.loads(r["messages"]) if m["role"] == "user")["content"]
              for r in rows if labels[r["account_id"]][1] == "casual"]
    assert casual and all(c in chat for c in casual)


def test_scenario_overrides_and_errors():
    cfg = get_scenario({"base": "demo", "campaigns": [{"id": "mine", "accounts": 7, "rate": 3.0,
                                                        "mix": {"grading": 1.0}}]}, scale=2.0)
    assert cfg["campaigns"][0]["accounts"] == 14 and cfg["campaigns"][0]["timing"] == "sync"
    with pytest.raises(ValueError, match="unknown keys"):
        get_scenario({"base": "demo", "campaigns": [{"id": "x", "acounts": 3}]})
    with pytest.raises(KeyError, match="unknown scenario"):
        get_scenario("nope")
    with pytest.raises(ValueError, match="mix has unknown"):
        simulate("/tmp/never-written", scenario={"base": "demo", "campaigns": [{"id": "x", "mix": {"poetry": 1}}]})


def test_cli_command(tmp_path):
    app = typer.Typer()
    app.command()(simulate_cmd)
    runner = CliRunner()
    res = runner.invoke(app, ["--out", str(tmp_path), "--scenario", "demo", "--seed", "2", "--scale", "0.05"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "events.jsonl").stat().st_size > 0 and "events" in res.output
    bad = runner.invoke(app, ["--out", str(tmp_path / "x"), "--scenario", "nonexistent"])
    assert bad.exit_code == 4
    cfgfile = tmp_path / "s.yaml"
    cfgfile.write_text("base: demo\ncampaigns:\n  - id: tiny\n    accounts: 5\n")
    ok = runner.invoke(app, ["--out", str(tmp_path / "y"), "--scenario", str(cfgfile), "--scale", "0.05"])
    assert ok.exit_code == 0, ok.output
    assert "tiny" in (tmp_path / "y" / "labels.csv").read_text()


def test_named_scenarios_sizes():
    big = get_scenario("scale2026")
    attack = sum(c["accounts"] for c in big["campaigns"])
    benign = sum(p["accounts"] for p in big["personas"].values())
    assert attack >= 20_000 and benign >= 200_000
    std = get_scenario("standard")
    assert {c["id"] for c in std["campaigns"] if c["adaptive"]} == {
        "adaptive_lowslow", "adaptive_paraphrase", "adaptive_partition", "adaptive_diurnal"}
    ada = get_scenario("adaptive")
    assert all(c["adaptive"] for c in ada["campaigns"]) and set(ada["personas"]) == set(std["personas"])
    half = get_scenario("standard", scale=0.5)
    assert half["campaigns"][0]["accounts"] == std["campaigns"][0]["accounts"] // 2
