"""Rejected input records: where they go, how they are counted, and the strict-mode error.

Every record a reader cannot turn into an event ends here with its source path, line number (or row / span
index), the field at fault, a reason, and the raw record kept in full. Raw bytes that are not UTF-8 are
kept losslessly as base64 under ``raw_b64`` (``raw`` is then null), so nothing is silently lost.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["InputError", "Quarantine", "Reject", "ReadSummary", "reason_kind"]

#: Raw records longer than this are kept only up to this many bytes (``raw_truncated`` is then true), so a
#: pathological multi-gigabyte line cannot exhaust memory. Normal oversized prompts (10 MB) are kept whole.
MAX_RAW_BYTES = 64 * 1024 * 1024


class InputError(Exception):
    """Input that cannot be read: a missing/unreadable file, or a bad record under ``strict=True``.

    ``path``, ``line`` and ``field`` say where; the CLI maps this to exit code 3.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason


def reason_kind(field: str, reason: str) -> str:
    """A short category for a reject reason, used for the per-reason counts."""
    r = reason.lower()
    if r.startswith("invalid utf-8") or "utf-8" in r and "not valid" in r:
        return "invalid_utf8"
    if r.startswith("truncated"):
        return "truncated_record"
    if r.startswith("invalid json"):
        return "invalid_json"
    if "-byte limit" in r or r.startswith("record is"):
        return "too_large"
    if r.startswith("missing"):
        return "missing_field"
    if r.startswith("expected") or " got " in r:
        return "wrong_type"
    return "invalid_value"


@dataclass
class Reject:
    source: str
    line: int | None
    field: str
    reason: str
    kind: str
    raw: Any = None  # the raw record: str (decoded text), bytes, or an already-parsed object

    def to_json(self) -> dict:
        out: dict[str, Any] = {"source": self.source, "line": self.line, "field": self.field,
                               "reason": self.reason, "kind": self.kind}
        raw = self.raw
        truncated = False
        if isinstance(raw, (bytes, bytearray, memoryview)):
            raw = bytes(raw)
            if len(raw) > MAX_RAW_BYTES:
                raw, truncated = raw[:MAX_RAW_BYTES], True
            try:
                out["raw"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                out["raw"] = None
                out["raw_b64"] = base64.b64encode(raw).decode("ascii")
        elif isinstance(raw, str):
            try:
                raw.encode("utf-8")
                out["raw"] = raw
            except UnicodeEncodeError:  # lone surrogates (e.g. from surrogateescape): keep the bytes
                out["raw"] = None
                out["raw_b64"] = base64.b64encode(raw.encode("utf-8", "surrogateescape")).decode("ascii")
        elif raw is not None:
            out["raw"] = raw  # a parsed record (dict / list) or a CSV row
        else:
            out["raw"] = None
        if truncated:
            out["raw_truncated"] = True
        return out


class Quarantine:
    """Collects rejected records.

    With ``path`` each reject is appended to that JSONL file as it comes (opened lazily, so no file is
    created when nothing is rejected); without it rejects are kept in :attr:`records`. Either way
    :attr:`count` and :attr:`by_reason` count them.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, keep: bool | None = None):
        self.path = Path(path) if path is not None else None
        self.keep = (path is None) if keep is None else keep
        self.records: list[Reject] = []
        self.by_reason: Counter[str] = Counter()
        self.count = 0
        self._fh = None

    def add(self, source: str, line: int | None, field: str, reason: str, raw: Any = None) -> Reject:
        rej = Reject(str(source), line, field, reason, reason_kind(field, reason), raw)
        self.count += 1
        self.by_reason[rej.kind] += 1
        if self.path is not None:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab")
            self._fh.write(_dump_line(rej))
        if self.keep:
            self.records.append(rej)
        return rej

    def write(self, path: str | os.PathLike) -> Path:
        """Write the kept records to ``path`` as JSONL (for a quarantine held in memory)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as fh:
            for rej in self.records:
                fh.write(_dump_line(rej))
        return p

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "Quarantine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count


def _dump_line(rej: Reject) -> bytes:
    doc = rej.to_json()
    try:
        return orjson.dumps(doc, default=_json_default) + b"\n"
    except (orjson.JSONEncodeError, TypeError):
        # a parsed raw record holding text that is not valid Unicode (lone surrogates): keep it losslessly
        # as ASCII-escaped JSON text, base64-encoded
        import json

        raw = doc.pop("raw", None)
        doc["raw"] = None
        doc["raw_b64"] = base64.b64encode(json.dumps(raw, default=str, ensure_ascii=True).encode()).decode()
        doc["raw_encoding"] = "json-ascii"
        return orjson.dumps(doc, default=_json_default) + b"\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(obj)).decode("ascii")}
    return str(obj)


@dataclass
class ReadSummary:
    """Counts for one read: records seen, events produced, rejects by reason, per file."""

    records: int = 0
    ingested: int = 0
    rejected: int = 0
    skipped: int = 0  # OTel spans without gen_ai.* attributes: not request events
    by_reason: Counter = field(default_factory=Counter)
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    def file(self, path: str) -> dict[str, int]:
        return self.files.setdefault(path, {"records": 0, "ingested": 0, "rejected": 0})

    def as_dict(self) -> dict:
        return {"records": self.records, "ingested": self.ingested, "rejected": self.rejected,
                "skipped": self.skipped, "by_reason": dict(self.by_reason), "files": self.files}
