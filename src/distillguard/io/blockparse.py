"""Arrow block parser for canonical JSONL: each block of whole lines is parsed once by Arrow's C++ JSON reader
and the :data:`~distillguard.schema.EVENT_SCHEMA` columns are derived with vectorised kernels.

The result is exactly what :func:`distillguard.io.readers.parse_lines` (the plain Python path) gives: the
fast path only *accepts* a row when it can reproduce :func:`~distillguard.schema.normalize_values` for it
bit for bit, and hands every other line to the Python parser, which keeps the file, line, field and reason
of each reject. What goes to Python:

* lines Arrow is never shown: not starting with ``{`` and ending with ``}`` (blank lines are skipped as the
  Python path skips them), or 1,000,000 bytes and longer;
* pieces Arrow refuses (invalid JSON or UTF-8, a duplicate key, a value of an unexpected type such as content
  given as a list of parts): the piece is halved until the failing lines are found (at most
  :data:`MIN_PIECE_LINES` lines a piece go to Python);
* rows that use anything the vectorised derivation does not cover: unknown fields (``extra``),
  message items with keys other than ``role``/``content`` or a null content (unless the caller skips
  ``messages``: then the JSON that would hold them is not built), ``prompt`` together with
  ``messages``, no ``request_id``, timestamps outside strict RFC 3339 text or epoch seconds in (0, 1e11),
  control characters other than tab/newline/CR/backspace/form feed in message text, an out-of-range integer.

Lines holding ``"tools"`` are parsed apart (Arrow infers their nested types) and their ``tools`` JSON comes
from orjson's own parse of the line; a line orjson refuses goes to Python. Arrow's parser is as strict as
orjson for everything else that can reach an accepted row (NaN and Infinity only parse into fields that are
routed to Python anyway), and a piece whose row count differs from its line count (two objects on one line)
is refused as a whole. Memory stays bounded by the block size and the blocks in flight.
"""

from __future__ import annotations

import os
import re
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from distillguard.schema import EVENT_COLUMNS, EVENT_SCHEMA, INPUT_FIELDS

__all__ = ["read_canonical_arrow", "ARROW_BLOCK_BYTES", "MIN_PIECE_LINES"]

#: bytes of the file parsed as one block (whole lines)
ARROW_BLOCK_BYTES = 8 * 1024 * 1024
#: a refused piece this small (in lines) goes to the Python parser instead of being halved again
MIN_PIECE_LINES = 8
#: blocks parsed ahead of the one being handed out (each holds about 3x its bytes while in flight)
PREFETCH_BLOCKS = 1
#: helper threads parsing blocks: None = one a core, at most 4 (each block then parsed by one Arrow thread, so
#: the vectorised derivation runs in parallel too); 1 = one thread, Arrow's parser using all cores itself
READ_THREADS: int | None = None
#: at most this many times a block's bytes are handed to Arrow while halving refused pieces
MAX_REPARSE = 4
#: Arrow's own chunk size inside a block; must exceed the longest line shown to it (1,000,000 bytes)
_ARROW_CHUNK = 2 * 1024 * 1024
_MAX_LINE = 1_000_000

_S, _I, _F = pa.string(), pa.int64(), pa.float64()
_STR_FIELDS = ("request_id", "org_id", "api_key_id", "ip", "user_agent", "payment_fingerprint",
               "model", "reasoning_effort", "response", "reasoning_content")
_INT_FIELDS = ("max_tokens", "input_tokens", "output_tokens", "reasoning_tokens", "status_code")
_MSG_TYPE = pa.list_(pa.struct([("role", _S), ("content", _S)]))
#: fields whose JSON type varies between files: (first choice, alternative); switched per file on a refusal
_VARIANTS = {"timestamp": (_S, _F), "account_created_at": (_S, _F), "account_id": (_S, _I), "asn": (_S, _I)}
_FIXED = [(f, _S) for f in _STR_FIELDS + ("prompt",)] + [(f, _I) for f in _INT_FIELDS] + [("messages", _MSG_TYPE)]
_TYPE_CHANGE = re.compile(r"Column\(/([A-Za-z_]+)\) changed from (\w+) to (\w+)")

_UNSUPPORTED_CTRL = r"[\x00-\x07\x0b\x0e-\x1f]"  # orjson writes these as \u00XX: left to Python
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"),
            ("\f", "\\f"))
_INT64_MIN = -(2**63)
# a key holding an escape sequence: a backslash, then the rest of the key, its closing quote and a colon
_ESCAPED_KEY = r'\\[^"\\]*"\s*:|\\"[^"\\]*"\s*:'
_ESCAPED_KEY_RE = re.compile(_ESCAPED_KEY.encode())
_NULLABLE = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


