"""Online account state and the decision audit log, in SQLite (default) or Redis.

Per account the gateway keeps exponentially decayed counters (requests in the last minute and hour,
requests that demand hidden reasoning, per-template counts for the 32 most used templates), the campaign
risk pushed from the last batch scan, and an optional operator override. Counters decay continuously, so
"rate_1m" is the number of requests weighted by ``exp(-age / 60 s)``.

:class:`SQLiteState` serves one gateway process: reads hit an in-memory cache and writes go to SQLite from a
background thread in small transactions (every ``flush_interval_s`` and on :meth:`close`), so state survives a
restart. :class:`RedisState` shares state between gateway processes; each account is one JSON value.

Audit rows (one per decision, see :data:`AUDIT_COLUMNS`) go to the ``audit`` table of the same store;
:func:`read_audit` returns them as an Arrow table for the batch scan.
"""

from __future__ import annotations

import math
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import orjson
import pyarrow as pa

__all__ = [
    "AccountState",
    "StateStore",
    "SQLiteState",
    "RedisState",
    "StateError",
    "AUDIT_COLUMNS",
    "AUDIT_SCHEMA",
    "read_audit",
    "open_state",
    "copy_audit_to_store",
]

MAX_TEMPLATES = 32
TAU_1M = 60.0
TAU_1H = 3600.0

#: Columns of one audit row, in order (see docs/gateway.md).
AUDIT_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("path", pa.string()),
    pa.field("model", pa.string()),
    pa.field("rule", pa.string()),
    pa.field("action", pa.string()),
    pa.field("enforced", pa.bool_()),
    pa.field("reason", pa.string()),
    pa.field("status_code", pa.int32()),
    pa.field("upstream_status", pa.int32()),
    pa.field("attempts", pa.int32()),
    pa.field("latency_ms", pa.float64()),
    pa.field("scores", pa.string()),  # JSON object of every policy input for this request
    pa.field("error", pa.string()),
])
AUDIT_COLUMNS = tuple(AUDIT_SCHEMA.names)


class StateError(RuntimeError):
    """The state store failed (the gateway then follows ``fail_mode.store``)."""


def _decay(value: float, last: float, now: float, tau: float) -> float:
    dt = now - last
    return value * math.exp(-dt / tau) if dt > 0 else value


@dataclass
class AccountState:
    account_id: str
    last_ts: float = 0.0
    rate_1m: float = 0.0
    rate_1h: float = 0.0
    extract_1h: float = 0.0
    templates: dict[str, float] = field(default_factory=dict)  # template_id -> decayed count (tau 1 h)
    requests_total: int = 0
    extraction_total: int = 0
    campaign_risk: float = 0.0
    campaign_id: str | None = None
    flagged: bool = False
    override: dict | None = None  # {"action", "reason", "until" (epoch s or None), "set_at"}
    tier: str | None = None

    # ------------------------------------------------------------------ online update
    def observe(self, now: float, extraction: float, template_id: str | None) -> None:
        """Fold one request in. ``extraction`` is the request's extraction score in [0, 1]."""
        last = self.last_ts or now
        self.rate_1m = _decay(self.rate_1m, last, now, TAU_1M) + 1.0
        self.rate_1h = _decay(self.rate_1h, last, now, TAU_1H) + 1.0
        hit = 1.0 if extraction >= 0.5 else 0.0
        self.extract_1h = _decay(self.extract_1h, last, now, TAU_1H) + hit
        if now > last:
            f = math.exp(-(now - last) / TAU_1H)
            self.templates = {k: v * f for k, v in self.templates.items() if v * f > 1e-3}
        if template_id:
            self.templates[template_id] = self.templates.get(template_id, 0.0) + 1.0
            if len(self.templates) > MAX_TEMPLATES:
                drop = min(self.templates, key=self.templates.__getitem__)
                if drop != template_id:
                    del self.templates[drop]
        self.requests_total += 1
        self.extraction_total += int(hit)
        self.last_ts = max(self.last_ts, now)

    def features(self, now: float, template_id: str | None = None) -> dict[str, float]:
        """Decayed features as of ``now`` (without folding a new request in)."""
        last = self.last_ts or now
        r1m = _decay(self.rate_1m, last, now, TAU_1M)
        r1h = _decay(self.rate_1h, last, now, TAU_1H)
        ext = _decay(self.extract_1h, last, now, TAU_1H)
        f = math.exp(-max(0.0, now - last) / TAU_1H)
        total_t = sum(self.templates.values()) * f
        top = max(self.templates.values(), default=0.0) * f
        this = self.templates.get(template_id, 0.0) * f if template_id else 0.0
        share = ext / r1h if r1h > 0 else 0.0
        top_share = top / r1h if r1h > 0 else 0.0
        online = _online_risk(share, top_share, r1m, self.requests_total)
        override = self.active_override(now)
        return {
            "rate_1m": r1m,
            "rate_1h": r1h,
            "extraction_share": min(1.0, share),
            "template_share": min(1.0, this / r1h) if r1h > 0 else 0.0,
            "top_template_share": min(1.0, top_share),
            "distinct_templates": float(sum(1 for v in self.templates.values() if v * f >= 0.5)),
            "requests_total": float(self.requests_total),
            "campaign_risk": self.campaign_risk,
            "online_risk": online,
            "account_risk": max(self.campaign_risk, online),
            "_template_mass": total_t,
            "_override": override["action"] if override else None,
        }

    def active_override(self, now: float) -> dict | None:
        o = self.override
        if not o:
            return None
        until = o.get("until")
        if until is not None and until <= now:
            return None
        return o

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, data: bytes | str) -> "AccountState":
        d = orjson.loads(data)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _online_risk(extraction_share: float, top_template_share: float, rate_1m: float, total: int) -> float:
    """A bounded 0..1 blend used as a policy input; it needs volume before it rises (no cold-start flags)."""
    volume = min(1.0, total / 50.0)
    burst = min(1.0, rate_1m / 300.0)
    raw = 0.6 * extraction_share * (0.5 + 0.5 * top_template_share) + 0.4 * extraction_share * burst
    return round(min(1.0, raw * volume), 4)


