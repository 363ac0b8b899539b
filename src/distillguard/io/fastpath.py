"""DuckDB fast path for canonical JSONL: DuckDB parses, validates and derives the event columns in SQL.

The file is cut into blocks of whole lines in Python (no object per line: newline offsets are found with
numpy and the block becomes one Arrow string array), and one SQL statement per block parses every line
as JSON, checks it and builds the :data:`~distillguard.schema.EVENT_SCHEMA` columns exactly as
:func:`~distillguard.schema.normalize_values` would. The SQL is deliberately conservative: a line is
accepted only when SQL can decide it *exactly* (common field types and timestamp forms, messages whose
items are ``{role, content}`` objects with text content, no ``tools``, no unknown fields). Every other
line (invalid JSON, anything DuckDB's lenient parser would accept but orjson would not, escapes whose
serialisation could differ, any failed rule) goes through the Python parser unchanged, so rejects keep
their exact file, line, field and reason, and accepted rows are the same values in the same order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.schema import EVENT_COLUMNS, EVENT_SCHEMA, INPUT_FIELDS

__all__ = ["read_canonical_fast", "FAST_BLOCK_BYTES"]

#: bytes of the file handed to one SQL statement
FAST_BLOCK_BYTES = 16 * 1024 * 1024

_STR_FIELDS = ("request_id", "org_id", "api_key_id", "ip", "user_agent", "payment_fingerprint",
               "model", "reasoning_effort", "response", "reasoning_content")
_INT_FIELDS = ("max_tokens", "input_tokens", "output_tokens", "reasoning_tokens", "status_code")
_FIELDS = ("timestamp", "account_id", "messages", "prompt", "asn", "account_created_at", "tools") \
    + _STR_FIELDS + _INT_FIELDS

# Raw-text patterns that send a line to Python: tokens DuckDB's JSON reader accepts and orjson refuses
# (NaN, Infinity, trailing commas), control-character escapes (DuckDB writes \u001A, orjson \u001a) and
# surrogate escapes (lone surrogates are refused by orjson, and pairs are rare enough not to matter).
_GUARD_ESC = r"\\u00[01]|\\u[dD][89a-fA-F]"
_GUARD_COMMA = r",[ \t\r\n]+[\]}]"
_BLANK = r"[ \t\r\n\v\f]*"
_ISO = (r"^(19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
        r"([zZ]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
_BIGINT_MIN = -(2**63)


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ts_expr(t: str, v: str) -> str:
    """A UTC TIMESTAMP from a JSON value ``v`` of type ``t`` when SQL reproduces ``parse_timestamp`` exactly
    (strict RFC 3339 text, positive epoch seconds below 1e11), else NULL."""
    s = v
    d = f"TRY_CAST({v} AS DOUBLE)"
    return f"""CASE
      WHEN {t} = 'VARCHAR' AND regexp_full_match({s}, {_q(_ISO)})
        THEN TRY_CAST(regexp_extract({s}, '^([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9:.]+)', 1) AS TIMESTAMP)
             - to_minutes(coalesce(
                 (CASE WHEN regexp_extract({s}, '([+-])[0-9]{{2}}:[0-9]{{2}}$', 1) = '-' THEN -1 ELSE 1 END)
                 * (TRY_CAST(regexp_extract({s}, '([0-9]{{2}}):[0-9]{{2}}$', 1) AS BIGINT) * 60
                    + TRY_CAST(regexp_extract({s}, '[0-9]{{2}}:([0-9]{{2}})$', 1) AS BIGINT)), 0)::BIGINT
                 * CASE WHEN regexp_matches({s}, '[+-][0-9]{{2}}:[0-9]{{2}}$') THEN 1 ELSE 0 END)
      WHEN {t} IN ('BIGINT', 'UBIGINT') AND TRY_CAST({v} AS BIGINT) BETWEEN 1 AND 99999999999
        THEN make_timestamp(TRY_CAST({v} AS BIGINT) * 1000000)
      WHEN {t} = 'DOUBLE' AND {d} > 0 AND {d} < 1e11
        THEN make_timestamp(trunc({d})::BIGINT * 1000000 + round_even(({d} - trunc({d})) * 1e6, 0)::BIGINT)
    END"""


def _build_sql() -> str:
    """One statement: a guard per line, a handful of JSON parses per accepted line (types of every field,
    the key list, the values as one struct, the types and keys of the message items), then the columns."""
    paths = ", ".join(_q("$." + f) for f in _FIELDS)
    idx = {f: i + 1 for i, f in enumerate(_FIELDS)}
    known = "[" + ", ".join(_q(f) for f in sorted(INPUT_FIELDS)) + "]"
    struct = "{" + ", ".join(f'"{f}": "VARCHAR"' for f in _FIELDS if f not in ("messages", "tools")) \
        + ', "messages": [{"role": "VARCHAR", "content": "VARCHAR"}]}'

    def sv(f):
        return f"s.{f}"

    def t(f):
        return f"coalesce(ty[{idx[f]}], 'NULL')"

    def as_int_text(f):  # str(int) of an integer JSON value, as Python writes it ("-0" is 0)
        return f"TRY_CAST(TRY_CAST({sv(f)} AS HUGEINT) AS VARCHAR)"

    int_ok = " AND ".join(f"coalesce(TRY_CAST({sv(f)} AS BIGINT) > {_BIGINT_MIN}, {sv(f)} IS NULL)"
                          for f in _INT_FIELDS)
    nul = "('NULL'|NULL)"
    allowed = {"timestamp": "(VARCHAR|BIGINT|UBIGINT|DOUBLE)", "account_id": "(VARCHAR|BIGINT|UBIGINT)",
               "messages": f"(ARRAY|{nul})", "prompt": f"(VARCHAR|{nul})", "asn": f"(VARCHAR|BIGINT|UBIGINT|{nul})",
               "account_created_at": f"(VARCHAR|BIGINT|UBIGINT|DOUBLE|{nul})", "tools": nul}
    allowed.update({f: f"(VARCHAR|{nul})" for f in _STR_FIELDS})
    allowed.update({f: f"(BIGINT|UBIGINT|{nul})" for f in _INT_FIELDS})
    # the list of JSON types as text, e.g. "[VARCHAR, UBIGINT, ARRAY, NULL, 'NULL', ...]": one match checks all
    type_pattern = r"\[" + ", ".join(allowed[f] for f in _FIELDS) + r"\]"
    str_cols = ",\n      ".join(f"{sv(f)} AS {f}" for f in _STR_FIELDS)
    int_cols = ",\n      ".join(f"TRY_CAST({sv(f)} AS BIGINT) AS {f}" for f in _INT_FIELDS if f != "status_code")
    g = (f"strlen(line) < 1000000 AND NOT contains(line, 'NaN') AND NOT contains(line, 'Infinity')"
         f" AND NOT contains(line, ',]') AND NOT contains(line, ',}}')"
         f" AND NOT (contains(line, '\\u') AND regexp_matches(line, {_q(_GUARD_ESC)}))"
         f" AND NOT regexp_matches(line, {_q(_GUARD_COMMA)}) AND json_valid(line)")
    return f"""