class _Refused(Exception):
    """Arrow could not parse a piece into the expected shape."""


# --------------------------------------------------------------------------------------------- parsing


class _Parser:
    """Arrow's JSON reader with the canonical schema; the type of each variant field sticks per file."""

    def __init__(self, use_threads: bool = True) -> None:
        self.choice = {f: 0 for f in _VARIANTS}
        self.read_options = pj.ReadOptions(use_threads=use_threads, block_size=_ARROW_CHUNK)
        self._tools: _Parser | None = None

    def tools_parser(self) -> "_Parser":
        """A parser of its own (own type choices) for the lines with tool definitions."""
        if self._tools is None:
            self._tools = _Parser(self.read_options.use_threads)
        return self._tools

    def _schema(self) -> pa.Schema:
        return pa.schema(_FIXED + [(f, _VARIANTS[f][self.choice[f]]) for f in _VARIANTS])

    def parse(self, data, n_lines: int) -> pa.Table:
        """Parse ``data`` (whole lines, each starting with ``{``) into ``n_lines`` rows or raise _Refused."""
        flips = 0
        while True:
            opts = pj.ParseOptions(explicit_schema=self._schema(), unexpected_field_behavior="infer")
            try:
                table = pj.read_json(pa.BufferReader(data), read_options=self.read_options, parse_options=opts)
            except (pa.ArrowException, ValueError, UnicodeError) as e:
                m = _TYPE_CHANGE.search(str(e))
                if m and m.group(1) in _VARIANTS and m.group(3) in ("number", "string") and flips < len(_VARIANTS):
                    want = int(m.group(3) == "number")  # the alternative types are the numeric ones
                    if self.choice[m.group(1)] != want:
                        self.choice[m.group(1)] = want
                        flips += 1
                        continue
                raise _Refused(str(e)) from None
            if table.num_rows != n_lines:  # e.g. two objects on one line
                raise _Refused(f"{table.num_rows} rows from {n_lines} lines")
            return table


