"""The embedded event store: one DuckDB file (or ``:memory:``) holding ``events``, ``signals`` and ``audit``.

* ``events`` — :data:`~distillguard.schema.EVENT_SCHEMA`, one row per request, unique on ``event_id``
  (re-ingesting a file adds nothing). Text retention (``full`` | ``truncated`` | ``hashed``) applies to
  ``messages``, ``system_text``, ``user_text``, ``response`` and ``reasoning_content``.
* ``signals`` — whatever the optional ``signal_fn(pa.Table) -> pa.Table`` returns for each batch of new
  events, computed on the full text BEFORE retention, so features still work when text is hashed.
* ``audit`` — gateway decisions (``ts, request_id, account_id, rule, action, scores``), appended through
  :meth:`Store.append_audit`.

All values reach SQL as parameters or registered Arrow tables; only column and table names, which are
constants of this module, are part of SQL text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from distillguard._prefetch import prefetch
from distillguard.schema import EVENT_COLUMNS, EVENT_SCHEMA

__all__ = ["Store", "IngestSummary", "RETENTIONS", "TEXT_COLUMNS", "AUDIT_SCHEMA"]

RETENTIONS = ("full", "truncated", "hashed")
#: DuckDB's memory cap while :meth:`Store.ingest` runs (it streams; 1M events peak at about 0.8 GB RSS with it)
INGEST_MEMORY_LIMIT = "256MB"
#: the columns retention applies to
TEXT_COLUMNS = ("messages", "system_text", "user_text", "response", "reasoning_content")

AUDIT_SCHEMA = pa.schema([
    pa.field("ts", pa.timestamp("us", tz="UTC")),
    pa.field("request_id", pa.string()),
    pa.field("account_id", pa.string()),
    pa.field("rule", pa.string()),
    pa.field("action", pa.string()),
    pa.field("scores", pa.string()),  # JSON object text
])

_DUCK_TYPES = {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
               pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ"}


def _ddl(table: str, schema: pa.Schema, key: str | None = None) -> str:
    cols = []
    for f in schema:
        t = _DUCK_TYPES[f.type]
        cols.append(f'"{f.name}" {t}' + ("" if f.nullable else " NOT NULL"))
    return f"CREATE TABLE IF NOT EXISTS {table} (" + ", ".join(cols) + ")"


@dataclass
class IngestSummary:
    batches: int = 0
    rows_in: int = 0  # rows offered
    inserted: int = 0  # new events stored
    duplicates: int = 0  # rows already stored (or repeated within the input)
    signals: int = 0  # signal rows stored
    retention: str = "full"
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"batches": self.batches, "rows_in": self.rows_in, "inserted": self.inserted,
                "duplicates": self.duplicates, "signals": self.signals, "retention": self.retention}


class _SeenIds:
    """The 64-bit hashes of the event ids stored before and during one ingest call, as a few sorted arrays.

    A batch none of whose hashes is here holds no stored id, so it needs no anti-join against the events
    table (whose cost grows with the store); a batch with any hash here (a re-ingest, or a rare hash
    collision) gets the exact anti-join. Memory: 8 bytes per stored event while the call runs."""

    def __init__(self, stored: np.ndarray):
        self.stored = stored
        self.parts: list[np.ndarray] = []  # this call's batches

    def may_hold(self, hashes: np.ndarray) -> bool:
        hashes = np.sort(hashes)  # sorted queries search a large array far faster (memory locality)
        for part in [self.stored, *self.parts]:
            if not len(part):
                continue
            pos = np.searchsorted(part, hashes)
            pos[pos == len(part)] = 0
            if bool(np.any(part[pos] == hashes)):
                return True
        return False

    def add(self, hashes: np.ndarray) -> None:
        self.parts.append(np.sort(hashes))
        if len(self.parts) > 8:  # keep the per-batch check to a few searches (the stored array stays as is)
            self.parts = [np.sort(np.concatenate(self.parts))]


def _unrounded(setting: str) -> str:
    """A value to SET that reads back as ``setting``: DuckDB shows limits rounded down to one decimal
    ("2.7 GiB"), so setting that text again would lower the limit a little each time; half a step up does
    not."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]+)\s*", setting)
    if not m:
        return setting
    return f"{float(m.group(1)) + 0.05:.2f} {m.group(2)}"


