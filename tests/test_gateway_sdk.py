"""The official openai SDK against the gateway on loopback, with the stub upstream on loopback behind it.

A flagged account (campaign risk pushed through the admin API) gets reasoning withheld, streamed or not, on
chat completions and the Responses API; everyone else gets the upstream's answer untouched.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from distillguard.gateway.app import create_app
from distillguard.gateway.policy import parse_policy
from distillguard.gateway.stub import ANSWER, REASONING, StubUpstream
from gateway_fixtures import CAMPAIGN_POLICY_YAML, LoopbackServer, keyword_scorer

POLICY = parse_policy(CAMPAIGN_POLICY_YAML)
UPSTREAM_KEY = "sk-upstream-never-shown"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    stub = StubUpstream()
    db = tmp_path_factory.mktemp("gw") / "state.sqlite"
    with LoopbackServer(stub.app) as up:
        app = create_app(up.url, POLICY, str(db), scorer=keyword_scorer, admin_token="adm",
                         upstream_api_key=UPSTREAM_KEY)
        with LoopbackServer(app) as gw:
            r = httpx.post(f"{gw.url}/admin/campaign-risk", headers={"authorization": "Bearer adm"},
                           json={"accounts": [{"account_id": "flagged", "score": 0.8, "flagged": True,
                                               "campaign_id": "C7"},
                                              {"account_id": "banned", "score": 0.99, "flagged": True}]})
            assert r.json() == {"updated": 2}
            yield stub, gw, app


def client(gw, account):
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="client-key", max_retries=0,
                         default_headers={"x-account-id": account}, timeout=20)


def reasoning_of(message) -> str | None:
    return (message.model_extra or {}).get("reasoning_content")


@pytest.mark.parametrize("account,withheld", [("flagged", True), ("normal", False)])
def test_chat_non_streaming(servers, account, withheld):
    _, gw, _ = servers
    resp = client(gw, account).chat.completions.create(
        model="stub-1", messages=[{"role": "user", "content": "What is 20 + 22?"}])
    msg = resp.choices[0].message
    assert msg.content == ANSWER
    assert reasoning_of(msg) == (None if withheld else REASONING)


@pytest.mark.parametrize("account,withheld", [("flagged", True), ("normal", False)])
def test_chat_streaming(servers, account, withheld):
    _, gw, _ = servers
    stream = client(gw, account).chat.completions.create(
        model="stub-1", messages=[{"role": "user", "content": "What is 20 + 22?"}], stream=True)
    content, reasoning = [], []
    for chunk in stream:
        for ch in chunk.choices:
            if ch.delta.content:
                content.append(ch.delta.content)
            r = (ch.delta.model_extra or {}).get("reasoning_content")
            if r:
                reasoning.append(r)
    assert "".join(content).strip() == ANSWER
    assert "".join(reasoning).strip() == ("" if withheld else REASONING)


@pytest.mark.parametrize("account,withheld", [("flagged", True), ("normal", False)])
def test_responses_api(servers, account, withheld):
    _, gw, _ = servers
    c = client(gw, account)
    resp = c.responses.create(model="stub-1", input="What is 20 + 22?")
    assert resp.output_text == ANSWER
    assert any(o.type == "reasoning" for o in resp.output) is not withheld
    events = list(c.responses.create(model="stub-1", input="What is 20 + 22?", stream=True))
    types = [e.type for e in events]
    assert types[-1] == "response.completed"
    assert ("response.reasoning_summary_text.delta" in types) is not withheld
    final = events[-1].response
    assert final.output_text == ANSWER
    assert any(o.type == "reasoning" for o in final.output) is not withheld


def test_blocked_account_gets_403_with_reason(servers):
    _, gw, _ = servers
    with pytest.raises(openai.PermissionDeniedError) as ei:
        client(gw, "banned").chat.completions.create(model="stub-1", messages=[{"role": "user", "content": "hi"}])
    assert ei.value.status_code == 403
    assert ei.value.body["code"] == "distillguard_blocked:campaign_member"


def test_upstream_key_replaced_and_audited(servers):
    stub, gw, app = servers
    client(gw, "normal").chat.completions.create(model="stub-1", messages=[{"role": "user", "content": "hi"}])
    assert stub.auth_seen[-1] == f"Bearer {UPSTREAM_KEY}"
    rows = httpx.get(f"{gw.url}/admin/audit?limit=1000", headers={"authorization": "Bearer adm"}).json()["rows"]
    assert rows and all(UPSTREAM_KEY not in str(r) for r in rows)
    flagged = [r for r in rows if r["account_id"] == "flagged"]
    assert flagged and all(r["action"] == "withhold_reasoning" and r["rule"] == "campaign-withhold" for r in flagged)
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert "distillguard_gateway_reasoning_withheld_total" in metrics


def test_cli_gateway_process_enforces_and_persists(tmp_path):
    """`distillguard gateway` as a real process: --policy, --findings, --state, secrets from the environment."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from distillguard.gateway.state import read_audit
    from gateway_fixtures import free_port

    (tmp_path / "accounts.csv").write_text("account_id,score,flagged,campaign_id,reasons\nbanned,0.97,true,C1,r\n")
    state = tmp_path / "gw.sqlite"
    stub = StubUpstream()
    with LoopbackServer(stub.app) as up:
        port = free_port()
        exe = Path(sys.executable).with_name("distillguard")
        env = dict(os.environ, DISTILLGUARD_ADMIN_TOKEN="tok", DISTILLGUARD_UPSTREAM_API_KEY=UPSTREAM_KEY)
        root = Path(__file__).resolve().parents[1]
        proc = subprocess.Popen([str(exe), "gateway", "--upstream", up.url, "--port", str(port),
                                 "--policy", str(root / "examples" / "policy.yaml"), "--state", str(state),
                                 "--findings", str(tmp_path)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    assert proc.poll() is None and time.monotonic() < deadline, "gateway did not start"
                    time.sleep(0.2)
            c = openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0,
                              default_headers={"x-account-id": "someone"})
            msg = c.chat.completions.create(model="stub-1", messages=[{"role": "user", "content": "hi"}])
            assert reasoning_of(msg.choices[0].message) == REASONING
            with pytest.raises(openai.PermissionDeniedError):
                client(type("S", (), {"url": url}), "banned").chat.completions.create(
                    model="stub-1", messages=[{"role": "user", "content": "hi"}])
            assert httpx.get(f"{url}/admin/accounts/banned", headers={"authorization": "Bearer tok"}).json()[
                "campaign_id"] == "C1"
            assert stub.auth_seen[-1] == f"Bearer {UPSTREAM_KEY}"
        finally:
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=20)[0].decode()
    assert UPSTREAM_KEY not in out
    rows = read_audit(state).to_pylist()
    assert [(r["account_id"], r["action"], r["status_code"]) for r in rows] == [
        ("someone", "allow", 200), ("banned", "block", 403)]
