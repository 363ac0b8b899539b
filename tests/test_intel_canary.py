"""Phrasing canaries: answer-preserving insertion, attribution of a synthetic leaked dataset, calibrated
p-values on clean text, the gateway hook, and ``distillguard attribute``."""

from __future__ import annotations

import random
import re

import httpx
import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.gateway.app import create_app
from distillguard.gateway.policy import parse_policy
from distillguard.gateway.state import SQLiteState
from distillguard.gateway.stub import StubUpstream
from distillguard.intel.canary import (SLOTS, CanaryError, Hypothesis, PhrasingCanary, attribute,
                                       hypotheses_for_accounts, read_suspect_texts, slot_counts)
from gateway_fixtures import keyword_scorer

SECRET = "provider-canary-secret-01"
WEEK = 7 * 86400
NOW = 1_780_000_000.0  # a fixed instant (2026-05-28)

# natural usage is skewed: the first phrasing of a slot is the common one
_SENTENCES = [
    "{first}, we {calc} the cost of {n} apples at {m} dollars each.",
    "{note} {n} times {m} {eq} {nm}.",
    "{so} the subtotal {eq} {nm} dollars, {means} the budget is fine.",
    "{its} worth checking: we {verify} that {nm} divided by {m} gives {n}.",
    "{recall} the discount is {m} percent; {we_need} subtract it.",
    "{addition}, the tax {isnt} included, so {lets} add it {finally}.",
    "{in_total} we pay about {nm} dollars; {clearly} {thats} the answer.",
    "{for_ex}, if {n} were doubled we {dont} change the method.",
    "{thus2} {we_get} {nm} again, which {doesnt} contradict anything.",
    "{summary}, the {cant} part is rounding, and {theres} nothing else.",
]
_CHOICES = {
    "first": ("First of all", "To begin with", "To start with"), "calc": ("calculate", "compute"),
    "note": ("Note that", "Notice that", "Observe that"), "eq": ("equals", "is equal to"),
    "so": ("Therefore", "Thus", "Hence"), "means": ("which means", "which implies", "which tells us"),
    "its": ("It's", "It is"), "verify": ("verify", "confirm", "double-check"),
    "recall": ("Recall that", "Remember that"), "we_need": ("we need to", "we have to", "we must"),
    "addition": ("In addition", "Additionally", "Moreover", "Furthermore"), "isnt": ("isn't", "is not"),
    "lets": ("let's", "let us"), "finally": ("finally", "lastly"),
    "in_total": ("In total", "Altogether", "In all"), "clearly": ("clearly", "obviously", "evidently"),
    "thats": ("that's", "that is"), "for_ex": ("For example", "For instance"), "dont": ("don't", "do not"),
    "thus2": ("Therefore", "Thus", "Hence"), "we_get": ("we get", "we obtain"), "doesnt": ("doesn't", "does not"),
    "summary": ("In summary", "To summarize", "To sum up", "In short"), "cant": ("can't", "cannot"),
    "theres": ("there's", "there is"),
}


