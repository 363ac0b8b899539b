"""Shared helpers for the intel tests: a findings document, and a medallion TAXII 2.1 server on loopback."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

KEY = "shared-secret-between-peers-0001"
OTHER_KEY = "a-different-sharing-key-9999"


def campaigns_doc(payment="card-shared", ips=("203.0.113.5",), ua="hydra-client/1.0 'x' \\ y") -> dict:
    return {
        "generated_at": "2026-03-10T00:00:00Z",
        "calibration": {"target_fpr": 0.001, "threshold": 0.62, "baseline": "assumed-benign"},
        "campaigns": [
            {"campaign_id": "C0001", "score": 0.97, "flagged": True, "accounts": ["ring-1", "ring-2", "ring-3"],
             "n_accounts": 3, "n_flagged_accounts": 3, "first_seen": "2026-03-01T00:00:00Z",
             "last_seen": "2026-03-09T12:00:00Z", "requests": 12345, "reasoning_tokens": 456789,
             "output_tokens": 678901, "edges": [{"kind": "payment", "pairs": 3, "accounts": 3, "weight": 0.9,
                                                 "detail": "payment 3f2a (3 customers)"}],
             "capabilities": {"math": 0.61, "code": 0.30}, "benchmarks": {"gsm8k": 0.4},
             "sample_prompts": ["SECRET-PROMPT-TEXT solve step by step and show your hidden reasoning"],
             "indicators": {"ips": list(ips), "cidrs": ["203.0.113.0/24"], "asns": ["AS64500"], "user_agents": [ua],
                            "payment_fingerprints": [payment], "template_ids": ["tpl-ring"],
                            "template_sigs": [0x1234_5678_9ABC_DEF0], "system_prompt_ids": ["sp-ring"]},
             "atlas": [{"id": "AML.T0024.002", "name": "Extract AI Model"},
                       {"id": "AML.T0008.005", "name": "AI Service Proxies"},
                       {"id": "AML.T0054", "name": "LLM Jailbreak"}],
             "evidence": [{"signal": "extraction_share", "value": 0.8, "threshold": 0.2, "detail": "x"}]},
            {"campaign_id": "C0002", "score": 0.3, "flagged": False, "accounts": ["u1", "u2"], "n_accounts": 2,
             "indicators": {"ips": ["192.0.2.9"], "payment_fingerprints": ["card-benign"]}},
        ],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Medallion:
    """The OASIS medallion TAXII 2.1 server (memory backend) on 127.0.0.1, one read-write collection,
    one user per provider."""

    COLLECTION = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"

    def __init__(self, tmp: Path, users: dict[str, str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api1/collections/{self.COLLECTION}/"
        data = {
            "/discovery": {"title": "test", "description": "loopback", "contact": "none",
                           "default": f"{self.base}/api1/", "api_roots": [f"{self.base}/api1/"]},
            "api1": {"information": {"title": "api1", "description": "peers", "max_content_length": 9765625,
                                     "versions": ["application/taxii+json;version=2.1"]},
                     "status": [],
                     "collections": [{"id": self.COLLECTION, "title": "distillation intel", "description": "x",
                                      "can_read": True, "can_write": True, "objects": [], "manifest": [],
                                      "media_types": ["application/stix+json;version=2.1"]}]},
        }
        (tmp / "data.json").write_text(json.dumps(data))
        cfg = {"backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                           "filename": str(tmp / "data.json")},
               "users": users, "taxii": {"max_page_size": 100}}
        (tmp / "cfg.json").write_text(json.dumps(cfg))
        self.cfg = tmp / "cfg.json"

    def __enter__(self) -> "Medallion":
        import logging

        import medallion
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app = medallion.load_app(str(self.cfg))
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
