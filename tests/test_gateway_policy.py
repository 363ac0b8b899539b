"""Policy YAML: validation errors name file, line and field; first-match evaluation; shadow and allowlists."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillguard.gateway.policy import PolicyError, default_policy, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy.yaml"


def test_default_policy_is_shadow_and_decides_without_enforcing():
    pol = default_policy()
    assert pol.mode == "shadow"
    v = pol.evaluate({"campaign_risk": 0.95, "account_id": "a"})
    assert v.action == "block" and v.rule == "campaign-member"
    assert v.enforced is False and v.effective_action == "allow"


def test_example_policy_loads_and_enforces():
    pol = load_policy(EXAMPLE)
    assert pol.mode == "enforce"
    assert pol.rules, "example policy has rules"
    v = pol.evaluate({"campaign_risk": 0.99, "account_id": "x", "tier": "default"})
    assert v.enforced and v.action == "block"


def test_first_match_wins_and_comparisons():
    pol = parse_policy("""
mode: enforce
rules:
  - name: hard
    when: {extraction_score: "> 0.9"}
    action: block
  - name: soft
    when: {extraction_score: 0.5, capability: [math, code]}
    action: withhold_reasoning
    replace: summary
""")
    assert pol.evaluate({"extraction_score": 0.95, "capability": "chat"}).rule == "hard"
    v = pol.evaluate({"extraction_score": 0.6, "capability": "math"})
    assert (v.rule, v.action, v.replace) == ("soft", "withhold_reasoning", "summary")
    assert pol.evaluate({"extraction_score": 0.6, "capability": "chat"}).rule == "default"
    assert pol.evaluate({"extraction_score": 0.9, "capability": "code"}).rule == "soft"  # > is strict


def test_any_groups_and_allowlist():
    pol = parse_policy("""
mode: enforce
allowlist: [licensed-co]
rules:
  - name: either
    any:
      - {campaign_risk: ">= 0.8"}
      - {rate_1m: ">= 100", extraction_share: ">= 0.5"}
    action: throttle
    retry_after_s: 7
  - name: audit-everyone
    when: {requests_total: ">= 0"}
    action: log
    include_allowlisted: true
""")
    v = pol.evaluate({"rate_1m": 150, "extraction_share": 0.7, "campaign_risk": 0, "requests_total": 1})
    assert (v.rule, v.retry_after_s) == ("either", 7)
    v = pol.evaluate({"rate_1m": 150, "extraction_share": 0.1, "campaign_risk": 0, "requests_total": 1})
    assert v.rule == "audit-everyone"
    v = pol.evaluate({"campaign_risk": 0.99, "allowlisted": True, "requests_total": 5})
    assert v.rule == "audit-everyone" and v.action == "log"


def test_per_rule_shadow():
    pol = parse_policy("""
mode: enforce
rules:
  - name: trial
    when: {extraction_score: 0.5}
    action: block
    shadow: true
""")
    v = pol.evaluate({"extraction_score": 0.9})
    assert v.action == "block" and not v.enforced


@pytest.mark.parametrize("text,line,field", [
    ("mode: enforce\nrules:\n  - name: a\n    action: nuke\n", 4, "rules[0].action"),
    ("rules:\n  - name: a\n    action: block\n    when: {extraction_scor: 0.5}\n", 4, "rules[0].when.extraction_scor"),
    ("rules:\n  - name: a\n    action: block\n    when: {extraction_score: 'about 0.5'}\n", 4,
     "rules[0].when.extraction_score"),
    ("mode: loud\n", 1, "mode"),
    ("upstream:\n  retries: -1\n", 2, "upstream.retries"),
    ("fail_mode:\n  scorer: maybe\n", 2, "fail_mode.scorer"),
    ("rules:\n  - name: a\n    action: block\n  - name: a\n    action: log\n", 4, "rules[1].name"),
    ("colour: red\n", 1, "colour"),
    ("rules:\n  - name: a\n    when: {tier: true}\n    action: block\n", 3, "rules[0].when.tier"),
    ("rules:\n  - name: a\n", 2, "rules[0].action"),
])
def test_errors_name_line_and_field(text, line, field):
    with pytest.raises(PolicyError) as ei:
        parse_policy(text, "p.yaml")
    err = ei.value
    assert (err.line, err.field) == (line, field), str(err)
    assert str(err).startswith(f"p.yaml:{line}: {field}:")


def test_yaml_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(PolicyError) as ei:
        parse_policy("rules: [\n  - name: a\n", "bad.yaml")
    assert ei.value.line is not None and "bad.yaml" in str(ei.value)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")


def test_tiers_map_accounts():
    pol = parse_policy("tiers:\n  enterprise: [acme, 42]\n")
    assert pol.tier_of("acme") == "enterprise" and pol.tier_of("42") == "enterprise"
    assert pol.tier_of("other") == "default"


def test_cli_check_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from distillguard.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: a\n    action: explode\n")
    r = CliRunner().invoke(app, ["gateway", "--upstream", "http://127.0.0.1:9", "--policy", str(bad), "--check"])
    assert r.exit_code == 4
    assert "bad.yaml:3" in r.output and "rules[0].action" in r.output
    r = CliRunner().invoke(app, ["gateway", "--upstream", "http://127.0.0.1:9", "--policy", str(EXAMPLE), "--check"])
    assert r.exit_code == 0, r.output