WITH parsed AS (
  SELECT ln, ty, k, s, mty, rty, cty, mk FROM (
    SELECT ln, line, g,
      CASE WHEN g THEN json_type(line, [{paths}]) END AS ty,
      CASE WHEN g THEN json_keys(line) END AS k,
      CASE WHEN g THEN json_transform(line, {_q(struct)}) END AS s,
      CASE WHEN g THEN json_type(line, '$.messages[*]') END AS mty,
      CASE WHEN g THEN json_type(line, '$.messages[*].role') END AS rty,
      CASE WHEN g THEN json_type(line, '$.messages[*].content') END AS cty,
      CASE WHEN g THEN json_keys(line, '$.messages[*]') END AS mk
    FROM (SELECT ln, line, NOT force AND NOT regexp_full_match(line, {_q(_BLANK)}) AND {g} AS g,
                 NOT force AND regexp_full_match(line, {_q(_BLANK)}) AS blank
          FROM blk)
    WHERE NOT blank
  )
), checked AS (
  SELECT *,
    ty IS NOT NULL AND regexp_full_match(ty::VARCHAR, {_q(type_pattern)})
    AND len(k) = len(list_distinct(k)) AND list_has_all({known}, k)
    AND s.account_id <> ''
    AND (s.messages IS NOT NULL OR s.prompt IS NOT NULL)
    AND (s.messages IS NULL
         OR len(mty) = len(s.messages) AND len(rty) = len(mty) AND len(cty) = len(mty)
            AND (len(mty) = 0 OR list_distinct(mty) = ['OBJECT'] AND list_distinct(rty) = ['VARCHAR']
                 AND list_has_all(['VARCHAR', 'NULL'], cty) AND len(flatten(mk)) = 2 * len(mty)))
    AND {int_ok}
    AND coalesce(TRY_CAST(s.status_code AS BIGINT) BETWEEN 0 AND 999, s.status_code IS NULL)
    AS pre
  FROM parsed
), derived AS (
  SELECT ln, pre,
    CASE WHEN pre THEN {_ts_expr(t("timestamp"), sv("timestamp"))} END AS timestamp,
    CASE WHEN pre AND {t("account_created_at")} <> 'NULL'
         THEN {_ts_expr(t("account_created_at"), sv("account_created_at"))} END AS account_created_at,
    {t("account_created_at")} <> 'NULL' AS has_created,
    CASE WHEN {t("account_id")} = 'VARCHAR' THEN {sv("account_id")} ELSE {as_int_text("account_id")} END
      AS account_id,
    CASE WHEN {t("asn")} = 'VARCHAR' THEN {sv("asn")} WHEN {t("asn")} <> 'NULL' THEN {as_int_text("asn")} END
      AS asn,
    CASE WHEN pre AND {t("messages")} = 'ARRAY' THEN
      '[' || array_to_string(list_transform(s.messages, lambda m:
          '{{"content":' || coalesce(to_json(m.content)::VARCHAR, 'null') || ',"role":' || to_json(m.role)::VARCHAR
          || '}}'), ',') || ']'
    END AS messages,
    CASE WHEN pre AND {t("messages")} = 'ARRAY' THEN list_transform(
      list_filter(s.messages, lambda m: m.role IN ('system', 'developer')), lambda m: coalesce(m.content, ''))
    END AS sys_parts,
    CASE WHEN pre THEN
      CASE WHEN {t("messages")} = 'ARRAY' THEN list_transform(list_filter(s.messages, lambda m: m.role = 'user'),
                                                              lambda m: coalesce(m.content, ''))
           ELSE []::VARCHAR[] END
      || CASE WHEN {t("prompt")} = 'VARCHAR' THEN [s.prompt] ELSE []::VARCHAR[] END
    END AS uparts,
    CASE WHEN {t("messages")} = 'ARRAY' THEN len(s.messages) ELSE 1 END AS n_messages,
    {str_cols},
    {int_cols},
    TRY_CAST({sv("status_code")} AS INTEGER) AS status_code
  FROM checked
)
SELECT ln,
  coalesce(pre AND timestamp IS NOT NULL AND (NOT has_created OR account_created_at IS NOT NULL), false) AS ok,
  CASE WHEN coalesce(request_id, '') = '' THEN
    'h:' || sha256(account_id || chr(31) || coalesce(model, '') || chr(31) || coalesce(messages, '') || chr(31)
                   || array_to_string(uparts, chr(10) || chr(10)) || chr(31)
                   || coalesce(CASE WHEN len(sys_parts) > 0 THEN array_to_string(sys_parts, chr(10) || chr(10)) END, '')
                   || chr(31) || coalesce(response, '') || chr(31) || chr(31) || chr(31)
                   || strftime(timestamp, '%Y-%m-%dT%H:%M:%S')
                   || CASE WHEN epoch_us(timestamp) % 1000000 <> 0
                           THEN '.' || lpad(((epoch_us(timestamp) % 1000000 + 1000000) % 1000000)::VARCHAR, 6, '0')
                           ELSE '' END
                   || '+00:00')[1:32]
    ELSE request_id END AS event_id,
  request_id, timestamp, account_id, org_id, api_key_id, ip, asn, user_agent, payment_fingerprint,
  account_created_at, model, messages,
  CASE WHEN len(sys_parts) > 0 THEN array_to_string(sys_parts, chr(10) || chr(10)) END AS system_text,
  array_to_string(uparts, chr(10) || chr(10)) AS user_text,
  n_messages::INTEGER AS n_messages, len(uparts)::INTEGER AS n_user_turns,
  NULL::VARCHAR AS tools, 0::INTEGER AS n_tools,
  max_tokens, reasoning_effort, response, reasoning_content, input_tokens, output_tokens, reasoning_tokens,
  status_code, NULL::VARCHAR AS extra,
  $label || ':' || ln::VARCHAR AS source
