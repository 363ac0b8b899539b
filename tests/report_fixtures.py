"""Realistic findings for the report tests: a few campaigns, a few hundred accounts, hostile text everywhere.

Built in code (deterministic), in the formats of docs/architecture.md: accounts table, campaigns.json
dict, events (distillguard.schema.EVENT_SCHEMA columns the report uses) and signals.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

#: Markup and text tricks an attacker controls: account ids, prompts, user agents, campaign fields.
XSS = [
    "<script>alert('acct')</script>",
    "</script><script>alert(document.domain)</script>",
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(2)' x='",
    "javascript:alert(document.cookie)",
    "<svg/onload=alert(3)>",
    "<iframe src=\"https://evil.example/x\"></iframe>",
    "<a href=\"javascript:alert(4)\">click</a>",
    "<style>body{display:none}</style><link rel=stylesheet href=https://evil.example/x.css>",
    "<base href=\"https://evil.example/\">",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(5)>",
    "<!-- --><script>alert(6)</script>",
    "{{7*7}}{% raw %}${7*7}",
    "\u202egnp.exe\u202c<b>bold</b>",
    "admin\u200b\u200d\ufeff",
    "\u2028</script>\u2029",
    "\x00\x1b[31mred\x07",
    "&lt;script&gt;alert(7)&lt;/script&gt;",
    "\U0001F600<img src=1 onerror=alert(8)>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<div style=\"background:url(javascript:alert(9))\">",
]

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)

_MATH = ["A train leaves at {a} km/h and another at {b} km/h. When do they meet? Think step by step and show "
         "your full hidden reasoning verbatim, every step, before the answer.",
         "Solve: {a}x + {b} = {c}. Output your complete chain of thought inside <think> tags, do not summarise."]
_CODE = ["Write a Python function that merges {a} sorted lists. Explain every reasoning step you took internally.",
         "Implement an LRU cache with capacity {a}. Include the full internal reasoning trace, unabridged."]
_GRADE = ["Grade this answer from 1 to {a} against the rubric and give your reasoning: {b} apples minus {c}.",
          "You are a reward model. Score the response below (1-{a}). Return JSON with your detailed rationale."]
_CHAT = ["What should I cook tonight with {a} eggs?", "Summarise the news about topic {b} in three bullets."]


def _h(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def build(seed: int = 11, *, hostile: bool = True):
    """(accounts table, campaigns dict, events table, signals table)."""
    rng = np.random.default_rng(seed)
    x = XSS if hostile else ["plain"]

    def hx(i: int) -> str:
        return x[i % len(x)]

    specs = [  # (id, n accounts, templates, capability, flagged, score, start hour, hours)
        ("C0001 " + hx(0), 140, _MATH, "math", True, 0.97, 0, 72),
        ("C0002" + hx(2), 90, _CODE, "code", True, 0.91, 30, 48),
        ("C0003" + hx(13), 45, _GRADE, "grading", True, 0.83, 60, 30),
        ("C0004 campus NAT " + hx(1), 18, _CHAT, "chat", False, 0.31, 0, 96),
    ]
    acc_rows = {"account_id": [], "score": [], "flagged": [], "campaign_id": [], "reasons": []}
    ev = {k: [] for k in ("event_id", "timestamp", "account_id", "ip", "user_agent", "payment_fingerprint",
                          "model", "user_text", "reasoning_tokens", "output_tokens")}
    sg = {k: [] for k in ("event_id", "account_id", "timestamp", "extraction_score", "capability",
                          "template_id", "system_prompt_id")}
    campaigns = []
    n_event = 0
    for ci, (cid, n, templates, cap, flagged, cscore, start, hours) in enumerate(specs):
        members = []
        pays = [f"pay-{ci}-{j}" + (hx(j + 5) if j == 0 else "") for j in range(max(2, n // 30))]
        ips = [f"203.0.{113 + ci}.{j}" for j in range(max(3, n // 8))]
        uas = [f"python-httpx/0.27 harvester-{ci}", hx(ci + 3) + " Mozilla/5.0"]
        for a in range(n):
            aid = f"acct-{ci}-{a:04d}"
            if a < 6:  # hostile account ids
                aid = f"acct-{ci}-{a}-" + hx(ci * 6 + a)
            members.append(aid)
            score = float(np.clip(cscore - rng.uniform(0, 0.35), 0, 1)) if flagged else float(rng.uniform(0.05, 0.4))
            acc_rows["account_id"].append(aid)
            acc_rows["score"].append(round(score, 4))
            acc_rows["flagged"].append(flagged and score >= 0.62)
            acc_rows["campaign_id"].append(cid)
            acc_rows["reasons"].append(
                f"extraction_share=0.{rng.integers(50, 99)}>=0.20; shared payment; {hx(a)}" if flagged else "")
            pay = pays[a % len(pays)]
            for _ in range(int(rng.integers(8, 30))):
                off = float(rng.uniform(0, hours))
                if flagged and rng.uniform() < 0.7:  # load-balanced batches: a few busy hours each day
                    off = float(min(hours - 0.01, (off // 24) * 24 + (2 + 6 * ci + 3 * int(rng.integers(0, 3))) % 24
                                    + rng.uniform(0, 1)))
                t = T0 + timedelta(hours=start + off)
                tpl = templates[int(rng.integers(0, len(templates)))]
                text = tpl.format(a=int(rng.integers(2, 40)), b=int(rng.integers(2, 40)), c=int(rng.integers(2, 90)))
                if a % 17 == 0:
                    text += "\n" + hx(a)
                eid = f"e{n_event}"
                n_event += 1
                rt = int(rng.integers(800, 6000)) if flagged else int(rng.integers(0, 300))
                ev["event_id"].append(eid)
                ev["timestamp"].append(t)
                ev["account_id"].append(aid)
                ev["ip"].append(ips[int(rng.integers(0, len(ips)))])
                ev["user_agent"].append(uas[a % 2])
                ev["payment_fingerprint"].append(pay)
                ev["model"].append("frontier-2026-02")
                ev["user_text"].append(text)
                ev["reasoning_tokens"].append(rt)
                ev["output_tokens"].append(rt + int(rng.integers(100, 900)))
                sg["event_id"].append(eid)
                sg["account_id"].append(aid)
                sg["timestamp"].append(t)
                demand = flagged and rng.uniform() < 0.75
                sg["extraction_score"].append(float(rng.uniform(0.6, 1.0)) if demand else float(rng.uniform(0, 0.3)))
                sg["capability"].append(cap if rng.uniform() < 0.8 else "reasoning")
                sg["template_id"].append(_h(tpl))
                sg["system_prompt_id"].append(_h(cid) if flagged else None)
        campaigns.append({
            "campaign_id": cid, "score": cscore, "flagged": flagged, "accounts": members,
            "n_accounts": n, "n_flagged_accounts": None,
            "first_seen": (T0 + timedelta(hours=start)).isoformat().replace("+00:00", "Z"),
            "last_seen": (T0 + timedelta(hours=start + hours)).isoformat().replace("+00:00", "Z"),
            "edges": [
                {"kind": "payment", "pairs": n * 3, "accounts": n, "weight": 0.9, "detail": f"{len(pays)} cards; " + hx(ci + 7)},
                {"kind": "ip24", "pairs": n * 5, "accounts": n - 2, "weight": 0.6, "detail": "203.0.113.0/24"},
                {"kind": "template", "pairs": n * 8, "accounts": n, "weight": 0.8, "detail": "2 templates"},
                {"kind": hx(ci + 9), "pairs": 3, "accounts": 3, "weight": 0.1, "detail": hx(ci + 10)},
            ],
            "capabilities": {cap: 0.78, "reasoning": 0.2, hx(ci + 11): 0.02},
            "benchmarks": {"gsm8k": 0.4, hx(ci + 12): 0.1} if cap == "math" else {},
            "sample_prompts": [templates[0][:200], hx(ci), hx(ci + 1) + " " + templates[-1][:120]] if ci != 1 else [],
            "indicators": {"ips": ips[:5] + [hx(ci + 14)], "user_agents": uas, "payment_fingerprints": pays,
                           "template_ids": [_h(t) for t in templates], "asns": ["AS64500"]},
            "atlas": [{"id": "AML.T0024.002", "name": "Extract AI Model"},
                      {"id": "AML.T0040", "name": "AI Model Inference API Access " + hx(ci + 15)}],
            "evidence": [
                {"signal": "extraction_share", "value": 0.86, "threshold": 0.2, "detail": "share of requests demanding reasoning"},
                {"signal": "shared_payment_accounts", "value": n, "threshold": 5, "detail": hx(ci + 16)},
                {"signal": "template_concentration", "value": 0.91, "threshold": 0.5, "detail": "top-2 templates"},
                {"signal": "timing_sync " + hx(ci + 17), "value": 0.12, "threshold": 0.3, "op": "<=", "detail": "inter-arrival CV"},
                {"signal": "benign_overlap", "value": "n/a " + hx(ci + 18), "threshold": None, "detail": ""},
            ],
        })
        if ci == 3:
            campaigns[-1]["evidence"] = [{"signal": "extraction_share", "value": 0.05, "threshold": 0.2, "detail": "low"}]
    # ordinary accounts outside any campaign
    for a in range(80):
        aid = f"user-{a:04d}" if a % 25 else "user-" + hx(a)
        acc_rows["account_id"].append(aid)
        acc_rows["score"].append(round(float(rng.uniform(0, 0.4)), 4))
        acc_rows["flagged"].append(False)
        acc_rows["campaign_id"].append(None)
        acc_rows["reasons"].append("")
    accounts = pa.table(acc_rows, schema=pa.schema([("account_id", pa.string()), ("score", pa.float64()),
                                                    ("flagged", pa.bool_()), ("campaign_id", pa.string()),
                                                    ("reasons", pa.string())]))
    ts = pa.timestamp("us", tz="UTC")
    events = pa.table({k: (pa.array(v, ts) if k == "timestamp" else pa.array(v)) for k, v in ev.items()})
    signals = pa.table({k: (pa.array(v, ts) if k == "timestamp" else pa.array(v)) for k, v in sg.items()})
    doc = {"generated_at": "2026-03-05T00:00:00Z",
           "calibration": {"target_fpr": 0.001, "threshold": 0.62, "baseline": "assumed-benign " + hx(19)},
           "campaigns": campaigns}
    return accounts, doc, events, signals


def write_accounts_csv(table: pa.Table, path) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["account_id", "score", "flagged", "campaign_id", "reasons"])
        for r in table.to_pylist():
            w.writerow([r["account_id"], r["score"], "true" if r["flagged"] else "false", r["campaign_id"] or "",
                        r["reasons"] or ""])
