"""Allowlists of licensed distillers and eval partners (distillguard.detect.Allowlist)."""

from __future__ import annotations

import pytest

from distillguard.detect import Allowlist, AllowlistError


def test_yaml_lists_and_mappings(tmp_path):
    p = tmp_path / "allow.yaml"
    p.write_text("accounts:\n  - {id: acct-1, reason: licensed distillation customer}\n  - acct-2\n"
                 "orgs:\n  org-evals: eval partner\n", encoding="utf-8")
    al = Allowlist.load(p)
    assert al.reason("acct-1") == "licensed distillation customer"
    assert al.reason("acct-2") == "allowlisted"
    assert al.reason("acct-3", "org-evals") == "eval partner"
    assert al.reason("acct-3", "org-other") is None and al.reason("acct-3") is None
    assert al.mask(["acct-1", "x", "y"], [None, "org-evals", None]).tolist() == [True, True, False]


def test_csv_with_and_without_kind(tmp_path):
    p = tmp_path / "allow.csv"
    p.write_text("kind,id,reason\naccount,acct-9,eval partner\norg,org-7,licensed\n\n", encoding="utf-8")
    al = Allowlist.load(p)
    assert al.accounts == {"acct-9": "eval partner"} and al.orgs == {"org-7": "licensed"}
    q = tmp_path / "ids.csv"
    q.write_text("id\nacct-1\n", encoding="utf-8")
    assert Allowlist.load(q).accounts == {"acct-1": "allowlisted"}


@pytest.mark.parametrize("name,text,needle", [
    ("bad.csv", "kind,id,reason\nuser,acct-1,x\n", "line 2, field kind"),
    ("bad2.csv", "kind,id,reason\naccount,,x\n", "line 2, field id"),
    ("bad3.csv", "name,reason\nacct,x\n", "line 1"),
    ("bad.yaml", "accounts:\n  - {reason: no id}\n", "accounts[0].id"),
    ("bad2.yaml", "accounts: [unclosed\n", "line"),
    ("bad3.yaml", "people: []\n", "unknown key 'people'"),
    ("bad.txt", "acct-1\n", "must be .yaml"),
])
def test_bad_allowlists_name_file_line_and_field(tmp_path, name, text, needle):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    with pytest.raises(AllowlistError) as exc:
        Allowlist.load(p)
    assert str(p) in str(exc.value) and needle in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(AllowlistError, match="not found"):
        Allowlist.load(tmp_path / "nope.yaml")
