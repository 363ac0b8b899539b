"""Named scenarios: benign persona counts and attack campaign configurations.

A scenario is a plain dict (JSON/YAML friendly) so it can be written to ``scenario.json`` and overridden
from a file. ``--scale X`` multiplies every account count (at least one account is kept per group).

Campaign knobs (all optional except ``id``; defaults in :data:`CAMPAIGN_DEFAULTS`):

``accounts``             number of accounts in the campaign
``rate``                 requests per account per day
``mix``                  harvested capability -> weight: math, reasoning, code, tool_use, grading, sensitive
``resold_share``         share of requests that are resold ordinary traffic (chat/coding, no extraction)
``extraction_share``     share of harvesting requests that carry a reasoning-extraction instruction
``placement``            where the instruction goes: ``system``, ``user`` or ``mixed``
``templates``            number of fixed prompt templates reused by the campaign; 0 = paraphrase every request
``accounts_per_payment`` accounts sharing one payment fingerprint; 0 or 1 = each its own
``created``              ``burst`` (accounts registered in batches of ``burst_size`` within minutes) or ``spread``
``ip``                   ``rotate`` (every request from a shared proxy pool of ``ip_pool`` addresses of kind
                         ``ip_kinds``: mixed/datacenter/residential) or ``own`` (one residential IP per account)
``ua``                   ``shared`` (one proxy user agent) or ``varied`` (common SDK agents)
``timing``               ``sync`` (shifts on/off together, round-robin load balancing) or ``diurnal`` (each
                         account follows a human day in its own time zone)
``pivot_hours``          hours after the new model's release when the campaign switches to it (null: never)
``partition``            each account asks a disjoint slice of the task set, each item once
"""

from __future__ import annotations

import copy
from typing import Any

#: Benign personas: name -> (hard negative?, one-line description)
PERSONAS: dict[str, tuple[bool, str]] = {
    "casual": (False, "chat users, multi-turn, diurnal in their own time zone"),
    "developer": (False, "coding questions, SDK user agents, some with their own tool definitions"),
    "enterprise": (True, "batch pipelines: one narrow template, cron-regular, datacenter IPs, several keys per org"),
    "eval_runner": (True, "public test sets in bursts, step-by-step prompting, high effort, early adopters"),
    "campus": (True, "students behind one campus NAT IP, accounts created together, homework maths/code"),
    "redteam": (True, "jailbreak hobbyists and red-teamers: harmful and jailbreak prompts, not distillation"),
    "licensed_distiller": (True, "allowlisted distillation customer: extraction at volume, with a licence"),
}

CAMPAIGN_DEFAULTS: dict[str, Any] = {
    "accounts": 100,
    "rate": 40.0,
    "mix": {"math": 0.5, "reasoning": 0.2, "code": 0.3},
    "resold_share": 0.3,
    "extraction_share": 0.9,
    "placement": "mixed",
    "templates": 3,
    "accounts_per_payment": 10,
    "created": "burst",
    "burst_size": 25,
    "ip": "rotate",
    "ip_pool": 40,
    "ip_kinds": "mixed",
    "ua": "shared",
    "timing": "sync",
    "pivot_hours": 8.0,
    "partition": False,
    "adaptive": False,
}

_HYDRA_MATH = {"id": "hydra_math", "accounts": 300, "rate": 18.0,
               "mix": {"math": 0.65, "reasoning": 0.35}, "resold_share": 0.35, "pivot_hours": 6.0}
_HYDRA_CODE = {"id": "hydra_code", "accounts": 220, "rate": 16.0,
               "mix": {"code": 0.55, "tool_use": 0.45}, "resold_share": 0.3, "placement": "user",
               "accounts_per_payment": 15, "ip_pool": 60, "pivot_hours": 11.0}
_HYDRA_GRADER = {"id": "hydra_grader", "accounts": 90, "rate": 18.0,
                 "mix": {"grading": 0.8, "reasoning": 0.2}, "resold_share": 0.2, "placement": "system",
                 "accounts_per_payment": 8, "ip_pool": 25, "ip_kinds": "datacenter", "pivot_hours": 4.0}
_HYDRA_SENSITIVE = {"id": "hydra_sensitive", "accounts": 70, "rate": 15.0,
                    "mix": {"sensitive": 0.7, "reasoning": 0.3}, "resold_share": 0.3, "pivot_hours": 15.0,
                    "accounts_per_payment": 7, "ip_pool": 20}