FROM derived
"""


_SQL = _build_sql()


def _blocks(path: Path, block_bytes: int) -> Iterator[tuple[bytes, Exception | None]]:
    """Whole-line blocks of a plain or gzip file as ``(data, None)``; a corrupt or truncated gzip stream
    yields what could be decompressed, then ``(b"", error)``. The last block may lack a final newline."""
    from distillguard.io.blockparse import gzip_blocks

    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    if gz:
        yield from gzip_blocks(path, block_bytes)
        return
    with open(path, "rb") as fh:
        rest = b""
        while True:
            chunk = fh.read(block_bytes)
            if not chunk:
                if rest:
                    yield rest, None
                return
            buf = rest + chunk
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                rest = buf
                continue
            rest = buf[cut:]
            yield buf[:cut], None


def _line_arrays(data: bytes, first_line: int) -> tuple[pa.Table, np.ndarray]:
    """The block as an Arrow table (ln, line, force) without a Python object per line; also the offsets."""
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1)).astype(np.int64)
    if starts[-1] == len(data):  # the block ends with a newline: no partial line after it
        starts = starts[:-1]
    ends = np.concatenate((nl, [len(data)])).astype(np.int64)[: len(starts)]
    n = len(starts)
    # value i spans data[starts[i]:starts[i+1]]: the line with its newline (JSON whitespace), zero-copy
    offsets = np.concatenate((starts, [len(data)])).astype(np.int64)
    force = np.zeros(n, dtype=bool)
    text = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:  # some line is not UTF-8: those go to Python, which names the byte
        clean = []
        for i in range(n):
            try:
                clean.append(data[offsets[i]:offsets[i + 1]].decode("utf-8"))
            except UnicodeDecodeError:
                clean.append("")
                force[i] = True
        text = pa.array(clean, type=pa.large_string())
    ln = np.arange(first_line, first_line + n, dtype=np.int64)
    return pa.table({"ln": ln, "line": text, "force": force}), np.stack((starts, ends), axis=1)


def read_canonical_fast(path: Path, label: str, shape: str, em, batch_rows: int, parse_lines, safe_batch,
                        unreadable, unreadable_cls, threads: int | None = None) -> Iterator[pa.RecordBatch]:
    """Read one JSONL file through DuckDB; lines SQL cannot decide go to ``parse_lines`` (the Python path)."""
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"SET threads TO {int(threads)}")
        next_line = 1
        for data, err in _blocks(path, FAST_BLOCK_BYTES):
            if err is not None:
                unreadable(em, label, next_line, unreadable_cls(err))
                continue
            table, spans = _line_arrays(data, next_line)
            unterminated_last = not data.endswith(b"\n")
            n = table.num_rows
            for lo in range(0, n, batch_rows):
                part = table.slice(lo, batch_rows)
                yield from _run_part(con, part, data, spans[lo:lo + batch_rows], label, shape, em,
                                     lo + batch_rows >= n and unterminated_last, parse_lines, safe_batch)
            next_line += n
    finally:
        con.close()


def _run_part(con, part: pa.Table, data: bytes, spans: np.ndarray, label: str, shape: str, em,
              unterminated_last: bool, parse_lines, safe_batch):
    con.register("blk", part)
    try:
        res = con.sql(_SQL, params={"label": label}).to_arrow_table()
    except duckdb.Error:  # never lose a block to an SQL surprise: the Python parser decides it all
        res = None
    finally:
        con.unregister("blk")
    if res is None:
        first = int(part.column("ln")[0].as_py())
        lines = [data[s:e + 1] if e < len(data) else data[s:e] for s, e in spans]
        rows, rejects, records, skipped = parse_lines(label, first, lines, shape, unterminated_last)
        out = em.result(label, safe_batch(rows, rejects), rejects, records, skipped)
        if out is not None:
            yield out
        return
    ok = pc.fill_null(res.column("ok"), False).to_numpy(zero_copy_only=False).astype(bool)
    first_ln = part.column("ln")[0].as_py() if part.num_rows else 0
    records = int(ok.sum())
    fast = res.filter(pa.array(ok)).select(EVENT_COLUMNS)
    fast_lines = res.column("ln").filter(pa.array(ok))
    slow_lns = res.column("ln").filter(pa.array(~ok)).to_pylist()
    rows, rejects = [], []
    slow_line_of_row: list[int] = []
    last_ln = first_ln + part.num_rows - 1
    for ln in slow_lns:
        s, e = spans[ln - first_ln]
        raw = data[s:e + 1] if e < len(data) else data[s:e]
        r, rj, rec, skipped = parse_lines(label, ln, [raw], shape, unterminated_last and ln == last_ln)
        records += rec
        if skipped:
            em.summary.skipped += skipped
            fs = em.summary.file(label)
            fs["skipped"] = fs.get("skipped", 0) + skipped
        rows.extend(r)
        slow_line_of_row.extend([ln] * len(r))
        rejects.extend(rj)
    batch = None
    fast_t = fast.cast(EVENT_SCHEMA) if fast.num_rows else None
    slow_rejects: list = []
    slow_b = safe_batch(rows, slow_rejects) if rows else None
    if slow_rejects:  # rows Arrow refused: drop their line numbers from the merge
        refused = {r[0] for r in slow_rejects}
        slow_line_of_row = [x for x in slow_line_of_row if x not in refused]
        rejects.extend(slow_rejects)
        rejects.sort(key=lambda r: (r[0] is None, r[0] or 0))
    if slow_b is not None and fast_t is not None:
        merged = pa.concat_tables([fast_t, pa.Table.from_batches([slow_b])])
        keys = pa.concat_arrays([fast_lines.combine_chunks() if hasattr(fast_lines, "combine_chunks")
                                 else fast_lines, pa.array(slow_line_of_row, type=pa.int64())])
        order = pc.sort_indices(keys)
        batch = merged.take(order).combine_chunks().to_batches()[0]
    elif fast_t is not None:
        batch = fast_t.combine_chunks().to_batches()[0]
    elif slow_b is not None:
        batch = slow_b
    out = em.result(label, batch, rejects, records)
    if out is not None:
        yield out
