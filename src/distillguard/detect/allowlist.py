"""Allowlists: licensed distillation customers and eval partners are scored and reported, never flagged.

YAML::

    accounts:
      - {id: acct-42, reason: licensed distillation customer}
    orgs:
      - {id: org-evals, reason: eval partner}

(``accounts``/``orgs`` may also map id -> reason.) CSV with header ``kind,id,reason`` (kind ``account`` or
``org``) or ``id,reason`` (accounts). Bad entries raise :class:`AllowlistError` naming file, line and field.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["Allowlist", "AllowlistError"]


class AllowlistError(ValueError):
    """An allowlist that cannot be read; the message names the file, line (when known) and field."""


@dataclass
class Allowlist:
    accounts: dict[str, str] = field(default_factory=dict)
    orgs: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.accounts or self.orgs)

    def reason(self, account_id: str, org_id: str | None = None) -> str | None:
        if account_id in self.accounts:
            return self.accounts[account_id]
        if org_id is not None and org_id in self.orgs:
            return self.orgs[org_id]
        return None

    def mask(self, accounts: Sequence[str], orgs: Sequence[str | None]) -> np.ndarray:
        return np.array([self.reason(a, o) is not None for a, o in zip(accounts, orgs)], dtype=bool)

    @classmethod
    def load(cls, path: str | Path) -> "Allowlist":
        p = Path(path)
        if not p.exists():
            raise AllowlistError(f"{p}: allowlist file not found")
        if p.suffix.lower() in (".yaml", ".yml"):
            return cls._load_yaml(p)
        if p.suffix.lower() == ".csv":
            return cls._load_csv(p)
        raise AllowlistError(f"{p}: allowlist must be .yaml, .yml or .csv")

    @classmethod
    def _load_yaml(cls, p: Path) -> "Allowlist":
        import yaml

        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f", line {mark.line + 1}" if mark is not None else ""
            raise AllowlistError(f"{p}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        except UnicodeDecodeError:
            raise AllowlistError(f"{p}: not UTF-8 text") from None
        if not isinstance(doc, dict):
            raise AllowlistError(f"{p}: expected a mapping with 'accounts' and/or 'orgs'")
        unknown = set(doc) - {"accounts", "orgs"}
        if unknown:
            raise AllowlistError(f"{p}: unknown key {sorted(unknown)[0]!r} (expected 'accounts' or 'orgs')")
        out = cls()
        for key, target in (("accounts", out.accounts), ("orgs", out.orgs)):
            entries = doc.get(key) or []
            if isinstance(entries, dict):
                entries = [{"id": k, "reason": v} for k, v in entries.items()]
            if not isinstance(entries, list):
                raise AllowlistError(f"{p}: {key}: expected a list of {{id, reason}} entries")
            for i, e in enumerate(entries):
                where = f"{p}: {key}[{i}]"
                if isinstance(e, (str, int)):
                    e = {"id": e}
                if not isinstance(e, dict) or e.get("id") in (None, ""):
                    raise AllowlistError(f"{where}.id: missing")
                reason = e.get("reason") or "allowlisted"
                if not isinstance(reason, str):
                    raise AllowlistError(f"{where}.reason: expected text")
                target[str(e["id"])] = reason
        return out

    @classmethod
    def _load_csv(cls, p: Path) -> "Allowlist":
        out = cls()
        try:
            with open(p, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except UnicodeDecodeError:
            raise AllowlistError(f"{p}: not UTF-8 text") from None
        if not rows:
            return out
        header = [h.strip().lower() for h in rows[0]]
        if "id" not in header:
            raise AllowlistError(f"{p}, line 1: header must have an 'id' column (and optional 'kind', 'reason')")
        ix = {h: header.index(h) for h in ("id", "kind", "reason") if h in header}
        for n, row in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) < len(header):
                raise AllowlistError(f"{p}, line {n}: expected {len(header)} fields, got {len(row)}")
            ident = row[ix["id"]].strip()
            if not ident:
                raise AllowlistError(f"{p}, line {n}, field id: empty")
            kind = row[ix["kind"]].strip().lower() if "kind" in ix else "account"
            reason = (row[ix["reason"]].strip() if "reason" in ix else "") or "allowlisted"
            if kind not in ("account", "org"):
                raise AllowlistError(f"{p}, line {n}, field kind: {kind!r} is not 'account' or 'org'")
            (out.accounts if kind == "account" else out.orgs)[ident] = reason
        return out