def reasoning_texts(n: int, seed: int) -> list[str]:
    """Reasoning-like answers written with natural, skewed phrasing choices."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for s in rng.sample(_SENTENCES, 5):
            fill = {k: (v[0] if rng.random() < 0.6 else rng.choice(v)) for k, v in _CHOICES.items()}
            a, b = rng.randint(2, 40), rng.randint(2, 9)
            parts.append(s.format(n=a, m=b, nm=a * b, **fill))
        out.append(" ".join(parts) + f" The answer is {rng.randint(1, 999)}.")
    return out


def _numbers(t: str) -> list[str]:
    return re.findall(r"\d+", t)


def test_insert_preserves_answers_code_and_maths():
    c = PhrasingCanary(SECRET)
    text = ("Therefore the total is 42. Note that we don't round.\n```python\nx = 1  # therefore it's fine\n```\n"
            "Thus $a = b$ hence and $therefore$ stays, see https://example.com/thus-it-is; it's done. HENCE 7.")
    out = c.insert("acct-1", text, NOW)
    assert _numbers(out) == _numbers(text)
    assert "```python\nx = 1  # therefore it's fine\n```" in out  # code untouched
    assert "$therefore$" in out and "https://example.com/thus-it-is" in out
    assert out[0].isupper() and out.rstrip().endswith("7.")
    for t in reasoning_texts(30, seed=3):
        o = c.insert("acct-1", t, NOW)
        assert _numbers(o) == _numbers(t) and o.endswith(t[t.rindex("The answer"):])
        assert c.insert("acct-1", o, NOW) == o  # idempotent: the mark is the choice itself
        assert c.insert("acct-1", t, NOW + 60) == o  # same week, same variants
    assert c.insert("acct-1", "No slot phrases here: 2 + 2 = 4.", NOW) == "No slot phrases here: 2 + 2 = 4."


def test_variants_are_keyed_to_account_secret_and_week():
    c, other = PhrasingCanary(SECRET), PhrasingCanary("another-provider-secret")
    b = c.bucket_of(NOW)
    codes = {a: c.codes(a, b) for a in ("a", "b", "c", "d")}
    assert len(set(codes.values())) == 4
    assert c.codes("a", b) != c.codes("a", b + 1)
    assert c.codes("a", b) != other.codes("a", b)
    assert all(0 <= v < len(SLOTS[s]) for s, v in enumerate(codes["a"]))
    # every variant of a slot is reachable: over many accounts each slot uses all its phrasings
    many = np.array([c.codes(f"acct-{i}", b) for i in range(400)])
    assert all(len(set(many[:, s])) == len(SLOTS[s]) for s in range(len(SLOTS)))
    with pytest.raises(CanaryError):
        PhrasingCanary("short")


def test_attribution_finds_the_leaking_account_in_a_synthetic_leaked_dataset():
    c = PhrasingCanary(SECRET)
    leaked = [c.insert("acct-042", t, NOW) for t in reasoning_texts(160, seed=1)]
    dataset = leaked + reasoning_texts(80, seed=2)  # one third of the dataset is from elsewhere
    random.Random(0).shuffle(dataset)
    hyps = hypotheses_for_accounts([f"acct-{i:03d}" for i in range(300)], NOW - 14 * 86400, NOW)
    assert len(hyps) == 900
    rep = attribute(dataset, hyps, SECRET, alpha=0.01)
    top = rep.results[0]
    assert (top.account_id, top.bucket) == ("acct-042", c.bucket_of(NOW))
    assert top.significant and top.p_adjusted < 1e-4
    assert [r for r in rep.results[1:] if r.significant] == []
    # the same account in another week (other variants) is not implicated
    other_week = [r for r in rep.results if r.account_id == "acct-042" and r.bucket != top.bucket]
    assert all(r.p_adjusted > 0.01 for r in other_week)


def test_clean_text_gives_calibrated_non_significant_p_values():
    clean = reasoning_texts(200, seed=5)
    hyps = [Hypothesis(f"acct-{i}", 2943) for i in range(2000)]
    rep = attribute(clean, hyps, SECRET)
    assert rep.significant() == []
    p = np.array([r.p_value for r in rep.results])
    # the null distribution is exact: P(p <= a) <= a (a little slack for 2000 draws)
    for a in (0.01, 0.05, 0.2):
        assert (p <= a).mean() <= a + 3 * np.sqrt(a * (1 - a) / p.size)
    assert (p <= 0.5).mean() > 0.3  # and not degenerate
    assert attribute([], hyps[:3], SECRET).results[0].p_value == 1.0


def test_paraphrase_removes_the_mark():
    c = PhrasingCanary(SECRET)
    leaked = [c.insert("acct-7", t, NOW) for t in reasoning_texts(150, seed=8)]
    # a paraphraser that rewrites every slot to its first phrasing erases the choice the canary made
    flat = [re.sub(r"(?i)\b(thus|hence)\b", "therefore", t) for t in leaked]
    hyp = [Hypothesis("acct-7", c.bucket_of(NOW))]
    full = attribute(leaked, hyp, SECRET).results[0]
    part = attribute(flat, hyp, SECRET).results[0]
    assert part.p_value > full.p_value  # weaker evidence once a slot is normalised


def test_gateway_inserts_phrasing_canary_and_attribute_cli_finds_it(tmp_path, monkeypatch):
    policy = parse_policy("""
