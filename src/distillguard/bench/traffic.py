"""Loading labelled traffic for the benchmark: a simulator output folder (events.jsonl, labels.csv,
scenario.json), or a fresh simulation through :func:`distillguard.sim.simulate`."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

__all__ = ["Traffic", "load_traffic", "simulate_traffic", "read_events_jsonl", "ATTACK_LABELS"]

#: labels.csv ``label`` values that mark an attack (harvesting) account; anything else is benign
ATTACK_LABELS = frozenset({"attack", "attacker", "malicious", "distill", "distillation", "harvest",
                           "harvester", "campaign", "1", "true", "yes", "positive"})


@dataclass
class Traffic:
    """Events sorted by time plus the ground truth the metrics need."""

    events: pa.Table
    accounts: list[str]  # every labelled account, sorted
    is_attack: np.ndarray  # bool per account
    groups: list[str]  # group (persona) per account
    campaign_of: dict[str, str] = field(default_factory=dict)  # attack account -> campaign id
    allowlist: frozenset = frozenset()
    hard_negatives: frozenset = frozenset()  # benign groups the scenario marks as hard negatives
    scenario: dict = field(default_factory=dict)
    path: Path | None = None

    def benign_events(self) -> pa.Table:
        """Events of benign accounts only (for fitting on a baseline seed)."""
        import pyarrow.compute as pc

        benign = pa.array([a for a, atk in zip(self.accounts, self.is_attack) if not atk], pa.string())
        return self.events.filter(pc.is_in(self.events.column("account_id"), value_set=benign))


def read_events_jsonl(path: Path) -> pa.Table:
    """Read events through :func:`distillguard.io.read_events` when it exists, else line by line through
    :func:`distillguard.schema.normalize`. A bad record raises ValueError naming file, line and field."""
    try:
        from distillguard.io import read_events  # type: ignore[attr-defined]
    except ImportError:
        read_events = None
    from distillguard.schema import EVENT_SCHEMA, RecordError, normalize

    if read_events is not None:
        try:
            batches = list(read_events(path, strict=True))
        except (OSError, ValueError, RecordError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        except Exception as exc:  # the reader's InputError: keep its message (file, line, field)
            if type(exc).__name__ != "InputError":
                raise
            raise ValueError(str(exc)) from None
        return pa.Table.from_batches(batches, schema=EVENT_SCHEMA)

    rows = []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
                rows.append(normalize(rec, source=f"{path}:{lineno}"))
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            except RecordError as exc:
                raise ValueError(f"{path}:{lineno}: field {exc.field}: {exc.reason}") from None
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


def _campaigns_from_scenario(scenario: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    camps = scenario.get("campaigns") or []
    if isinstance(camps, dict):
        camps = [dict(v, campaign_id=k) if isinstance(v, dict) else {"campaign_id": k, "accounts": v}
                 for k, v in camps.items()]
    for i, c in enumerate(camps):
        if not isinstance(c, dict):
            continue
        cid = str(c.get("campaign_id") or c.get("id") or c.get("name") or f"campaign-{i}")
        for a in c.get("accounts") or c.get("account_ids") or []:
            out[str(a)] = cid
    return out


def load_traffic(folder: str | os.PathLike) -> Traffic:
    """Read a simulator output folder. ``labels.csv`` needs ``account_id,label,group`` (an optional
    ``campaign_id`` column names each attack account's campaign; otherwise ``scenario.json``'s
    ``campaigns[].accounts``, otherwise the attack account's group is its campaign)."""
    folder = Path(folder)
    ev_path = folder / "events.jsonl"
    lab_path = folder / "labels.csv"
    for p in (ev_path, lab_path):
        if not p.is_file():
            raise FileNotFoundError(f"benchmark traffic: {p} not found")
    scenario = {}
    if (folder / "scenario.json").is_file():
        try:
            scenario = orjson.loads((folder / "scenario.json").read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{folder / 'scenario.json'}: not valid JSON ({exc})") from None
    labels: dict[str, tuple[bool, str, str]] = {}
    with open(lab_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"account_id", "label", "group"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{lab_path}:1: header lacks field(s) {', '.join(sorted(missing))}")
        for lineno, row in enumerate(reader, 2):
            acc = (row.get("account_id") or "").strip()
            if not acc:
                raise ValueError(f"{lab_path}:{lineno}: field account_id: empty")
            lab = (row.get("label") or "").strip().lower()
            if not lab:
                raise ValueError(f"{lab_path}:{lineno}: field label: empty")
            labels[acc] = (lab in ATTACK_LABELS, (row.get("group") or "").strip() or lab,
                           (row.get("campaign_id") or "").strip())
    events = read_events_jsonl(ev_path)
    events = events.sort_by([("timestamp", "ascending")])
    seen = set(events.column("account_id").to_pylist())
    unlabelled = seen - set(labels)
    if unlabelled:
        raise ValueError(f"{lab_path}: {len(unlabelled)} account(s) in events.jsonl have no label, "
                         f"e.g. {sorted(unlabelled)[0]!r}")
    accounts = sorted(labels)
    is_attack = np.array([labels[a][0] for a in accounts], dtype=bool)
    groups = [labels[a][1] for a in accounts]
    from_scn = _campaigns_from_scenario(scenario)
    campaign_of = {}
    for a, atk in zip(accounts, is_attack):
        if atk:
            campaign_of[a] = labels[a][2] or from_scn.get(a) or labels[a][1]
    allow = scenario.get("allowlist") or []
    if isinstance(allow, dict):
        allow = allow.get("accounts") or []
    sgroups = scenario.get("groups") if isinstance(scenario.get("groups"), dict) else {}
    hard = frozenset(str(g) for g, v in sgroups.items() if isinstance(v, dict) and v.get("hard_negative"))
    return Traffic(events=events, accounts=accounts, is_attack=is_attack, groups=groups,
                   campaign_of=campaign_of, allowlist=frozenset(str(a) for a in allow), hard_negatives=hard,
                   scenario=scenario, path=folder)


def simulate_traffic(out_dir: str | os.PathLike, scenario: str, seed: int, corpora=None,
                     scale: float = 1.0) -> Traffic:
    """Run the simulator into ``out_dir`` and load the result."""
    try:
        from distillguard.sim import simulate  # type: ignore[attr-defined]
    except ImportError as exc:
        raise RuntimeError("the simulator (distillguard.sim.simulate) is not available; "
                           "give --traffic DIR with events.jsonl and labels.csv instead") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = simulate(out_dir, scenario, seed, corpora, scale)
    folder = Path(getattr(res, "out_dir", None) or getattr(res, "path", None) or out_dir)
    return load_traffic(folder)