def _coalesce(batches: Iterable[pa.RecordBatch | pa.Table], rows: int, nbytes: int) -> Iterator[pa.Table]:
    """``batches`` gathered into tables of at least ``rows`` rows or ``nbytes`` bytes (the last may be
    smaller)."""
    pending: list = []
    n = size = 0
    for batch in batches:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if table.schema != EVENT_SCHEMA:
            table = table.select(list(EVENT_COLUMNS)).cast(EVENT_SCHEMA)
        pending.append(table)
        n += table.num_rows
        size += table.nbytes
        if n >= rows or size >= nbytes:
            yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            pending, n, size = [], 0, 0
    if pending:
        yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]


class Store:
    """A DuckDB-backed store of events, per-request signals and gateway audit rows.

    ``retention``: ``full`` keeps text; ``truncated`` keeps the first ``truncate_chars`` characters;
    ``hashed`` keeps ``sha256:<hex>`` of the text (equal texts still compare equal). The policy is recorded
    in the file's ``meta`` table; reopening a store that holds events with a different policy is an error, so
    one store never mixes policies silently.
    """

    def __init__(self, path: str | os.PathLike = ":memory:", retention: str | None = None,
                 truncate_chars: int = 256, *, read_only: bool = False):
        if retention is not None and retention not in RETENTIONS:
            raise ValueError(f"retention must be one of {', '.join(RETENTIONS)}, got {retention!r}")
        if not isinstance(truncate_chars, int) or truncate_chars < 0:
            raise ValueError("truncate_chars must be a non-negative integer")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(self.path, read_only=read_only)
        self.con.execute("SET TimeZone = 'UTC'")
        if not read_only:
            self._init_tables()
        stored = self._meta("retention")
        if stored is None:
            self.retention = retention or "full"
            self.truncate_chars = truncate_chars
            if not read_only:
                self._set_meta("retention", self.retention)
                self._set_meta("truncate_chars", str(truncate_chars))
        elif (retention is not None and retention != stored and not read_only
              and self.con.execute("SELECT count(*) FROM events").fetchall()[0][0] == 0):
            self.retention = retention  # nothing stored yet: the policy may still change
            self.truncate_chars = truncate_chars
            self._set_meta("retention", retention)
            self._set_meta("truncate_chars", str(truncate_chars))
        else:
            if retention is not None and retention != stored:
                raise ValueError(f"{self.path} was created with retention={stored!r}; "
                                 f"cannot reopen it with retention={retention!r}")
            self.retention = stored
            self.truncate_chars = int(self._meta("truncate_chars") or truncate_chars)

    # ------------------------------------------------------------------ schema

    def _init_tables(self) -> None:
        self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        self.con.execute(_ddl("events", EVENT_SCHEMA))
        self.con.execute(_ddl("audit", AUDIT_SCHEMA))

    def _meta(self, key: str) -> str | None:
        try:
            rows = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        except duckdb.CatalogException:
            return None
        return rows[0][0] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value]).fetchall()

    def has_table(self, name: str) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()
        return bool(rows[0][0])

    # ------------------------------------------------------------------ ingest

    def _retained(self, col: str) -> str:
        """SQL expression for one text column under the retention policy (parameter-free)."""
        if col not in TEXT_COLUMNS:
            return f'"{col}"'
        if self.retention == "full":
            return f'"{col}"'
        if self.retention == "truncated":
            return f'left("{col}", {int(self.truncate_chars)})'
        return f"""CASE WHEN "{col}" IS NULL THEN NULL ELSE 'sha256:' || sha256("{col}") END"""

    def ingest(self, batches: Iterable[pa.RecordBatch | pa.Table],
               signal_fn: Callable[[pa.Table], pa.Table] | None = None,
               progress: Callable[[int], Any] | None = None, *, atomic: bool = False,
               commit_rows: int = 250_000, insert_rows: int = 100_000, insert_bytes: int = 48 << 20,
               commit_bytes: int = 160 << 20,
               read_ahead: int = 4, memory_limit: str | None = INGEST_MEMORY_LIMIT) -> IngestSummary:
        """Store new events from ``batches`` (EVENT_SCHEMA); rows whose ``event_id`` is already stored, or
        repeats an earlier row of the same input, are skipped.

        Work is committed every ``commit_rows`` rows or ``commit_bytes`` bytes (Arrow size) offered, which
        keeps memory flat; if the batches raise, the rows since the last commit are rolled back and the error
        propagates (re-running is safe: ingest is idempotent). ``atomic=True`` makes the whole call one transaction, so a failure (e.g. a
        strict-mode :class:`~distillguard.io.InputError`) stores nothing; DuckDB then holds the uncommitted
        rows in memory until the end.

        ``signal_fn`` gets each batch of NEW events with full text and returns a table keyed by
        ``event_id``; its rows go to ``signals`` (created from the first result's schema).
        ``progress(n)`` is called with the number of rows offered after each batch. Small batches are
        gathered into inserts of about ``insert_rows`` rows or ``insert_bytes`` bytes (DuckDB pays a fixed
        cost per statement), and up to ``read_ahead`` batches are read in a background thread while DuckDB
        inserts (0: no thread). ``memory_limit`` caps DuckDB's memory for the duration of the call (ingest
        streams, so DuckDB needs little; beyond the cap it writes to disk); ``None`` leaves the connection's
        setting alone, as does an in-memory store. Deduplication reads the 64-bit hash of every stored id
        once per call (8 bytes an event, held by Python while the call runs; see :class:`_SeenIds`).
        """
        con = self.con
        previous_limit = None
        if memory_limit is not None and self.path != ":memory:":  # an in-memory store must keep its rows
            previous_limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
            con.execute("SET memory_limit = ?", [str(memory_limit)])
        try:
            return self._ingest(batches, signal_fn, progress, atomic, commit_rows, insert_rows, read_ahead,
                                insert_bytes, commit_bytes)
        finally:
            if previous_limit is not None:
                con.execute("SET memory_limit = ?", [_unrounded(previous_limit)])

    def _ingest(self, batches, signal_fn, progress, atomic: bool, commit_rows: int, insert_rows: int,
                read_ahead: int, insert_bytes: int, commit_bytes: int) -> IngestSummary:
        summary = IngestSummary(retention=self.retention)
        select_cols = ", ".join(self._retained(c) for c in EVENT_COLUMNS)
        quoted = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        con = self.con
        con.execute("BEGIN TRANSACTION")
        since_commit = since_commit_bytes = 0
        seen = _SeenIds(self._stored_id_hashes())
        try:
            rows = insert_rows if atomic else min(insert_rows, commit_rows)
            nbytes = insert_bytes if atomic else min(insert_bytes, commit_bytes)
            for batch in _coalesce(prefetch(batches, read_ahead), rows, nbytes):
                if not atomic and (since_commit >= commit_rows or since_commit_bytes >= commit_bytes):
                    con.execute("COMMIT")
                    con.execute("BEGIN TRANSACTION")
                    since_commit = since_commit_bytes = 0
                table = batch
                summary.batches += 1
                summary.rows_in += table.num_rows
                since_commit += table.num_rows
                since_commit_bytes += table.nbytes
                # repeats inside the batch are rare: pay for the window only when there are some
                ids = table.column("event_id")
                unique = pc.count_distinct(ids).as_py() == table.num_rows
                dedup = "" if unique else " QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY source) = 1"
                con.register("_dg_in", table)
                try:
                    hashes = self._id_hashes("_dg_in")
                    if seen.may_hold(hashes):  # an id may be stored already: the exact anti-join decides
                        new_rows = ("SELECT * FROM _dg_in i WHERE NOT EXISTS "
                                    "(SELECT 1 FROM events e WHERE e.event_id = i.event_id)" + dedup)
                    else:  # no stored id has any of these hashes, so none of these ids is stored
                        new_rows = "SELECT * FROM _dg_in i" + dedup
                    seen.add(hashes)
                    if signal_fn is None:
                        n_new = con.execute(f"INSERT INTO events ({quoted}) SELECT {select_cols} "
                                            f"FROM ({new_rows})").fetchall()[0][0]
                    else:
                        new = con.sql(new_rows).to_arrow_table().cast(EVENT_SCHEMA)
                        n_new = new.num_rows
                        if n_new:
                            summary.signals += self._insert_signals(signal_fn(new))
                            con.register("_dg_new", new)
                            try:
                                con.execute(f"INSERT INTO events ({quoted}) SELECT {select_cols} "
                                            "FROM _dg_new").fetchall()
                            finally:
                                con.unregister("_dg_new")
                finally:
                    con.unregister("_dg_in")
                summary.inserted += n_new
                summary.duplicates += table.num_rows - n_new
                if progress is not None:
                    progress(table.num_rows)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return summary

    def _id_hashes(self, table: str) -> np.ndarray:
        """DuckDB's 64-bit hash of each ``event_id`` of ``table`` (a table or registered Arrow name)."""
        out = self.con.execute(f"SELECT hash(event_id) AS h FROM {table}").fetchnumpy()["h"]
        return np.asarray(out, dtype=np.uint64)

    def _stored_id_hashes(self) -> np.ndarray:
        """Sorted hashes of the stored event ids (one scan of the column per ingest call)."""
        if not self.con.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchall()[0][0]:
            return np.empty(0, np.uint64)
        return np.sort(self._id_hashes("events"))

    def _insert_signals(self, sig: pa.Table | pa.RecordBatch | None) -> int:
        if sig is None:
            return 0
        if isinstance(sig, pa.RecordBatch):
            sig = pa.Table.from_batches([sig])
        if not isinstance(sig, pa.Table):
            raise TypeError(f"signal_fn must return a pyarrow.Table, got {type(sig).__name__}")
        if "event_id" not in sig.column_names:
            raise ValueError("signal_fn's table must have an event_id column")
        if sig.num_rows == 0 and self.has_table("signals"):
            return 0
        self.con.register("_dg_sig", sig)
        try:
            if not self.has_table("signals"):
                self.con.execute("CREATE TABLE signals AS SELECT * FROM _dg_sig LIMIT 0").fetchall()
            cols = ", ".join(f'"{c}"' for c in sig.column_names)
            self.con.execute(
                f"INSERT INTO signals ({cols}) SELECT {cols} FROM _dg_sig s WHERE NOT EXISTS "
                "(SELECT 1 FROM signals t WHERE t.event_id = s.event_id)").fetchall()
        finally:
            self.con.unregister("_dg_sig")
        return sig.num_rows

    # ------------------------------------------------------------------ audit

    def append_audit(self, rows: Iterable[dict] | pa.Table) -> int:
        """Append gateway decisions. Each row: ``ts`` (datetime, RFC 3339 text or epoch seconds; now when
        missing), ``request_id``, ``account_id``, ``rule``, ``action``, ``scores`` (dict or JSON text)."""
        from distillguard.schema import parse_timestamp

        if isinstance(rows, pa.Table):
            rows = rows.to_pylist()
        cols: dict[str, list] = {f.name: [] for f in AUDIT_SCHEMA}
        for i, r in enumerate(rows):
            ts = r.get("ts")
            cols["ts"].append(datetime.now(timezone.utc) if ts is None else parse_timestamp(ts, f"rows[{i}].ts"))
            for k in ("request_id", "account_id", "rule", "action"):
                v = r.get(k)
                cols[k].append(None if v is None else str(v))
            s = r.get("scores")
            cols["scores"].append(s if (s is None or isinstance(s, str))
                                  else orjson.dumps(s, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode())
        table = pa.table(cols, schema=AUDIT_SCHEMA)
        if table.num_rows == 0:
            return 0
        self.con.register("_dg_audit", table)
        try:
            self.con.execute("INSERT INTO audit SELECT * FROM _dg_audit").fetchall()
        finally:
            self.con.unregister("_dg_audit")
        return table.num_rows

    # ------------------------------------------------------------------ read

    def events_table(self, columns: Iterable[str] | None = None) -> pa.Table:
        """All stored events as a pyarrow Table of :data:`EVENT_SCHEMA` (or the chosen columns), in
        timestamp order."""
        cols = list(columns) if columns is not None else list(EVENT_COLUMNS)
        bad = [c for c in cols if c not in EVENT_COLUMNS]
        if bad:
            raise ValueError(f"unknown event columns: {', '.join(bad)}")
        sel = ", ".join(f'"{c}"' for c in cols)
        t = self.con.sql(f"SELECT {sel} FROM events ORDER BY timestamp, event_id").to_arrow_table()
        return t.cast(pa.schema([EVENT_SCHEMA.field(c) for c in cols]))

    def signals_table(self) -> pa.Table | None:
        if not self.has_table("signals"):
            return None
        return self.con.sql("SELECT * FROM signals ORDER BY event_id").to_arrow_table()

    def audit_table(self) -> pa.Table:
        return self.con.sql("SELECT * FROM audit ORDER BY ts").to_arrow_table().cast(AUDIT_SCHEMA)

    def count(self, table: str = "events") -> int:
        if table not in ("events", "signals", "audit"):
            raise ValueError(f"unknown table {table!r}")
        if not self.has_table(table):
            return 0
        return self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
