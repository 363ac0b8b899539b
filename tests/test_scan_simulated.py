"""scan on the simulator's demo scenario (small scale): every campaign caught, no benign persona flagged."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from distillguard.detect import Allowlist, scan
from distillguard.sim import simulate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    res = simulate(d, scenario="demo", seed=11, scale=0.15)
    with open(res.labels_path, newline="") as fh:
        labels = {r["account_id"]: r for r in csv.DictReader(fh)}
    return res, labels


def test_demo_scenario_recall_and_false_positives(demo, tmp_path):
    sim, labels = demo
    licensed = {a: "licensed distiller" for a, r in labels.items() if r["group"] == "licensed_distiller"}
    result = scan([sim.events_path], out_dir=tmp_path, allowlist=Allowlist(accounts=licensed))
    flagged = dict(zip(result.accounts.column("account_id").to_pylist(), result.accounts.column("flagged").to_pylist()))
    assert set(flagged) == set(labels)
    per_group = Counter()
    sizes = Counter(r["group"] for r in labels.values())
    for a, f in flagged.items():
        per_group[labels[a]["group"]] += f
    attack_groups = {r["group"] for r in labels.values() if r["label"] == "attack"}
    n_attack = sum(sizes[g] for g in attack_groups)
    recall = sum(per_group[g] for g in attack_groups) / n_attack
    assert recall >= 0.95, dict(per_group)
    for g in attack_groups:  # every campaign recovered (most of its accounts flagged)
        assert per_group[g] >= 0.8 * sizes[g], (g, per_group[g], sizes[g])
    benign_flagged = {g: per_group[g] for g in sizes if g not in attack_groups and per_group[g]}
    assert benign_flagged == {}, benign_flagged
    # the allowlisted licensed distiller is still reported, with its reason
    rows = {r["account_id"]: r for r in result.accounts.to_pylist()}
    for a in licensed:
        assert rows[a]["allowlisted"] and rows[a]["reasons"].startswith("allowlisted:")
    # a flagged campaign is mostly attackers and carries ATLAS techniques
    flagged_camps = [c for c in result.campaigns if c["flagged"]]
    assert flagged_camps, [(c["campaign_id"], c["score"], c["n_accounts"], c["n_flagged_accounts"]) for c in result.campaigns]
    for c in flagged_camps:
        assert any(t["id"] == "AML.T0024.002" for t in c["atlas"])