_LOWSLOW = {"id": "adaptive_lowslow", "accounts": 60, "rate": 5.0, "mix": {"math": 0.5, "code": 0.5},
            "resold_share": 0.0, "extraction_share": 0.7, "templates": 0, "accounts_per_payment": 1,
            "created": "spread", "ip": "own", "ua": "varied", "timing": "diurnal", "pivot_hours": 30.0,
            "adaptive": True}
_PARAPHRASE = {"id": "adaptive_paraphrase", "accounts": 120, "rate": 15.0,
               "mix": {"math": 0.4, "reasoning": 0.3, "code": 0.3}, "resold_share": 0.25, "templates": 0,
               "accounts_per_payment": 1, "ip_kinds": "residential", "ip_pool": 150, "ua": "varied",
               "pivot_hours": 9.0, "adaptive": True}
_PARTITION = {"id": "adaptive_partition", "accounts": 150, "rate": 10.0, "mix": {"math": 0.6, "code": 0.4},
              "resold_share": 0.0, "templates": 2, "placement": "user", "accounts_per_payment": 1,
              "created": "spread", "ip": "own", "ua": "varied", "timing": "diurnal", "partition": True,
              "pivot_hours": 20.0, "adaptive": True}
_DIURNAL = {"id": "adaptive_diurnal", "accounts": 100, "rate": 10.0,
            "mix": {"math": 0.4, "reasoning": 0.3, "tool_use": 0.3}, "resold_share": 0.2, "templates": 2,
            "accounts_per_payment": 20, "ip": "own", "ua": "varied", "timing": "diurnal", "pivot_hours": 7.0,
            "adaptive": True}


def _c(base: dict, **over: Any) -> dict:
    out = copy.deepcopy(base)
    out.update(over)
    return out


_BASE: dict[str, Any] = {
    "start": "2026-03-02T00:00:00Z",
    "days": 14,
    "release_day": 6.5,  # the new model is released this many days after start
    "models": {"old": "nova-2", "new": "nova-3", "mini": "nova-2-mini"},
    "reasoning_chars": 700,
    "campuses": 2,
    "enterprise_orgs": 4,
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "demo": _c(_BASE, name="demo", days=7, release_day=3.25, campuses=1, enterprise_orgs=2,
               description="small and fast: every benign persona, two hydra campaigns and two adaptive ones",
               personas={"casual": {"accounts": 1100, "rate": 1.0}, "developer": {"accounts": 300, "rate": 5.0},
                         "enterprise": {"accounts": 4, "rate": 300.0}, "eval_runner": {"accounts": 4, "bursts": 2},
                         "campus": {"accounts": 150, "rate": 2.0}, "redteam": {"accounts": 40, "rate": 3.0},
                         "licensed_distiller": {"accounts": 2, "rate": 300.0}},
               campaigns=[_c(_HYDRA_MATH, accounts=80),
                          _c(_HYDRA_CODE, accounts=60),
                          _c(_LOWSLOW, accounts=15),
                          _c(_PARTITION, accounts=30)]),
    "standard": _c(_BASE, name="standard",
                   description="benchmark: all personas, hydra campaigns and every adaptive variant",
                   personas={"casual": {"accounts": 5200, "rate": 1.0}, "developer": {"accounts": 1500, "rate": 5.0},
                             "enterprise": {"accounts": 10, "rate": 500.0},
                             "eval_runner": {"accounts": 12, "bursts": 3},
                             "campus": {"accounts": 500, "rate": 2.0}, "redteam": {"accounts": 120, "rate": 3.0},
                             "licensed_distiller": {"accounts": 3, "rate": 600.0}},
                   campaigns=[_c(_HYDRA_MATH), _c(_HYDRA_CODE), _c(_HYDRA_GRADER), _c(_HYDRA_SENSITIVE),
                              _c(_LOWSLOW), _c(_PARAPHRASE), _c(_PARTITION), _c(_DIURNAL)]),
    "adaptive": _c(_BASE, name="adaptive",
                   description="only adaptive campaigns among all hard negatives (and ordinary users)",
                   personas={"casual": {"accounts": 2500, "rate": 1.0}, "developer": {"accounts": 700, "rate": 5.0},
                             "enterprise": {"accounts": 8, "rate": 500.0},
                             "eval_runner": {"accounts": 10, "bursts": 3},
                             "campus": {"accounts": 400, "rate": 2.0}, "redteam": {"accounts": 100, "rate": 3.0},
                             "licensed_distiller": {"accounts": 3, "rate": 600.0}},
                   campaigns=[_c(_LOWSLOW), _c(_PARAPHRASE), _c(_PARTITION), _c(_DIURNAL)]),
    "scale2026": _c(_BASE, name="scale2026", reasoning_chars=200, campuses=8, enterprise_orgs=40,
                    description="2026 scale: a reseller network of 20k+ accounts among 200k+ benign accounts",
                    personas={"casual": {"accounts": 172_000, "rate": 0.45},
                              "developer": {"accounts": 38_000, "rate": 1.5},
                              "enterprise": {"accounts": 120, "rate": 300.0},
                              "eval_runner": {"accounts": 60, "bursts": 3},
                              "campus": {"accounts": 4000, "rate": 1.5}, "redteam": {"accounts": 1500, "rate": 2.0},
                              "licensed_distiller": {"accounts": 6, "rate": 600.0}},
                    campaigns=[_c(_HYDRA_MATH, accounts=9000, rate=6.0, ip_pool=900, accounts_per_payment=25,
                                  burst_size=200),
                               _c(_HYDRA_CODE, accounts=7000, rate=6.0, ip_pool=700, accounts_per_payment=25,
                                  burst_size=200),
                               _c(_HYDRA_GRADER, accounts=2500, rate=6.0, ip_pool=250, burst_size=100),
                               _c(_HYDRA_SENSITIVE, accounts=1500, rate=6.0, ip_pool=150, burst_size=100),
                               _c(_LOWSLOW, accounts=400, rate=4.0), _c(_PARAPHRASE, accounts=600, rate=6.0),
                               _c(_PARTITION, accounts=600, rate=5.0), _c(_DIURNAL, accounts=600, rate=5.0)]),
}


