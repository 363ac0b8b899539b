"""Reading the report's inputs: findings (accounts.csv, campaigns.json) and optional tables.

Everything here is tolerant of missing optional fields and strict about malformed ones: a bad value raises
:class:`ReportInputError` naming the file, the line (or JSON path) and the field.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["ReportInputError", "load_accounts", "load_campaigns", "attach_table", "ACCOUNT_COLUMNS"]

#: Header of accounts.csv (docs/architecture.md).
ACCOUNT_COLUMNS = ("account_id", "score", "flagged", "campaign_id", "reasons")

ACCOUNTS_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("flagged", pa.bool_()),
        pa.field("campaign_id", pa.string()),
        pa.field("reasons", pa.string()),
    ]
)

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


class ReportInputError(ValueError):
    """An input file (or table) the report cannot use; the message names file, line/path and field."""


def _parse_bool(text: str, where: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ReportInputError(f"{where}: field 'flagged': expected true/false, got {text[:40]!r}")


def _parse_score(text: str, where: str) -> float | None:
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReportInputError(f"{where}: field 'score': not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise ReportInputError(f"{where}: field 'score': not a finite number: {text[:40]!r}")
    return value


def _read_accounts_csv(path: Path) -> pa.Table:
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot read accounts file: {exc.strerror or exc}") from None
    cols: dict[str, list] = {c: [] for c in ACCOUNT_COLUMNS}
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ReportInputError(f"{path}:1: empty file, expected header {','.join(ACCOUNT_COLUMNS)}") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ReportInputError(f"{path}:1: unreadable header: {exc}") from None
        header = [h.strip().lstrip("\ufeff") for h in header]
        if "account_id" not in header:
            raise ReportInputError(f"{path}:1: field 'account_id': missing from header {','.join(header)[:200]!r}")
        idx = {c: header.index(c) for c in ACCOUNT_COLUMNS if c in header}
        try:
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                where = f"{path}:{line}"
                if len(row) != len(header):
                    raise ReportInputError(f"{where}: expected {len(header)} fields, got {len(row)}")
                acct = row[idx["account_id"]]
                if not acct:
                    raise ReportInputError(f"{where}: field 'account_id': empty")
                cols["account_id"].append(acct)
                cols["score"].append(_parse_score(row[idx["score"]], where) if "score" in idx else None)
                cols["flagged"].append(_parse_bool(row[idx["flagged"]], where) if "flagged" in idx else False)
                camp = row[idx["campaign_id"]] if "campaign_id" in idx else ""
                cols["campaign_id"].append(camp or None)
                cols["reasons"].append((row[idx["reasons"]] or None) if "reasons" in idx else None)
        except csv.Error as exc:
            raise ReportInputError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ReportInputError(f"{path}:{reader.line_num + 1}: not UTF-8 text: {exc.reason}") from None
    return pa.table(cols, schema=ACCOUNTS_SCHEMA)


def _coerce_accounts_table(table: pa.Table, where: str = "accounts table") -> pa.Table:
    if "account_id" not in table.column_names:
        raise ReportInputError(f"{where}: field 'account_id': missing column")
    n = table.num_rows
    out = {}
    for field in ACCOUNTS_SCHEMA:
        if field.name in table.column_names:
            col = table.column(field.name)
            try:
                out[field.name] = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ReportInputError(f"{where}: field {field.name!r}: cannot read as {field.type}: {exc}") from None
        else:
            default = False if field.name == "flagged" else None
            out[field.name] = pa.array([default] * n, type=field.type)
    return pa.table(out, schema=ACCOUNTS_SCHEMA)


def load_accounts(accounts: pa.Table | str | os.PathLike | None) -> pa.Table:
    """accounts.csv (or a parquet file, or an Arrow table) as an Arrow table of :data:`ACCOUNTS_SCHEMA`."""
    if accounts is None:
        return ACCOUNTS_SCHEMA.empty_table()
    if isinstance(accounts, pa.Table):
        return _coerce_accounts_table(accounts)
    path = Path(accounts)
    if not path.exists():
        raise ReportInputError(f"{path}: accounts file not found")
    if path.suffix == ".parquet":
        try:
            return _coerce_accounts_table(pq.read_table(path), str(path))
        except (OSError, pa.ArrowInvalid) as exc:
            raise ReportInputError(f"{path}: cannot read parquet: {exc}") from None
    return _read_accounts_csv(path)


# --- campaigns.json ----------------------------------------------------------------------------------

_NUMERIC = ("score", "n_accounts", "n_flagged_accounts", "requests", "reasoning_tokens", "output_tokens")


def _check_number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportInputError(f"{where}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ReportInputError(f"{where}: not a finite number")
    return value


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _check_campaign(c: Any, where: str) -> dict:
    if not isinstance(c, dict):
        raise ReportInputError(f"{where}: expected an object, got {type(c).__name__}")
    c = dict(c)
    cid = c.get("campaign_id")
    if cid is None or cid == "":
        raise ReportInputError(f"{where}.campaign_id: missing")
    c["campaign_id"] = _as_str(cid)
    for key in _NUMERIC:
        c[key] = _check_number(c.get(key), f"{where}.{key}")
    c["flagged"] = bool(c.get("flagged", True))
    accts = c.get("accounts")
    if accts is not None:
        if not isinstance(accts, list):
            raise ReportInputError(f"{where}.accounts: expected a list of account ids")
        c["accounts"] = [_as_str(a) for a in accts]
    for key in ("capabilities", "benchmarks"):
        mix = c.get(key)
        if mix is None:
            c[key] = {}
            continue
        if not isinstance(mix, dict):
            raise ReportInputError(f"{where}.{key}: expected an object of name -> share")
        clean = {}
        for name, share in mix.items():
            num = _check_number(share, f"{where}.{key}.{name}")
            if num is not None:
                clean[str(name)] = float(num)
        c[key] = clean
    for key in ("edges", "evidence", "atlas"):
        items = c.get(key)
        if items is None:
            c[key] = []
            continue
        if not isinstance(items, list):
            raise ReportInputError(f"{where}.{key}: expected a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ReportInputError(f"{where}.{key}[{i}]: expected an object, got {type(item).__name__}")
    prompts = c.get("sample_prompts")
    if prompts is None:
        c["sample_prompts"] = []
    elif not isinstance(prompts, list):
        raise ReportInputError(f"{where}.sample_prompts: expected a list of strings")
    else:
        c["sample_prompts"] = [_as_str(p) for p in prompts if p is not None]
    ind = c.get("indicators")
    if ind is not None and not isinstance(ind, dict):
        raise ReportInputError(f"{where}.indicators: expected an object")
    c["indicators"] = ind or {}
    return c


def load_campaigns(campaigns: dict | list | str | os.PathLike | None) -> dict:
    """campaigns.json (a path or the parsed object) checked and normalised; optional fields defaulted."""
    source = "campaigns"
    if campaigns is None:
        doc: Any = {"campaigns": []}
    elif isinstance(campaigns, (dict, list)):
        doc = campaigns
    else:
        path = Path(campaigns)
        source = str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ReportInputError(f"{path}: campaigns file not found") from None
        except OSError as exc:
            raise ReportInputError(f"{path}: cannot read campaigns file: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ReportInputError(f"{path}: not UTF-8 text: {exc.reason}") from None
        except json.JSONDecodeError as exc:
            raise ReportInputError(f"{path}:{exc.lineno}: invalid JSON at column {exc.colno}: {exc.msg}") from None
    if isinstance(doc, list):
        doc = {"campaigns": doc}
    if not isinstance(doc, dict):
        raise ReportInputError(f"{source}: expected a JSON object with a 'campaigns' list")
    items = doc.get("campaigns", [])
    if not isinstance(items, list):
        raise ReportInputError(f"{source}: field 'campaigns': expected a list")
    out = dict(doc)
    out["campaigns"] = [_check_campaign(c, f"{source}: campaigns[{i}]") for i, c in enumerate(items)]
    cal = doc.get("calibration")
    out["calibration"] = cal if isinstance(cal, dict) else {}
    return out


# --- optional tables (events, signals, edges) ----------------------------------------------------------

def attach_table(con: duckdb.DuckDBPyConnection, name: str, source: Any, *, table: str) -> list[str] | None:
    """Make ``source`` visible in ``con`` as view ``name``; return its column names (None when no source).

    ``source``: an Arrow table or record-batch reader, a pandas-free object with ``to_pyarrow()`` (an Ibis
    table), a DuckDB connection holding table ``table``, or a path: a ``.parquet`` file, a folder of parquet
    files, or a DuckDB database file holding table ``table``.
    """
    if source is None:
        return None
    if isinstance(source, pa.RecordBatchReader):
        source = source.read_all()
    if not isinstance(source, (pa.Table, duckdb.DuckDBPyConnection, str, os.PathLike)) and hasattr(
        source, "to_pyarrow"
    ):
        source = source.to_pyarrow()
    if isinstance(source, pa.Table):
        con.register(name, source)
    elif isinstance(source, duckdb.DuckDBPyConnection):
        try:
            data = source.table(table).to_arrow_table()
        except duckdb.Error as exc:
            raise ReportInputError(f"{table} (DuckDB connection): cannot read table {table!r}: {exc}") from None
        con.register(name, data)
    else:
        path = Path(source)
        if not path.exists():
            raise ReportInputError(f"{path}: {table} file not found")
        try:
            if path.is_dir():
                files = sorted(str(p) for p in path.rglob("*.parquet"))
                if not files:
                    raise ReportInputError(f"{path}: no parquet files in {table} folder")
                con.read_parquet(files).create_view(name)
            elif path.suffix == ".parquet":
                con.read_parquet(str(path)).create_view(name)
            elif path.suffix in (".duckdb", ".db", ".ddb"):
                _attach_duckdb_file(con, name, path, table)
            elif table == "events" and path.name.endswith(_LOG_SUFFIXES):
                con.register(name, _read_event_log(path))
            else:
                raise ReportInputError(f"{path}: unsupported {table} format (use .parquet, a parquet folder, .duckdb"
                                       + (", or an event log: .jsonl, .jsonl.gz, .json, .csv)" if table == "events" else ")"))
        except duckdb.Error as exc:
            raise ReportInputError(f"{path}: cannot read {table}: {exc}") from None
    cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
    return cols


def _attach_duckdb_file(con: duckdb.DuckDBPyConnection, name: str, path: Path, table: str) -> None:
    """A DuckDB file's table as view ``name``: attached read-only (nothing loaded up front), or, when this
    process already has the file open (say, the scan still holds it), read through that open database."""
    alias = f"src_{name}"
    quoted = str(path).replace("'", "''")
    try:
        con.execute(f"ATTACH '{quoted}' AS {alias} (READ_ONLY)")
    except duckdb.Error:
        shared = duckdb.connect(str(path))  # the process-wide instance already open for this file
        try:
            con.register(name, shared.table(table).to_arrow_table())
        finally:
            shared.close()
        return
    con.execute(f'CREATE VIEW {name} AS SELECT * FROM {alias}."{table}"')


_LOG_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz", ".csv", ".csv.gz")


def _read_event_log(path: Path) -> pa.Table:
    """An event log file read through :func:`distillguard.io.readers.read_events` (bad records skipped)."""
    from distillguard.io.readers import read_events
    from distillguard.schema import EVENT_SCHEMA

    try:
        batches = list(read_events(path))
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"{path}: cannot read events: {exc}") from None
    return pa.Table.from_batches(batches, schema=EVENT_SCHEMA)
