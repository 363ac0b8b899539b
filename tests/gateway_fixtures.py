"""Shared helpers for the gateway tests: loopback uvicorn servers and a deterministic test scorer."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread; stops on exit of the ``with`` block."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", access_log=False,
                             lifespan="on")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


#: enforce-mode policy used by the SDK and LiteLLM tests: block campaign members, withhold for flagged accounts
CAMPAIGN_POLICY_YAML = """
mode: enforce
rules:
  - name: campaign-block
    when: {campaign_risk: ">= 0.95"}
    action: block
    reason: campaign_member
  - name: campaign-withhold
    when: {campaign_risk: ">= 0.5"}
    action: withhold_reasoning
    reason: flagged_by_batch_scan
"""


def keyword_scorer(system_text: str, user_text: str, tools) -> dict:
    """Deterministic stand-in for distillguard.signals.score_request in unit tests of the gateway's own
    behaviour (policy, enforcement, faults): 'step by step' prompts score 0.9, everything else 0.05."""
    text = user_text.lower()
    score = 0.9 if "step by step" in text else 0.05
    return {"extraction_score": score, "extraction_reason": "test:keyword" if score > 0.5 else "",
            "capability": "math" if "sum" in text else "chat",
            "template_id": "tpl-" + str(len(text.split())), "template_sig": 0}