def _line_spans(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end without the newline, end with it) of every line of the block."""
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1)).astype(np.int64)
    if starts[-1] == len(data):
        starts = starts[:-1]
    n = len(starts)
    ends = np.concatenate((nl, [len(data)])).astype(np.int64)[:n]
    full = np.minimum(ends + 1, len(data))
    return starts, ends, full


def _utf8_ok(data) -> bool:
    """Whether the bytes are valid UTF-8 (Arrow's vectorised check over the whole block)."""
    arr = pa.LargeStringArray.from_buffers(1, pa.py_buffer(np.array([0, len(data)], dtype=np.int64)),
                                           pa.py_buffer(data))
    try:
        arr.validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _classify(data: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shown to Arrow, blank, holds ``"tools"``) per line. Lines neither shown nor blank go to Python; lines
    with tool definitions are parsed apart from the others (their nested types are inferred, slower)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    length = ends - starts
    nonempty = length > 0
    first = np.zeros(len(starts), dtype=np.uint8)
    last = np.zeros(len(starts), dtype=np.uint8)
    first[nonempty] = buf[starts[nonempty]]
    last[nonempty] = buf[(ends - 1)[nonempty]]
    quick = nonempty & (first == 0x7B) & (last == 0x7D) & (length < _MAX_LINE)
    unicode_ok = True
    if not _utf8_ok(data):  # Arrow does not always check string bytes: lines with bad UTF-8 go to Python
        unicode_ok = False
        for i in np.flatnonzero(quick):
            try:
                data[starts[i]:ends[i]].decode("utf-8")
            except UnicodeDecodeError:
                quick[i] = False
    shown = quick.copy()
    blank = np.zeros(len(starts), dtype=bool)
    for i in np.flatnonzero(~quick):
        line = data[starts[i]:ends[i]]
        stripped = line.strip()
        if not stripped:
            blank[i] = True
        elif ((unicode_ok or _utf8_ok(line)) and len(line) < _MAX_LINE and stripped[:1] == b"{"
              and stripped[-1:] == b"}" and stripped == line.strip(b" \t\r\n")):
            shown[i] = True
    tools = np.zeros(len(starts), dtype=bool)
    tools[_lines_with(data, np.concatenate((starts, [len(data)])), b'"tools"')] = True
    return shown, blank, tools & shown


# --------------------------------------------------------------------------------------------- derivation


def _col(table: pa.Table, name: str):
    if name in table.column_names:
        col = table.column(name)
        return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return None


def _bits(buf, offset: int, n: int) -> np.ndarray:
    """An Arrow bitmap as a numpy bool array (no pandas-backed conversion)."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little", count=offset + n)[offset:].astype(bool)


def _nonnull(arr, n: int) -> np.ndarray:
    if arr is None or arr.type == pa.null():
        return np.zeros(n, dtype=bool)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    validity = arr.buffers()[0]
    if validity is None or arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return _bits(validity, arr.offset, len(arr))


def _bools(arr) -> np.ndarray:
    arr = pc.fill_null(arr, False)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return _bits(arr.buffers()[1], arr.offset, len(arr))


def _lines_with(data, offs: np.ndarray, needle: bytes) -> np.ndarray:
    """Indices (sorted, unique) of the lines ``data[offs[i]:offs[i+1]]`` that contain ``needle``."""
    pattern = re.compile(re.escape(needle))
    hits = np.fromiter((m.start() for m in pattern.finditer(data, int(offs[0]), int(offs[-1]))), dtype=np.int64)
    if not len(hits):
        return hits
    return np.unique(np.searchsorted(offs, hits, side="right") - 1)


def _maybe_null_key(data, offs: np.ndarray, names: list[str]) -> np.ndarray:
    """Lines that may hold one of the keys ``names`` with a ``null`` value (which Arrow cannot tell from an
    absent key). Such a line must contain the literal ``null``; it is then flagged when it contains the key
    in quotes, or any key spelt with an escape sequence."""
    hit = np.zeros(len(offs) - 1, dtype=bool)
    if not names:
        return hit
    quoted = [('"' + name + '"').encode() for name in names]
    for i in _lines_with(data, offs, b"null"):
        line = bytes(data[int(offs[i]):int(offs[i + 1])])
        if any(q in line for q in quoted) or _ESCAPED_KEY_RE.search(line):
            hit[i] = True
    return hit


def _any_valid(table_or_struct, names: list[str], n: int) -> np.ndarray:
    """Rows where any of the columns ``names`` holds a value."""
    out = np.zeros(n, dtype=bool)
    for name in names:
        col = table_or_struct(name)
        if col is not None and col.type != pa.null():
            out |= _nonnull(col, n)
    return out


def _iso_micros(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(epoch microseconds, ok) for strict RFC 3339 text, as ``parse_timestamp`` reads it: the pattern
    ``YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|z|+HH:MM|-HH:MM)`` with a year 1900-2199, checked byte by byte."""
    n = len(text)
    micros = np.zeros(n, dtype=np.int64)
    offsets, data = _string_bytes(text)
    s = offsets[:-1]
    length = offsets[1:] - s
    ok = _nonnull(text, n) & (length >= 20) & (length <= 32)
    if not ok.any():
        return micros, ok
    last_byte = len(data) - 1
    s = np.where(ok, s, 0)
    e = np.where(ok, s + length, 0)
    # the first 26 bytes of every text in one gather (row k: byte k of each text; short texts run into their
    # neighbours' bytes, which the length checks below make harmless)
    head = data[np.minimum(np.arange(26)[:, None] + s[None, :], last_byte)]

    def col(k: int) -> np.ndarray:
        return head[k].astype(np.int64) - 48

    def at(pos: np.ndarray) -> np.ndarray:
        return data[np.clip(pos, 0, last_byte)].astype(np.int64)

    def digits(pos: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        v = np.zeros(n, dtype=np.int64)
        good = np.ones(n, dtype=bool)
        for j in range(k):
            d = at(pos + j) - 48
            good &= (d >= 0) & (d <= 9)
            v = v * 10 + d
        return v, good

    def head_digits(first: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        good = ((head[first:first + k] - 48) <= 9).all(axis=0)  # uint8: bytes below "0" wrap past 9
        v = col(first)
        for j in range(1, k):
            v = v * 10 + col(first + j)
        return v, good

    y, g1 = head_digits(0, 4)
    mo, g2 = head_digits(5, 2)
    d, g3 = head_digits(8, 2)
    hh, g4 = head_digits(11, 2)
    mi, g5 = head_digits(14, 2)
    ss, g6 = head_digits(17, 2)
    ok &= g1 & g2 & g3 & g4 & g5 & g6
    ok &= (head[4] == 45) & (head[7] == 45) & (head[10] == 84) & (head[13] == 58) & (head[16] == 58)
    ok &= (y >= 1900) & (y <= 2199) & (hh <= 23) & (mi <= 59) & (ss <= 59)
    dim = _DAYS_IN_MONTH[np.clip(mo, 0, 12)] + ((mo == 2) & (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0)))
    ok &= (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= dim)
    last = at(e - 1)
    zulu = (last == 90) | (last == 122)
    sign_byte = at(e - 6)
    oh, g7 = digits(e - 5, 2)
    om, g8 = digits(e - 2, 2)
    numeric_tz = ~zulu & ((sign_byte == 43) | (sign_byte == 45)) & g7 & g8 & (at(e - 3) == 58) & (oh <= 23) & (om <= 59)
    ok &= zulu | numeric_tz
    frac_end = e - np.where(zulu, 1, 6)
    frac_len = frac_end - (s + 19)  # 0, or a dot and 1 to 6 digits
    has_frac = frac_len > 0
    ok &= (frac_len == 0) | ((frac_len >= 2) & (frac_len <= 7) & (head[19] == 46))
    us = np.zeros(n, dtype=np.int64)
    for j in range(6):
        take = has_frac & (frac_len - 1 > j)
        dig = col(20 + j)
        ok &= ~take | ((dig >= 0) & (dig <= 9))
        us = us * 10 + np.where(take, dig, 0)
    offset_s = np.where(zulu, 0, np.where(sign_byte == 45, -1, 1) * (oh * 3600 + om * 60))
    yy = y - (mo <= 2)  # days from civil (proleptic Gregorian)
    era = np.floor_divide(yy, 400)
    yoe = yy - era * 400
    doy = (153 * ((mo + 9) % 12) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    secs = days * 86400 + hh * 3600 + mi * 60 + ss - offset_s
    micros = np.where(ok, secs * 1_000_000 + us, 0)
    return micros, ok


def _epoch_micros(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(epoch microseconds, ok) for epoch seconds in (0, 1e11), as ``datetime.fromtimestamp`` rounds them."""
    v = np.asarray(pc.fill_null(values.cast(_F), 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    ok = (v > 0.0) & (v < 1e11)
    frac, whole = np.modf(np.where(ok, v, 1.0))
    us = np.rint(frac * 1e6).astype(np.int64)  # round half to even, as CPython does
    secs = whole.astype(np.int64)
    carry = us >= 1_000_000
    return np.where(ok, (secs + carry) * 1_000_000 + us - carry * 1_000_000, 0), ok


def _timestamps(arr, n: int) -> tuple[np.ndarray, np.ndarray]:
    if arr is None or arr.type == pa.null():
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    if pa.types.is_string(arr.type):
        return _iso_micros(arr)
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type):
        return _epoch_micros(arr)
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)


def _id_text(arr, n: int) -> tuple[pa.Array, np.ndarray]:
    """A string-or-integer field as text (``str(int)`` for integers) and where it is usable."""
    if arr is None or arr.type == pa.null():
        return pa.nulls(n, _S), np.zeros(n, dtype=bool)
    if pa.types.is_string(arr.type):
        return arr, _nonnull(arr, n)
    if pa.types.is_integer(arr.type):
        return pc.cast(arr, _S), _nonnull(arr, n)
    return pa.nulls(n, _S), np.zeros(n, dtype=bool)


def _string_bytes(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets as int64, n + 1 of them; the data bytes) of a string array, zero-copy."""
    n = len(arr)
    bufs = arr.buffers()
    off_type = np.int64 if arr.type == pa.large_string() else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset:arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and len(bufs[2]) else np.zeros(1, np.uint8)
    return offsets, data


def _json_str(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each string as a JSON string literal exactly as orjson writes it, and the strings holding a control
    character orjson would write as ``\\u00XX`` (those rows are left to Python). Only the escapes whose
    character occurs in the column are applied (one byte count each)."""
    offsets, data = _string_bytes(values)
    used = data[offsets[0]:offsets[-1]] if len(values) else data[:0]
    unsupported = np.zeros(len(values), dtype=bool)
    counts = {a: int(np.count_nonzero(used == ord(a))) for a, _ in _ESCAPES}
    if int(np.count_nonzero(used < 0x20)) > sum(counts[c] for c in "\n\r\t\b\f"):
        unsupported = _bools(pc.match_substring_regex(values, _UNSUPPORTED_CTRL))
    for a, b in _ESCAPES:
        if counts[a]:
            values = pc.replace_substring(values, a, b)
    return pc.binary_join_element_wise('"', values, '"', ""), unsupported


def _tools_json(data, offs: np.ndarray, rows: np.ndarray, ok: np.ndarray,
                build: bool = True) -> tuple[pa.Array, np.ndarray]:
    """``tools`` as the Python path writes it (sorted-key JSON of the list) for ``rows``, from orjson's own
    parse of those lines; a line orjson refuses (e.g. NaN inside a tool definition) is cleared in ``ok``.
    ``build=False``: only the check and the counts (the JSON comes back null)."""
    n = len(offs) - 1
    out: list = [None] * n
    counts = np.zeros(n, dtype=np.int32)
    for i in np.flatnonzero(rows):
        try:
            tools = orjson.loads(bytes(data[int(offs[i]):int(offs[i + 1])])).get("tools")
        except (orjson.JSONDecodeError, AttributeError):
            ok[i] = False
            continue
        if type(tools) is not list:
            ok[i] = False
            continue
        if build:
            out[i] = orjson.dumps(tools, option=orjson.OPT_SORT_KEYS).decode()
        counts[i] = len(tools)
    return pa.array(out, type=_S), counts


def _join_lists(parent: np.ndarray, values: pa.Array, n: int, sep: str) -> tuple[pa.Array, np.ndarray]:
    """Join ``values`` (grouped by ``parent`` row, in order) with ``sep``: one string per row, and the counts."""
    counts = np.bincount(parent, minlength=n).astype(np.int32) if len(parent) else np.zeros(n, dtype=np.int32)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), values)
    return pc.binary_join(lists, sep), counts


def derive(table: pa.Table, data, offs: np.ndarray, lns: np.ndarray, label: str,
           with_tools: bool = False, skip: frozenset = frozenset()) -> tuple[pa.Table, np.ndarray]:
    """The EVENT_SCHEMA columns (nullable) of every row of a parsed piece and the mask of rows they are exact
    for (the others go to Python; their values here mean nothing). Row i was parsed from
    ``data[offs[i]:offs[i+1]]``, line ``lns[i]`` of the file. Columns in ``skip`` (``messages``, ``source``,
    ``tools``, ``response``, ``reasoning_content``) are left null; without ``messages`` (no JSON to build),
    message items may carry other keys and a null content, as the Python path allows."""
    n = table.num_rows
    ok = np.ones(n, dtype=bool)

    unknown = [c for c in table.column_names if c not in INPUT_FIELDS]
    ok &= ~_any_valid(lambda c: _col(table, c), unknown, n)
    ok &= ~_maybe_null_key(data, offs, unknown)
    tools = _col(table, "tools")
    has_tools = _nonnull(tools, n)
    if has_tools.any() and not (with_tools and pa.types.is_list(tools.type)):
        ok &= ~has_tools

    account, acc_ok = _id_text(_col(table, "account_id"), n)
    ok &= acc_ok
    if acc_ok.any():
        ok &= ~_bools(pc.equal(account, ""))
    asn_raw = _col(table, "asn")
    asn, asn_ok = _id_text(asn_raw, n)
    ok &= asn_ok | ~_nonnull(asn_raw, n)

    ts_us, ts_ok = _timestamps(_col(table, "timestamp"), n)
    ok &= ts_ok
    created_raw = _col(table, "account_created_at")
    created_us, created_ok = _timestamps(created_raw, n)
    has_created = _nonnull(created_raw, n)
    ok &= created_ok | ~has_created

    request_id = _col(table, "request_id")
    ok &= _nonnull(request_id, n) & ~_bools(pc.equal(request_id, ""))

    ints = {f: _col(table, f) for f in _INT_FIELDS}
    for f, arr in ints.items():
        ok &= ~_bools(pc.equal(arr, _INT64_MIN))
    status = ints["status_code"]
    ok &= ~_bools(pc.or_(pc.less(status, 0), pc.greater(status, 999)))

    prompt = _col(table, "prompt")
    has_prompt = _nonnull(prompt, n)
    msgs = _col(table, "messages")
    has_msgs = _nonnull(msgs, n)
    ok &= has_prompt ^ has_msgs  # neither: an error; both: left to Python

    # messages: only {role, content} items with text content
    lengths = np.asarray(pc.fill_null(pc.list_value_length(msgs), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    flat = pc.list_flatten(msgs)
    parent = np.asarray(pc.list_parent_indices(msgs).to_numpy(zero_copy_only=False), dtype=np.int64)
    item_fields = [flat.type.field(i).name for i in range(flat.type.num_fields)]
    extra_keys = [k for k in item_fields if k not in ("role", "content")]
    flat_valid = _nonnull(flat, len(flat))
    # without the messages JSON only role and content matter: the Python path ignores other item keys and
    # reads a null content as empty text (an assistant turn holding only tool calls)
    loose_items = "messages" in skip
    if extra_keys and not loose_items:
        ok &= ~_maybe_null_key(data, offs, extra_keys)
    role = pc.struct_field(flat, "role")
    content = pc.struct_field(flat, "content")
    bad_item = ~flat_valid | ~_nonnull(role, len(flat))
    if not loose_items:
        bad_item |= ~_nonnull(content, len(flat))
    if extra_keys and not loose_items:
        bad_item |= _any_valid(lambda k: pc.struct_field(flat, k), extra_keys, len(flat))
    role = pc.fill_null(role, "")
    content = pc.fill_null(content, "")
    if "messages" not in skip:  # the JSON text is built here; some control characters need Python for it
        content_json, bad_content = _json_str(content)
        role_json, bad_role = _json_str(role)
        bad_item |= bad_content | bad_role
    if bad_item.any():
        ok[np.unique(parent[bad_item])] = False

    # from here on only rows still ok matter (bad items were filled in to keep the kernels total)
    if "messages" in skip:
        msg_json = pa.nulls(n, _S)
    else:
        item_json = pc.binary_join_element_wise('{"content":', content_json, ',"role":', role_json, "}", "")
        msg_json, _ = _join_lists(parent, item_json, n, ",")
        msg_json = pc.binary_join_element_wise("[", msg_json, "]", "")
        msg_json = pc.if_else(pa.array(has_msgs), msg_json, pa.nulls(n, _S))

    is_user = _bools(pc.equal(role, "user"))
    is_sys = _bools(pc.or_(pc.equal(role, "system"), pc.equal(role, "developer")))
    user_text, n_user = _join_lists(parent[is_user], content.filter(pa.array(is_user)), n, "\n\n")
    sys_text, n_sys = _join_lists(parent[is_sys], content.filter(pa.array(is_sys)), n, "\n\n")
    sys_text = pc.if_else(pa.array(n_sys > 0), sys_text, pa.nulls(n, _S))
    prompt_or_empty = prompt if prompt is not None else pa.nulls(n, _S)
    user_text = pc.if_else(pa.array(has_prompt), prompt_or_empty, user_text)
    n_user_turns = np.where(has_prompt, 1, n_user).astype(np.int32)
    n_messages = np.where(has_msgs, lengths, 1).astype(np.int32)

    tools_json = pa.nulls(n, _S)
    n_tools = np.zeros(n, dtype=np.int32)
    if with_tools and has_tools.any() and pa.types.is_list(tools.type):
        tools_json, n_tools = _tools_json(data, offs, ok & has_tools, ok, build="tools" not in skip)
    ts_type = pa.timestamp("us", tz="UTC")
    source = (pa.nulls(n, _S) if "source" in skip
              else pc.binary_join_element_wise(label + ":", pc.cast(pa.array(lns), _S), ""))
    cols = {
        "event_id": request_id,
        "request_id": request_id,
        "timestamp": pa.array(ts_us, type=pa.int64()).cast(ts_type),
        "account_id": account,
        "asn": asn,
        "account_created_at": pa.array(created_us, mask=~has_created, type=pa.int64()).cast(ts_type),
        "messages": msg_json,
        "system_text": sys_text,
        "user_text": user_text,
        "n_messages": pa.array(n_messages),
        "n_user_turns": pa.array(n_user_turns),
        "tools": tools_json,
        "n_tools": pa.array(n_tools, type=pa.int32()),
        "extra": pa.nulls(n, _S),
        "source": source,
    }
    for f in _STR_FIELDS:  # a skipped text (response, reasoning) is not copied along: Arrow checked its type
        cols.setdefault(f, None if f in skip else _col(table, f))
    for f in _INT_FIELDS:
        cols[f] = ints[f]
    arrays = []
    for field in EVENT_SCHEMA:
        arr = cols[field.name]
        if arr is None:
            arr = pa.nulls(n, field.type)
        elif arr.type != field.type:
            arr = arr.cast(field.type)
        arrays.append(arr)
    out = pa.Table.from_arrays(arrays, schema=_NULLABLE)  # every row; the caller keeps the ok ones
    return out, ok


# --------------------------------------------------------------------------------------------- driver


def read_canonical_arrow(path, label: str, shape: str, em, batch_rows: int, unreadable, unreadable_cls,
                         block_bytes: int | None = None, skip: frozenset = frozenset()) -> Iterator[pa.RecordBatch]:
    """Read one JSONL file through Arrow; lines and rows it cannot decide exactly go to the Python parser.

    Blocks are parsed in this process on :data:`READ_THREADS` helper threads, ahead of the one being handed
    out; with one thread, Arrow's parser itself uses all cores. (Worker processes measured slower: they must
    pickle their results.)"""
    threads = max(1, int(READ_THREADS or min(4, os.cpu_count() or 1)))
    parser = _Parser(use_threads=threads == 1)
    # line numbers: counted on the helper thread when there is one (it takes the blocks in order), else here
    line_box = [1]

    def count(data) -> int:
        first = line_box[0]
        newlines = int(np.count_nonzero(np.frombuffer(data, np.uint8) == 10))  # 3x bytes.count's speed
        line_box[0] += newlines + (0 if data.endswith(b"\n") else 1)
        return first

    def run(data, first: int | None) -> tuple:
        first = count(data) if first is None else first
        try:
            return parse_block(label, first, data, shape, parser, skip)
        except (pa.ArrowException, ValueError, TypeError, IndexError):  # never lose a block: Python reads it
            return _python_block(label, first, data, shape)

    # the caller's own work on a batch overlaps the parsing of the next blocks (Arrow and numpy release the GIL)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="dg-arrow-read")
    inflight: deque = deque()
    try:
        for data, err in _read_blocks(path, block_bytes or ARROW_BLOCK_BYTES):
            if err is not None:
                while inflight:
                    yield from _emit(em, label, inflight.popleft().result(), batch_rows)
                unreadable(em, label, line_box[0], unreadable_cls(err))
                continue
            inflight.append(pool.submit(run, data, None if threads == 1 else count(data)))
            del data
            while len(inflight) > PREFETCH_BLOCKS + threads - 1:
                yield from _emit(em, label, inflight.popleft().result(), batch_rows)
        while inflight:
            yield from _emit(em, label, inflight.popleft().result(), batch_rows)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def gzip_blocks(path, block_bytes: int) -> Iterator[tuple[bytes, Exception | None]]:
    """Whole-line blocks of a gzip file (multi-member too) as ``(data, None)``; a corrupt or truncated stream
    yields what could be decompressed, then ``(b"", error)``."""
    from distillguard.io.readers import _GzipLines

    with _GzipLines(path) as fh:
        while True:
            try:
                data = fh.readblock(block_bytes)
            except (EOFError, OSError, zlib.error) as e:
                yield b"", e
                return
            if not data:
                return
            yield data, None


def _read_blocks(path, block_bytes: int) -> Iterator[tuple[bytes, Exception | None]]:
    """Whole-line blocks of a plain or gzip file as ``(data, None)``; a corrupt or truncated gzip stream
    yields what could be decompressed, then ``(b"", error)``. The last block may lack a final newline.
    Plain files are read straight into each block's buffer (one copy of the bytes)."""
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    if gz:
        yield from gzip_blocks(path, block_bytes)
        return
    with open(path, "rb", buffering=0) as fh:
        rest = b""
        while True:
            buf = bytearray(len(rest) + block_bytes)
            buf[:len(rest)] = rest
            got = fh.readinto(memoryview(buf)[len(rest):])
            if not got:
                if rest:
                    yield rest, None
                return
            end = len(rest) + got
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut == 0:  # no newline yet: one long line, keep reading
                rest = bytes(buf[:end])
                continue
            rest = bytes(buf[cut:end])
            del buf[cut:]
            yield buf, None


def _emit(em, label: str, result: tuple, batch_rows: int) -> Iterator[pa.RecordBatch]:
    table, rejects, records, skipped = result
    batches = table.to_batches(max_chunksize=batch_rows) if table is not None else []
    if skipped:
        em.summary.skipped += skipped
        fs = em.summary.file(label)
        fs["skipped"] = fs.get("skipped", 0) + skipped
    out = em.result(label, batches[0] if batches else None, rejects, records)
    if out is not None:
        yield out
    for b in batches[1:]:
        out = em.result(label, b, [], 0)
        if out is not None:
            yield out


def parse_block(label: str, first_ln: int, data: bytes, shape: str, parser: _Parser | None = None,
                skip: frozenset = frozenset()) -> tuple:
    """One block of whole lines (the file's last may lack its newline) to ``(table | None, rejects, records,
    skipped)``, exactly as the Python parser would give them. ``parser`` keeps the column types that a file's
    earlier blocks needed."""
    from distillguard.io.readers import _safe_batch, parse_lines

    parser = parser or _Parser()
    starts, ends, full = _line_spans(data)
    n_lines = len(starts)
    unterminated_last = not data.endswith(b"\n")
    shown, blank, tools = _classify(data, starts, ends)
    fast_parts: list[pa.Table] = []
    fast_lns: list[np.ndarray] = []
    slow = ~shown & ~blank
    # lines with tool definitions are parsed on their own (their nested types are inferred)
    for idx, group_parser, with_tools in ((np.flatnonzero(shown & ~tools), parser, False),
                                          (np.flatnonzero(tools), parser.tools_parser(), True)):
        if not len(idx):
            continue
        if len(idx) == n_lines:
            cbuf = data
            coffs = np.concatenate((starts, [len(data)]))
        else:  # only these lines, one after the other (runs of neighbours copied at once)
            breaks = np.flatnonzero(np.diff(idx) != 1) + 1
            run_lo = np.concatenate(([0], breaks))
            run_hi = np.concatenate((breaks, [len(idx)]))
            mv = memoryview(data)
            cbuf = b"".join(mv[starts[idx[a]]:full[idx[b - 1]]] for a, b in zip(run_lo, run_hi) if b > a)
            coffs = np.concatenate(([0], np.cumsum((full - starts)[idx]))).astype(np.int64)
        pieces: list[tuple[int, int, pa.Table | None]] = []
        _pieces(group_parser, cbuf, coffs, 0, len(idx), pieces)
        for lo, hi, table in pieces:
            lines_here = idx[lo:hi]
            if table is None:
                slow[lines_here] = True
                continue
            try:
                rows, ok = derive(table, cbuf, coffs[lo:hi + 1], first_ln + lines_here, label, with_tools, skip)
            except (pa.ArrowException, ValueError, TypeError, IndexError):  # never lose a piece: Python decides
                slow[lines_here] = True
                continue
            slow[lines_here[~ok]] = True
            if ok.any():
                fast_parts.append((rows, ok))
                fast_lns.append(first_ln + lines_here[ok])
    records = sum(int(ok.sum()) for _, ok in fast_parts)
    rows_py: list[tuple] = []
    line_of_row: list[int] = []
    rejects: list[tuple] = []
    skipped = 0
    last_i = n_lines - 1
    for i in np.flatnonzero(slow):
        ln = first_ln + int(i)
        r, rj, rec, sk = parse_lines(label, ln, [bytes(data[starts[i]:full[i]])], shape,
                                     unterminated_last and i == last_i)
        records += rec
        skipped += sk
        rows_py.extend(r)
        line_of_row.extend([ln] * len(r))
        rejects.extend(rj)
    refused: list = []
    slow_b = _safe_batch(rows_py, refused) if rows_py else None
    if refused:  # rows Arrow would not take (Python path: quarantined the same way)
        gone = {r[0] for r in refused}
        line_of_row = [x for x in line_of_row if x not in gone]
        rejects.extend(refused)
        rejects.sort(key=lambda r: (r[0] is None, r[0] or 0))
    # one copy: the kept rows of every piece and the Python rows, taken at once in line order
    tables = [t for t, _ in fast_parts]
    picks = []
    base = 0
    for t, ok in fast_parts:
        picks.append(np.flatnonzero(ok) + base)
        base += t.num_rows
    keys = list(fast_lns)
    if slow_b is not None:
        tables.append(pa.Table.from_batches([slow_b]).cast(_NULLABLE))
        picks.append(np.arange(base, base + slow_b.num_rows))
        keys.append(np.asarray(line_of_row, dtype=np.int64))
    out = None
    if tables:
        pick = np.concatenate(picks)
        if len(keys) > 1:
            pick = pick[np.argsort(np.concatenate(keys), kind="stable")]
        whole = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        if len(pick) == whole.num_rows and len(tables) == 1:
            out = whole.combine_chunks()
        else:
            out = whole.take(pa.array(pick)).combine_chunks()
        out = out.cast(EVENT_SCHEMA)
    return out, rejects, records, skipped


def _python_block(label: str, first_ln: int, data, shape: str) -> tuple:
    """The whole block through the Python parser (the safety net when the Arrow path fails unexpectedly)."""
    from distillguard.io.readers import _safe_batch, parse_lines

    lines = [line + b"\n" for line in bytes(data).split(b"\n")]
    lines[-1] = lines[-1][:-1]  # what follows the last newline has none
    if not lines[-1]:
        lines.pop()
    rows, rejects, records, skipped = parse_lines(label, first_ln, lines, shape, not data.endswith(b"\n"))
    batch = _safe_batch(rows, rejects)
    return (pa.Table.from_batches([batch]) if batch is not None else None), rejects, records, skipped


def _pieces(parser: _Parser, cbuf: bytes, coffs: np.ndarray, lo: int, hi: int, out: list) -> None:
    """Parse lines [lo, hi) of ``cbuf``; refused pieces are halved until they are :data:`MIN_PIECE_LINES`
    lines or fewer, which go to Python. Halving stops (the rest goes to Python) once the pieces parsed add
    up to :data:`MAX_REPARSE` times the block, so a block full of odd lines costs a few parses at most."""
    buf = pa.py_buffer(cbuf)
    budget = [MAX_REPARSE * max(int(coffs[hi] - coffs[lo]), 1)]
    todo = [(lo, hi)]
    while todo:
        a, b = todo.pop()
        if b <= a:
            continue
        size = int(coffs[b] - coffs[a])
        if budget[0] >= size:
            budget[0] -= size
            try:
                out.append((a, b, parser.parse(buf.slice(int(coffs[a]), size), b - a)))
                continue
            except _Refused:
                pass
        else:
            budget[0] = 0
        if b - a <= MIN_PIECE_LINES or budget[0] <= 0:
            out.append((a, b, None))
            continue
        mid = (a + b) // 2
        todo.append((mid, b))
        todo.append((a, mid))
    out.sort(key=lambda piece: piece[0])