mode: enforce
rules:
  - name: mark
    when: {campaign_risk: ">= 0.3"}
    action: canary
""")
    stub = StubUpstream()
    state_path = tmp_path / "gw.sqlite"
    store = SQLiteState(state_path)
    monkeypatch.setenv("DISTILLGUARD_CANARY_SECRET", SECRET)
    gw_app = create_app("http://upstream.test", policy, store, scorer=keyword_scorer,
                        transport=httpx.ASGITransport(app=stub.app))
    gw = gw_app.state.gateway
    assert isinstance(gw.canary, PhrasingCanary)
    gw.state.set_campaign_risk([{"account_id": "sus-1", "score": 0.5}])
    import distillguard.gateway.stub as stubmod

    outputs = []
    texts = reasoning_texts(40, seed=11)
    with TestClient(gw_app) as client:
        for t in texts:
            monkeypatch.setattr(stubmod, "ANSWER", t)
            body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
            r = client.post("/v1/chat/completions", content=orjson.dumps(body),
                            headers={"x-account-id": "sus-1", "content-type": "application/json"})
            outputs.append(r.json()["choices"][0]["message"]["content"])
            r2 = client.post("/v1/chat/completions", content=orjson.dumps(body),
                             headers={"x-account-id": "fine-1", "content-type": "application/json"})
            assert r2.json()["choices"][0]["message"]["content"] == t  # unsuspicious: untouched
        stream = client.post("/v1/chat/completions", content=orjson.dumps(dict(body, stream=True)),
                             headers={"x-account-id": "sus-1", "content-type": "application/json"}).text
    assert outputs != texts and all(_numbers(o) == _numbers(t) for o, t in zip(outputs, texts))
    assert "data:" in stream
    store.close()
    suspect = tmp_path / "leak.jsonl"
    with open(suspect, "wb") as fh:
        for o in outputs:
            fh.write(orjson.dumps({"messages": [{"role": "user", "content": "q"},
                                                {"role": "assistant", "content": o}]}) + b"\n")
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("\n".join(f"acct-{i}" for i in range(50)) + "\n")
    runner = CliRunner()
    r = runner.invoke(app, ["attribute", str(suspect), "--audit", str(state_path), "--accounts", str(accounts),
                            "--since", "2026-01-01", "--json", str(tmp_path / "attr.json")])
    assert r.exit_code == 0, r.output
    res = orjson.loads((tmp_path / "attr.json").read_bytes())
    assert res["results"][0]["account_id"] == "sus-1" and res["results"][0]["significant"]
    assert [x for x in res["results"][1:] if x["significant"]] == []
    assert "significant at family-wise alpha" in r.output and "sus-1" in r.output
    # clean text: nothing significant
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in reasoning_texts(60, seed=12)))
    r = runner.invoke(app, ["attribute", str(clean), "--audit", str(state_path), "--accounts", str(accounts),
                            "--since", "2026-01-01"])
    assert r.exit_code == 0 and "0 significant" in r.output
    monkeypatch.delenv("DISTILLGUARD_CANARY_SECRET")
    r = runner.invoke(app, ["attribute", str(clean), "--account", "a", "--since", "2026-01-01"])
    assert r.exit_code == 4


def test_suspect_reader_errors_name_file_and_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"text": "fine"}\n{"oops": 1}\n')
    with pytest.raises(CanaryError, match=r"s\.jsonl:2: no text field"):
        read_suspect_texts(p)
    p.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(CanaryError, match=r"s\.jsonl:2: not valid JSON"):
        read_suspect_texts(p)
    t = tmp_path / "s.txt"
    t.write_text("Therefore it's done.")
    assert slot_counts(read_suspect_texts(t)).sum() == 2
