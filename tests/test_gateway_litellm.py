"""A real LiteLLM proxy (litellm[proxy]==1.81.16) on loopback using both integrations:

* ``DistillGuardGuardrail`` in-process (pre_call + post_call): withholds reasoning for a flagged account,
  streamed or not, and blocks a campaign member;
* the gateway's Generic Guardrail API endpoint (pre_call): blocks a campaign member by its LiteLLM key.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from distillguard.gateway.app import create_app
from distillguard.gateway.litellm_guardrail import LITELLM_VERSION
from distillguard.gateway.policy import parse_policy
from distillguard.gateway.state import SQLiteState
from distillguard.gateway.stub import ANSWER, REASONING, StubUpstream
from gateway_fixtures import CAMPAIGN_POLICY_YAML, LoopbackServer, free_port, keyword_scorer

ROOT = Path(__file__).resolve().parents[1]
POLICY_YAML = CAMPAIGN_POLICY_YAML


def _key_account(key: str) -> str:
    return "litellm:" + hashlib.sha256(key.encode()).hexdigest()[:24]


@pytest.fixture(scope="module")
def litellm_proxy(tmp_path_factory):
    from importlib.metadata import version

    assert version("litellm") == LITELLM_VERSION
    tmp = tmp_path_factory.mktemp("litellm")
    (tmp / "policy.yaml").write_text(POLICY_YAML)
    state = SQLiteState(tmp / "state.sqlite")
    state.set_campaign_risk([{"account_id": "flagged", "score": 0.8}, {"account_id": "banned", "score": 0.99}])
    state.close()
    shutil.copy(ROOT / "examples" / "litellm" / "distillguard_guardrail.py", tmp)
    stub = StubUpstream()
    with LoopbackServer(stub.app) as up:
        gw_app = create_app(up.url, parse_policy(POLICY_YAML), scorer=keyword_scorer)
        gw_app.state.gateway.state.set_campaign_risk([{"account_id": _key_account("sk-banned-key"), "score": 0.99}])
        with LoopbackServer(gw_app) as gw:
            port = free_port()
            (tmp / "config.yaml").write_text(f"""
model_list:
  - model_name: stub-1
    litellm_params:
      model: openai/stub-1
      api_base: {up.url}/v1
      api_key: sk-upstream
guardrails:
  - guardrail_name: distillguard
    litellm_params:
      guardrail: distillguard_guardrail.DistillGuardGuardrail
      mode: [pre_call, post_call]
      default_on: true
  - guardrail_name: distillguard-remote
    litellm_params:
      guardrail: generic_guardrail_api
      mode: pre_call
      api_base: {gw.url}
      default_on: true
""")
            env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", DISTILLGUARD_STATE=str(tmp / "state.sqlite"),
                       DISTILLGUARD_POLICY=str(tmp / "policy.yaml"), LITELLM_LOG="ERROR")
            exe = Path(sys.executable).with_name("litellm")
            log = open(tmp / "litellm.log", "w")
            proc = subprocess.Popen([str(exe), "--config", str(tmp / "config.yaml"), "--host", "127.0.0.1",
                                     "--port", str(port)], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 90
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError("litellm exited:\n" + (tmp / "litellm.log").read_text()[-3000:])
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("litellm proxy did not start in 90 s")
                    time.sleep(0.3)
                yield f"http://127.0.0.1:{port}", gw_app, stub
            finally:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.close()


def _client(url: str, account: str | None = None, key: str = "sk-client") -> openai.OpenAI:
    headers = {"x-account-id": account} if account else {}
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, default_headers=headers, timeout=30)


MSG = [{"role": "user", "content": "What is 20 + 22?"}]


def _reasoning(message) -> str | None:
    return getattr(message, "reasoning_content", None) or (message.model_extra or {}).get("reasoning_content")


def test_inprocess_guardrail_withholds_for_flagged_only(litellm_proxy):
    url, _, _ = litellm_proxy
    normal = _client(url, "normal").chat.completions.create(model="stub-1", messages=MSG)
    assert normal.choices[0].message.content == ANSWER and _reasoning(normal.choices[0].message) == REASONING
    flagged = _client(url, "flagged").chat.completions.create(model="stub-1", messages=MSG)
    assert flagged.choices[0].message.content == ANSWER and not _reasoning(flagged.choices[0].message)


def test_inprocess_guardrail_streaming(litellm_proxy):
    url, _, _ = litellm_proxy
    for account, expect in (("flagged", ""), ("normal", REASONING)):
        content, reasoning = [], []
        for chunk in _client(url, account).chat.completions.create(model="stub-1", messages=MSG, stream=True):
            for ch in chunk.choices:
                content.append(ch.delta.content or "")
                reasoning.append(_reasoning(ch.delta) or "")
        assert "".join(content).strip() == ANSWER
        assert "".join(reasoning).strip() == expect, account


def test_inprocess_guardrail_blocks_campaign_member(litellm_proxy):
    url, _, stub = litellm_proxy
    before = stub.hits.total()
    with pytest.raises(openai.APIStatusError) as ei:
        _client(url, "banned").chat.completions.create(model="stub-1", messages=MSG)
    assert ei.value.status_code == 403
    assert "distillguard_blocked:campaign_member" in str(ei.value)
    assert stub.hits.total() == before


def test_generic_guardrail_api_blocks_by_litellm_key(litellm_proxy):
    url, gw_app, stub = litellm_proxy
    before = stub.hits.total()
    with pytest.raises(openai.APIStatusError) as ei:
        _client(url, key="sk-banned-key").chat.completions.create(model="stub-1", messages=MSG)
    assert "distillguard_blocked:campaign_member" in str(ei.value)
    assert stub.hits.total() == before
    rows = gw_app.state.gateway.state.audit_rows()
    assert any(r["account_id"] == _key_account("sk-banned-key") and r["action"] == "block" for r in rows)
    assert any(r["path"] == "litellm:request" and r["action"] == "allow" for r in rows)


def test_post_call_hook_strips_responses_api_reasoning_items(tmp_path):
    """The hook on a Responses API object (LiteLLM's aresponses call type), called directly."""
    import asyncio
    from types import SimpleNamespace

    from distillguard.gateway.litellm_guardrail import DistillGuardGuardrail

    state = SQLiteState(tmp_path / "s.sqlite")
    state.set_campaign_risk([{"account_id": "flagged", "score": 0.8}])
    g = DistillGuardGuardrail(policy=parse_policy(POLICY_YAML), state=state, scorer=keyword_scorer,
                              guardrail_name="dg", event_hook=["pre_call", "post_call"])
    data = {"litellm_call_id": "c1", "input": "hi", "proxy_server_request": {"headers": {"x-account-id": "flagged"}}}
    key = SimpleNamespace(user_id=None, team_id=None, token=None, end_user_id=None)
    asyncio.run(g.async_pre_call_hook(key, None, data, "aresponses"))
    resp = SimpleNamespace(output=[{"type": "reasoning", "summary": [{"text": REASONING}]},
                                   {"type": "message", "content": [{"type": "output_text", "text": ANSWER}]}])
    out = asyncio.run(g.async_post_call_success_hook(data, key, resp))
    assert [o["type"] for o in out.output] == ["message"]
    state.close()