def get_scenario(name_or_cfg: str | dict, scale: float = 1.0) -> dict:
    """A full scenario config: a named one (see :data:`SCENARIOS`) or a dict that may name a ``base``
    scenario and override any key; then account counts are multiplied by ``scale``."""
    if isinstance(name_or_cfg, str):
        if name_or_cfg not in SCENARIOS:
            raise KeyError(f"unknown scenario {name_or_cfg!r}; known: {', '.join(SCENARIOS)}")
        cfg = copy.deepcopy(SCENARIOS[name_or_cfg])
    elif isinstance(name_or_cfg, dict):
        base = name_or_cfg.get("base", "demo")
        if base not in SCENARIOS:
            raise KeyError(f"unknown base scenario {base!r}; known: {', '.join(SCENARIOS)}")
        cfg = copy.deepcopy(SCENARIOS[base])
        for k, v in name_or_cfg.items():
            if k == "personas":
                for p, pv in v.items():
                    if p not in PERSONAS:
                        raise ValueError(f"personas: unknown persona {p!r}; known: {', '.join(PERSONAS)}")
                    cfg["personas"].setdefault(p, {}).update(pv)
            elif k != "base":
                cfg[k] = copy.deepcopy(v)
        cfg.setdefault("name", "custom")
    else:
        raise TypeError("scenario must be a name or a dict")
    if not (scale > 0):
        raise ValueError(f"scale must be positive, got {scale}")
    cfg["scale"] = scale
    for p in cfg["personas"].values():
        p["accounts"] = max(1, int(round(p.get("accounts", 1) * scale)))
    camps = []
    seen = set()
    for i, c in enumerate(cfg.get("campaigns", [])):
        if "id" not in c:
            raise ValueError(f"campaigns[{i}]: missing 'id'")
        if c["id"] in seen or c["id"] in PERSONAS:
            raise ValueError(f"campaigns[{i}].id: duplicate or reserved id {c['id']!r}")
        seen.add(c["id"])
        unknown = set(c) - set(CAMPAIGN_DEFAULTS) - {"id"}
        if unknown:
            raise ValueError(f"campaigns[{i}] ({c['id']}): unknown keys {sorted(unknown)}")
        full = copy.deepcopy(CAMPAIGN_DEFAULTS)
        full.update(copy.deepcopy(c))
        full["accounts"] = max(1, int(round(full["accounts"] * scale)))
        camps.append(full)
    cfg["campaigns"] = camps
    return cfg