class StateStore:
    """Interface of an online state store."""

    def get(self, account_id: str) -> AccountState:  # pragma: no cover - interface
        raise NotImplementedError

    def put(self, state: AccountState) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def update(self, account_id: str, now: float, extraction: float, template_id: str | None) -> AccountState:
        st = self.get(account_id)
        st.observe(now, extraction, template_id)
        self.put(st)
        return st

    def set_campaign_risk(self, rows: Iterable[dict]) -> int:
        n = 0
        for r in rows:
            st = self.get(r["account_id"])
            st.campaign_risk = float(r.get("score") or 0.0)
            st.flagged = bool(r.get("flagged"))
            st.campaign_id = r.get("campaign_id") or None
            self.put(st)
            n += 1
        return n

    def set_override(self, account_id: str, override: dict | None, tier: str | None = None) -> AccountState:
        st = self.get(account_id)
        st.override = override
        if tier is not None:
            st.tier = tier or None
        self.put(st)
        return st

    def append_audit(self, rows: list[dict]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def audit_rows(self, limit: int | None = None) -> list[dict]:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_DDL = """
CREATE TABLE IF NOT EXISTS account_state (account_id TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
  request_id TEXT NOT NULL, timestamp REAL NOT NULL, account_id TEXT NOT NULL, path TEXT, model TEXT,
  rule TEXT, action TEXT, enforced INTEGER, reason TEXT, status_code INTEGER, upstream_status INTEGER,
  attempts INTEGER, latency_ms REAL, scores TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS audit_account ON audit(account_id, timestamp);
"""


class SQLiteState(StateStore):
    """SQLite-backed state for one gateway process (WAL mode, write-behind from a background thread)."""

    def __init__(self, path: str | Path, flush_interval_s: float = 0.2):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_DDL)
        self._db_lock = threading.Lock()
        self._cache: dict[str, AccountState] = {}
        self._dirty: set[str] = set()
        self._audit_q: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._interval = flush_interval_s
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._run, name="distillguard-state-writer", daemon=True)
        self._writer.start()
        self.broken: str | None = None  # set by tests/ops to simulate an outage

    def get(self, account_id: str) -> AccountState:
        if self.broken:
            raise StateError(self.broken)
        st = self._cache.get(account_id)
        if st is not None:
            return st
        with self._db_lock:
            row = self._conn.execute("SELECT state FROM account_state WHERE account_id = ?",
                                     (account_id,)).fetchone()
        st = AccountState.from_json(row[0]) if row else AccountState(account_id)
        self._cache[account_id] = st
        return st

    def put(self, state: AccountState) -> None:
        if self.broken:
            raise StateError(self.broken)
        with self._lock:
            self._cache[state.account_id] = state
            self._dirty.add(state.account_id)

    def append_audit(self, rows: list[dict]) -> None:
        if self.broken:
            raise StateError(self.broken)
        for r in rows:
            self._audit_q.put(r)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._flush_once()
        self._flush_once()

    def _flush_once(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            states = [(a, self._cache[a].to_json()) for a in dirty if a in self._cache]
        audit = []
        while True:
            try:
                audit.append(self._audit_q.get_nowait())
            except queue.Empty:
                break
        if not states and not audit:
            return
        with self._db_lock:
            self._conn.execute("BEGIN")
            if states:
                self._conn.executemany(
                    "INSERT INTO account_state(account_id, state) VALUES (?, ?) "
                    "ON CONFLICT(account_id) DO UPDATE SET state = excluded.state", states)
            if audit:
                self._conn.executemany(
                    f"INSERT INTO audit({', '.join(AUDIT_COLUMNS)}) VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})",
                    [tuple(r.get(c) for c in AUDIT_COLUMNS) for r in audit])
            self._conn.execute("COMMIT")

    def flush(self) -> None:
        self._flush_once()

    def audit_rows(self, limit: int | None = None) -> list[dict]:
        """Audit rows in insertion order; with ``limit``, the last ``limit`` rows."""
        self.flush()
        sql = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit ORDER BY rowid"
        params: tuple = ()
        if limit is not None:
            sql = (f"SELECT {', '.join(AUDIT_COLUMNS)} FROM "
                   "(SELECT rowid AS r, * FROM audit ORDER BY rowid DESC LIMIT ?) ORDER BY r")
            params = (max(0, int(limit)),)
        with self._db_lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [dict(zip(AUDIT_COLUMNS, r)) for r in rows]

    def close(self) -> None:
        if self.path == ":memory:":  # nothing outlives the process; keep it readable after shutdown
            self._flush_once()
            return
        if self._stop.is_set():
            return
        self._stop.set()
        self._writer.join(timeout=10)
        with self._db_lock:
            self._conn.close()


class RedisState(StateStore):
    """State shared by several gateway processes through Redis (``redis://`` URL or a client object).

    Each account is the JSON value ``{prefix}acct:{account_id}``; audit rows are appended to the list
    ``{prefix}audit``. Concurrent updates of one account from two processes are last-writer-wins.
    """

    def __init__(self, url_or_client: Any, prefix: str = "distillguard:"):
        if isinstance(url_or_client, str):
            import redis

            self._r = redis.Redis.from_url(url_or_client, socket_timeout=1.0, socket_connect_timeout=1.0)
        else:
            self._r = url_or_client
        self.prefix = prefix

    def _wrap(self, fn, *a):
        try:
            return fn(*a)
        except Exception as exc:  # redis.ConnectionError, TimeoutError, ...
            raise StateError(f"redis: {type(exc).__name__}: {exc}") from exc

    def get(self, account_id: str) -> AccountState:
        raw = self._wrap(self._r.get, f"{self.prefix}acct:{account_id}")
        return AccountState.from_json(raw) if raw else AccountState(account_id)

    def put(self, state: AccountState) -> None:
        self._wrap(self._r.set, f"{self.prefix}acct:{state.account_id}", state.to_json())

    def append_audit(self, rows: list[dict]) -> None:
        if rows:
            self._wrap(self._r.rpush, f"{self.prefix}audit", *[orjson.dumps(r) for r in rows])

    def audit_rows(self, limit: int | None = None) -> list[dict]:
        """Audit rows in insertion order; with ``limit``, the last ``limit`` rows."""
        if limit is not None and int(limit) <= 0:
            return []
        start = 0 if limit is None else -int(limit)
        return [orjson.loads(x) for x in self._wrap(self._r.lrange, f"{self.prefix}audit", start, -1)]


def open_state(spec: str | None) -> StateStore:
    """``redis://...`` or ``rediss://...`` gives :class:`RedisState`; anything else is a SQLite path."""
    if spec and spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisState(spec)
    return SQLiteState(spec or "distillguard-gateway.sqlite")


def read_audit(path_or_store: str | Path | StateStore) -> pa.Table:
    """Audit decisions as an Arrow table of :data:`AUDIT_SCHEMA` (for the batch scan)."""
    if isinstance(path_or_store, StateStore):
        rows = path_or_store.audit_rows()
    else:
        p = Path(path_or_store)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such gateway state file")
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            rows = [dict(zip(AUDIT_COLUMNS, r)) for r in
                    conn.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit ORDER BY rowid")]
        finally:
            conn.close()
    from datetime import datetime, timezone

    cols: dict[str, list] = {c: [] for c in AUDIT_COLUMNS}
    for r in rows:
        for c in AUDIT_COLUMNS:
            v = r.get(c)
            if c == "timestamp":
                v = datetime.fromtimestamp(float(v), tz=timezone.utc)
            elif c == "enforced" and v is not None:
                v = bool(v)
            cols[c].append(v)
    return pa.table(cols, schema=AUDIT_SCHEMA)


def now_s() -> float:
    return time.time()


def copy_audit_to_store(source: str | Path | StateStore, store: Any) -> int:
    """Append the gateway's audit rows newer than the store's latest to a :class:`distillguard.store.Store`
    (``ts, request_id, account_id, rule, action, scores``); returns the number of rows appended. The gateway keeps
    its own audit (SQLite or Redis) because DuckDB allows one writer; the batch side copies it with this."""
    table = read_audit(source)
    existing = store.audit_table()
    if existing.num_rows:
        import pyarrow.compute as pc

        latest = pc.max(existing.column("ts")).as_py()
        table = table.filter(pc.greater(table.column("timestamp"), pa.scalar(latest, AUDIT_SCHEMA.field("timestamp").type)))
    rows = [{"ts": r["timestamp"], "request_id": r["request_id"], "account_id": r["account_id"], "rule": r["rule"],
             "action": r["action"], "scores": r["scores"]} for r in table.to_pylist()]
    return store.append_audit(rows) if rows else 0
