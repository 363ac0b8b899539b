"""Streaming readers: JSONL (plain or gzip), whole-document JSON, Parquet and CSV, to Arrow batches.

Everything ends in :func:`distillguard.schema.normalize`; records that fail go to a
:class:`~distillguard.io.quarantine.Quarantine` (or raise :class:`InputError` under ``strict``). Files are
read in bounded blocks, so memory stays flat whatever the file size. Large JSONL files are parsed by a
pool of worker processes, one per core; blocks are handed out and collected in order, so line numbers,
row order and the first strict-mode error are the same as in a single process.
"""

from __future__ import annotations

import csv
import gc
import gzip
import io
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import orjson
import pyarrow as pa

from distillguard.io.adapters import detect_shape, from_openai, from_otel
from distillguard.io.quarantine import InputError, Quarantine, ReadSummary
from distillguard.schema import EVENT_COLUMNS, EVENT_SCHEMA, RecordError, normalize_values

__all__ = ["read_events", "EventStream", "FORMATS", "detect_format", "load_mapping", "rows_to_batch"]

#: accepted values of ``fmt``
FORMATS = ("auto", "jsonl", "json", "canonical", "openai", "otel", "parquet", "csv")
_SHAPE_OF_FMT = {"auto": "auto", "jsonl": "auto", "json": "auto", "canonical": "canonical",
                 "openai": "openai", "otel": "otel"}

#: bytes of lines handed to one parse task (and one worker) at a time
BLOCK_BYTES = 4 * 1024 * 1024
#: files at least this large (compressed size for .gz) are parsed by worker processes when workers="auto"
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
#: JSONL read as canonical/auto goes through the DuckDB fast path (:mod:`distillguard.io.fastpath`) unless
#: ``read_events(..., fast=False)``; lines SQL cannot decide exactly still go through the Python parser
FAST_DEFAULT = False
#: readers for canonical/auto JSONL: ``arrow`` (:mod:`distillguard.io.blockparse`: Arrow parses each block
#: once), ``sql`` (:mod:`distillguard.io.fastpath`), ``python`` (orjson + ``normalize_values`` per line). All
#: give the same rows and rejects; lines the first two cannot decide exactly go through the Python parser.
READERS = ("arrow", "sql", "python")
#: the reader used when ``read_events(fast=None)``; the environment variable ``DISTILLGUARD_READER``
#: (``arrow`` / ``sql`` / ``python``) overrides it, e.g. for a scan
DEFAULT_READER = "arrow"
#: a whole-document JSON file (a top-level array or a pretty-printed object) larger than this is refused
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024

_DERIVED = ("event_id", "system_text", "user_text", "n_messages", "n_user_turns", "n_tools", "source")


# --------------------------------------------------------------------------------------------- helpers


def rows_to_batch(rows: Sequence[tuple | dict]) -> pa.RecordBatch:
    """Normalised rows (tuples from :func:`normalize_values` or dicts from :func:`normalize`) to one record
    batch, built column by column."""
    if rows and isinstance(rows[0], dict):
        rows = [tuple(r[name] for name in EVENT_COLUMNS) for r in rows]
    cols = list(zip(*rows)) if rows else [() for _ in EVENT_COLUMNS]
    arrays = [pa.array(col, type=f.type) for col, f in zip(cols, EVENT_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=EVENT_SCHEMA)


def _safe_batch(rows: list[tuple], rejects: list[tuple]) -> pa.RecordBatch | None:
    """:func:`rows_to_batch`, moving rows Arrow refuses (e.g. text with lone surrogates) to ``rejects``."""
    if not rows:
        return None
    try:
        return rows_to_batch(rows)
    except (pa.ArrowException, UnicodeError, OverflowError, ValueError, TypeError):
        good = []
        for r in rows:
            try:
                rows_to_batch([r])
                good.append(r)
            except (pa.ArrowException, UnicodeError, OverflowError, ValueError, TypeError) as e:
                src = r[-1] or ""
                line = src.rsplit(":", 1)[-1].split("#", 1)[0]
                rejects.append((int(line) if line.isdigit() else None, "<record>",
                                f"invalid value: {type(e).__name__}: {e}", dict(zip(EVENT_COLUMNS, r))))
        return rows_to_batch(good) if good else None


def _base_name(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def _open_binary(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb", buffering=1024 * 1024)


def detect_format(path: str | os.PathLike, mapping: Any = None) -> str:
    """``json`` / ``parquet`` / ``csv`` from the extension (``.gz`` looked through), else from content."""
    p = Path(path)
    name = _base_name(p)
    for exts, fmt in (((".jsonl", ".ndjson", ".json", ".jsonlines"), "json"),
                      ((".parquet", ".pq"), "parquet"), ((".csv", ".tsv"), "csv")):
        if name.endswith(exts):
            return fmt
    try:
        with _open_binary(p) as fh:
            head = fh.read(4096)
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e}", path=str(p)) from None
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if mapping is not None:
        return "csv"
    raise InputError(f"{p}: cannot tell the format from the name or content; give --format", path=str(p))


def load_mapping(mapping: Any) -> dict:
    """A CSV column mapping from a dict or a YAML/JSON file (see docs/schema.md)."""
    if mapping is None:
        return {}
    if isinstance(mapping, dict):
        data = mapping
    else:
        p = Path(mapping)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{p}: cannot read the mapping file: {e}", path=str(p)) from None
        try:
            import yaml

            data = yaml.safe_load(text)
        except Exception as e:  # yaml.YAMLError and friends
            raise InputError(f"{p}: invalid mapping file: {e}", path=str(p)) from None
        if not isinstance(data, dict):
            raise InputError(f"{p}: the mapping file must hold a mapping (field: column)", path=str(p))
    cols = data.get("columns", {k: v for k, v in data.items() if k not in ("delimiter", "json_columns")})
    if not isinstance(cols, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cols.items()):
        raise InputError(f"{mapping}: 'columns' must map canonical field names to CSV column names",
                         field="columns")
    return {"columns": cols, "delimiter": data.get("delimiter"),
            "json_columns": tuple(data.get("json_columns") or ("messages", "tools"))}


def _utf8_reason(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError as e:
        return f"invalid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}"


# --------------------------------------------------------------------------------------------- JSON


def _convert(rec: Any, shape: str) -> Iterator[tuple[str, Any, Any]]:
    """(label suffix, canonical record | RecordError | None, raw) for one parsed JSON record."""
    if shape == "auto":
        shape = detect_shape(rec)
    if shape == "canonical":
        yield "", rec, None
    elif shape == "openai":
        try:
            yield "", from_openai(rec), None
        except RecordError as e:
            yield "", e, None
    else:
        try:
            for k, _field, out in from_otel(rec):
                yield f"#span{k}", out, None
        except RecordError as e:
            yield "", e, None


def parse_lines(label: str, start_line: int, lines: list[bytes], shape: str, eof_unterminated: bool):
    """Parse one block of JSONL lines. Returns (rows, rejects, records, skipped).

    ``rejects`` are tuples ``(line, field, reason, raw)``; a top-level parse failure keeps the raw bytes,
    a record-level failure keeps the raw line (or the OTel span) too. Pure function, run in workers.
    """
    # the cyclic GC would rescan the growing list of row tuples again and again (up to half the parse
    # time); nothing parsed here forms reference cycles, so it is paused for the block
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_lines(label, start_line, lines, shape, eof_unterminated)
    finally:
        if gc_was_enabled:
            gc.enable()


def _parse_lines(label: str, start_line: int, lines: list[bytes], shape: str, eof_unterminated: bool):
    rows: list[tuple] = []
    rejects: list[tuple] = []
    records = skipped = 0
    last = len(lines) - 1
    loads = orjson.loads
    for i, line in enumerate(lines):
        ln = start_line + i
        if not line.strip():
            continue
        records += 1
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        try:
            rec = loads(line)
        except orjson.JSONDecodeError as e:
            bad = _utf8_reason(line)
            if bad:
                rejects.append((ln, "<record>", bad, line))
            elif i == last and eof_unterminated:
                rejects.append((ln, "<record>", f"truncated last line (no newline at end of file): {e}", line))
            else:
                rejects.append((ln, "<record>", f"invalid JSON: {e}", line))
            continue
        if shape == "canonical" or (shape == "auto" and detect_shape(rec) == "canonical"):
            try:
                rows.append(normalize_values(rec, f"{label}:{ln}"))
            except RecordError as e:
                rejects.append((ln, e.field, e.reason, line))
            except Exception as e:  # noqa: BLE001 - never crash a run on one record
                rejects.append((ln, "<record>", f"invalid value: {type(e).__name__}: {e}", line))
            continue
        n_here = 0
        for suffix, out, _ in _convert(rec, shape):
            n_here += 1
            if out is None:
                skipped += 1
                continue
            if isinstance(out, RecordError):
                rejects.append((ln, out.field, out.reason, line))
                continue
            try:
                rows.append(normalize_values(out, f"{label}:{ln}{suffix}"))
            except RecordError as e:
                rejects.append((ln, f"{suffix.lstrip('#')}.{e.field}" if suffix else e.field, e.reason, line))
            except Exception as e:  # noqa: BLE001
                rejects.append((ln, "<record>", f"invalid value: {type(e).__name__}: {e}", line))
        if n_here == 0:  # an OTLP export holding no spans at all: nothing to ingest, nothing wrong
            skipped += 1
        records += max(n_here - 1, 0)
    return rows, rejects, records, skipped


def _parse_task(label: str, start_line: int, data: bytes, shape: str, eof_unterminated: bool):
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows, rejects, records, skipped = parse_lines(label, start_line, lines, shape, eof_unterminated)
    batch = _safe_batch(rows, rejects)
    return batch, rejects, records, skipped


class _GzipLines:
    """``readlines(hint)`` over a gzip file (multi-member too) that hands out every byte it could decompress
    before reporting a corrupt or truncated stream (the stdlib reader loses the chunk in flight)."""

    def __init__(self, path: Path):
        self.raw = open(path, "rb")
        self.d = zlib.decompressobj(wbits=31)
        self.buf = b""
        self.done = False
        self.error: Exception | None = None

    def _fill(self) -> None:
        chunk = self.raw.read(1 << 20)
        if not chunk:
            self.done = True
            if not self.d.eof:
                self.error = EOFError("compressed file ended before the end-of-stream marker was reached")
            return
        out = []
        data = chunk
        while data:
            if self.d.eof:  # the previous member ended: the rest is another member
                self.d = zlib.decompressobj(wbits=31)
            try:
                out.append(self.d.decompress(data))
            except zlib.error as e:
                self.done, self.error = True, e
                break
            data = self.d.unused_data if self.d.eof else b""
        self.buf += b"".join(out)

    def readlines(self, hint: int) -> list[bytes]:
        data = self.readblock(hint)
        return io.BytesIO(data).readlines() if data else []

    def readblock(self, hint: int) -> bytes:
        """About ``hint`` bytes of whole lines (the last block may lack its newline); b"" at the end."""
        while len(self.buf) < hint and not self.done:
            self._fill()
        if not self.buf:
            if self.error is not None:
                err, self.error = self.error, None
                raise err
            return b""
        if self.done:
            data, self.buf = self.buf, b""
        else:
            cut = self.buf.rfind(b"\n") + 1
            if cut == 0:  # one very long line: keep reading until it ends
                while not self.done and b"\n" not in self.buf[-(1 << 20):]:
                    self._fill()
                cut = self.buf.rfind(b"\n") + 1 if not self.done else len(self.buf)
            data, self.buf = self.buf[:cut], self.buf[cut:]
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "_GzipLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_lines(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return _GzipLines(path)
    return open(path, "rb", buffering=1024 * 1024)


class _Unreadable:
    """Marks where a compressed stream turned out corrupt or truncated."""

    def __init__(self, error: Exception):
        self.error = error


def _line_blocks(fh, block_bytes: int, max_lines: int) -> Iterator[tuple[int, list[bytes] | _Unreadable, bool]]:
    """(first line number, lines, eof_unterminated) in bounded blocks; line numbers are 1-based. A corrupt or
    truncated gzip stream ends the blocks with ``(line, _Unreadable(error), False)``."""
    line_no = 1
    pending: list[bytes] = []
    while True:
        try:
            chunk = fh.readlines(block_bytes)
        except (EOFError, OSError, zlib.error) as e:
            if pending:
                yield line_no, pending, not pending[-1].endswith(b"\n")
                line_no += len(pending)
            yield line_no, _Unreadable(e), False
            return
        if not chunk:
            break
        pending.extend(chunk)
        while len(pending) >= max_lines:
            block, pending = pending[:max_lines], pending[max_lines:]
            yield line_no, block, False
            line_no += len(block)
        if pending and sum(map(len, pending)) >= block_bytes:
            yield line_no, pending, False
            line_no += len(pending)
            pending = []
    if pending:
        yield line_no, pending, not pending[-1].endswith(b"\n")


def _unreadable(em: "_Emitter", label: str, line: int, marker: _Unreadable) -> None:
    em.result(label, None, [], 1)
    em.reject(label, line, "<file>", f"unreadable compressed data from this line on (corrupt or truncated "
                                     f"file): {marker.error}", None)


class _Emitter:
    """Routes parse results to the caller: rejects to the quarantine (or an error), counts to the summary."""

    def __init__(self, quarantine: Quarantine, strict: bool, summary: ReadSummary):
        self.q, self.strict, self.summary = quarantine, strict, summary

    def reject(self, label: str, line: int | None, field: str, reason: str, raw: Any) -> None:
        fs = self.summary.file(label)
        fs["rejected"] += 1
        self.summary.rejected += 1
        if self.strict:
            where = f"{label}:{line}" if line is not None else label
            raise InputError(f"{where}: field {field!r}: {reason}", path=label, line=line, field=field,
                             reason=reason)
        rej = self.q.add(label, line, field, reason, raw)
        self.summary.by_reason[rej.kind] += 1

    def result(self, label: str, batch, rejects, records: int, skipped: int = 0):
        fs = self.summary.file(label)
        fs["records"] += records
        self.summary.records += records
        for ln, field, reason, raw in rejects:
            self.reject(label, ln, field, reason, raw)
        if skipped:
            fs["skipped"] = fs.get("skipped", 0) + skipped
            self.summary.skipped += skipped
        if batch is not None and batch.num_rows:
            fs["ingested"] += batch.num_rows
            self.summary.ingested += batch.num_rows
            return batch
        return None


def _read_jsonl(path: Path, label: str, shape: str, em: _Emitter, batch_rows: int, workers: int,
                pool_box: list) -> Iterator[pa.RecordBatch]:
    with _open_lines(path) as fh:
        blocks = _line_blocks(fh, BLOCK_BYTES, batch_rows)
        if workers <= 1:
            for start, lines, unterminated in blocks:
                if isinstance(lines, _Unreadable):
                    _unreadable(em, label, start, lines)
                    continue
                rows, rejects, records, skipped = parse_lines(label, start, lines, shape, unterminated)
                out = em.result(label, _safe_batch(rows, rejects), rejects, records, skipped)
                if out is not None:
                    yield out
            return
        if not pool_box:
            import multiprocessing as mp

            # fork (where the platform has it): no re-import of the caller's __main__, so unguarded scripts
            # work; the workers only parse and build Arrow arrays, never touch the caller's open resources
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            pool_box.append(ProcessPoolExecutor(workers, mp_context=mp.get_context(method)))
        pool = pool_box[0]
        inflight: deque = deque()
        for start, lines, unterminated in blocks:
            if isinstance(lines, _Unreadable):
                while inflight:
                    out = em.result(label, *inflight.popleft().result())
                    if out is not None:
                        yield out
                _unreadable(em, label, start, lines)
                continue
            inflight.append(pool.submit(_parse_task, label, start, b"".join(lines), shape, unterminated))
            del lines
            while len(inflight) > workers + 1:
                out = em.result(label, *inflight.popleft().result())
                if out is not None:
                    yield out
        while inflight:
            out = em.result(label, *inflight.popleft().result())
            if out is not None:
                yield out


def _is_document(path: Path) -> bool:
    """True for a ``.json`` file holding one pretty-printed object or a top-level array."""
    with _open_binary(path) as fh:
        first = fh.readline(1024 * 1024).strip()
    if first.startswith(b"["):
        return True
    if first == b"{":
        return True
    return False


def _read_document(path: Path, label: str, shape: str, em: _Emitter, batch_rows: int) -> Iterator[pa.RecordBatch]:
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise InputError(f"{label}: a whole-document JSON file over {MAX_DOCUMENT_BYTES} bytes; "
                         "convert it to JSONL (one record a line)", path=label)
    with _open_binary(path) as fh:
        data = fh.read()
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        em.result(label, None, [], 1)
        bad = _utf8_reason(data)
        em.reject(label, 1, "<document>", bad or f"invalid JSON: {e}", data)
        return
    items = doc if isinstance(doc, list) else [doc]
    rows: list[dict] = []
    for idx, rec in enumerate(items):
        records = 1
        rejects = []
        n_here = 0
        for suffix, out, _ in _convert(rec, shape):
            n_here += 1
            if out is None:
                em.summary.skipped += 1
                continue
            if isinstance(out, RecordError):
                rejects.append((idx + 1, out.field, out.reason, rec))
                continue
            try:
                rows.append(normalize_values(out, f"{label}#{idx + 1}{suffix}"))
            except RecordError as e:
                rejects.append((idx + 1, e.field, e.reason, rec))
            except Exception as e:  # noqa: BLE001
                rejects.append((idx + 1, "<record>", f"invalid value: {type(e).__name__}: {e}", rec))
        if n_here == 0:
            em.summary.skipped += 1
        records += max(n_here - 1, 0)
        em.result(label, None, rejects, records)
        if len(rows) >= batch_rows:
            rj: list = []
            batch = em.result(label, _safe_batch(rows, rj), rj, 0)
            rows = []
            yield batch
    if rows:
        rj = []
        out = em.result(label, _safe_batch(rows, rj), rj, 0)
        if out is not None:
            yield out


# --------------------------------------------------------------------------------------------- Parquet


def _from_table_row(row: dict) -> dict:
    """A Parquet/Arrow row (canonical names, maybe our own EVENT_SCHEMA) to a canonical input record."""
    rec = {k: v for k, v in row.items() if v is not None and k not in _DERIVED}
    for k in ("messages", "tools"):
        if isinstance(rec.get(k), (str, bytes)):
            try:
                rec[k] = orjson.loads(rec[k])
            except orjson.JSONDecodeError:
                raise RecordError(k, "invalid JSON text") from None
    extra = rec.pop("extra", None)
    if isinstance(extra, (str, bytes)):
        try:
            extra = orjson.loads(extra)
        except orjson.JSONDecodeError:
            raise RecordError("extra", "invalid JSON text") from None
    if isinstance(extra, dict):
        for k, v in extra.items():
            rec.setdefault(k, v)
    elif extra is not None:
        rec["extra"] = extra
    if "messages" not in rec and "prompt" not in rec and row.get("user_text") is not None:
        rec["prompt"] = row["user_text"]
    return rec


def _read_parquet(path: Path, label: str, em: _Emitter, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds
        raise InputError(f"{label}: not a readable Parquet file: {e}", path=label) from None
    row_no = 0
    for rb in pf.iter_batches(batch_size=batch_rows):
        rows, rejects = [], []
        for row in rb.to_pylist():
            row_no += 1
            try:
                rows.append(normalize_values(_from_table_row(row), f"{label}#row{row_no}"))
            except RecordError as e:
                rejects.append((row_no, e.field, e.reason, _jsonable(row)))
            except Exception as e:  # noqa: BLE001
                rejects.append((row_no, "<record>", f"invalid value: {type(e).__name__}: {e}", _jsonable(row)))
        out = em.result(label, _safe_batch(rows, rejects), rejects, rb.num_rows)
        if out is not None:
            yield out


def _jsonable(row: dict) -> dict:
    return orjson.loads(orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS))


# --------------------------------------------------------------------------------------------- CSV


def _read_csv(path: Path, label: str, mapping: dict, em: _Emitter, batch_rows: int) -> Iterator[pa.RecordBatch]:
    csv.field_size_limit(1 << 30)
    with _open_binary(path) as bfh:
        fh = io.TextIOWrapper(bfh, encoding="utf-8", errors="surrogateescape", newline="")
        delimiter = mapping.get("delimiter") or ("\t" if _base_name(path).endswith(".tsv") else ",")
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(f"{label}:1: unreadable CSV header: {e}", path=label, line=1) from None
        cols = mapping.get("columns") or {}
        json_cols = set(mapping.get("json_columns") or ("messages", "tools"))
        index = {name: i for i, name in enumerate(header)}
        missing = [c for c in cols.values() if c not in index]
        if missing:
            raise InputError(f"{label}:1: the mapping names columns not in the header: {', '.join(missing)}",
                             path=label, line=1, field=missing[0])
        field_of = {index[c]: f for f, c in cols.items()}
        for i, name in enumerate(header):  # unmapped columns keep their header name (canonical or extra)
            if i not in field_of and name not in cols:
                field_of[i] = name
        rows, rejects, records = [], [], 0
        prev_line = reader.line_num
        while True:
            start = prev_line + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                records += 1
                rejects.append((start, "<row>", f"invalid CSV: {e}", None))
                prev_line = reader.line_num
                continue
            prev_line = reader.line_num
            if not values:
                continue
            records += 1
            raw = delimiter.join(values)
            try:
                if any(_has_surrogate(v) for v in values):
                    bad = raw.encode("utf-8", "surrogateescape")
                    raise RecordError("<row>", _utf8_reason(bad) or "invalid UTF-8")
                if len(values) != len(header):
                    raise RecordError("<row>", f"row has {len(values)} columns, the header has {len(header)}")
                rec: dict[str, Any] = {}
                for i, v in enumerate(values):
                    if v == "":
                        continue
                    f = field_of[i]
                    if f in json_cols:
                        try:
                            v = orjson.loads(v)
                        except orjson.JSONDecodeError:
                            raise RecordError(f, f"invalid JSON text in column {header[i]!r}") from None
                    rec[f] = v
                rows.append(normalize_values(rec, f"{label}:{start}"))
            except RecordError as e:
                rejects.append((start, e.field, e.reason, raw))
            except Exception as e:  # noqa: BLE001
                rejects.append((start, "<row>", f"invalid value: {type(e).__name__}: {e}", raw))
            if len(rows) >= batch_rows or len(rejects) >= batch_rows:
                out = em.result(label, _safe_batch(rows, rejects), rejects, records)
                rows, rejects, records = [], [], 0
                if out is not None:
                    yield out
        out = em.result(label, _safe_batch(rows, rejects), rejects, records)
        if out is not None:
            yield out


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


# --------------------------------------------------------------------------------------------- entry


class EventStream:
    """An iterator of :data:`EVENT_SCHEMA` record batches with the run's :attr:`summary` and
    :attr:`quarantine` attached (filled as the stream is consumed)."""

    def __init__(self, paths, fmt, mapping, quarantine, strict, batch_rows, workers, fast=None, skip=()):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.fmt, self.strict, self.batch_rows = fmt, strict, batch_rows
        self.mapping = load_mapping(mapping) if mapping is not None else {}
        self.quarantine = quarantine if quarantine is not None else Quarantine()
        self.summary = ReadSummary()
        self.workers = workers
        self.skip = frozenset(skip or ())
        if fast is None:
            fast = os.environ.get("DISTILLGUARD_READER") or ("sql" if FAST_DEFAULT else DEFAULT_READER)
        if isinstance(fast, str):
            if fast not in READERS:
                raise ValueError(f"unknown reader {fast!r} (fast= or DISTILLGUARD_READER); one of "
                                 f"{', '.join(READERS)}")
            self.reader = fast
        else:
            self.reader = "sql" if fast else "python"
        self.fast = self.reader != "python"
        self._it = self._run()

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> pa.RecordBatch:
        return next(self._it)

    def _workers_for(self, path: Path) -> int:
        if self.workers == "auto" or self.workers is None:
            if path.stat().st_size < PARALLEL_MIN_BYTES:
                return 0
            return min(os.cpu_count() or 1, 8) if (os.cpu_count() or 1) > 1 else 0
        return int(self.workers)

    def _run(self) -> Iterator[pa.RecordBatch]:
        em = _Emitter(self.quarantine, self.strict, self.summary)
        for p in self.paths:  # fail fast on a missing file before reading anything
            if not p.is_file():
                raise InputError(f"{p}: no such file", path=str(p))
        pool_box: list = []
        try:
            for p in self.paths:
                label = str(p)
                self.summary.file(label)
                fmt = self.fmt
                if fmt in ("auto", "jsonl", "json", "canonical", "openai", "otel"):
                    kind = detect_format(p, self.mapping or None) if fmt == "auto" else "json"
                else:
                    kind = fmt
                try:
                    if kind == "json":
                        shape = _SHAPE_OF_FMT.get(fmt, "auto")
                        if _base_name(p).endswith(".json") and _is_document(p):
                            yield from _read_document(p, label, shape, em, self.batch_rows)
                        else:
                            if self.reader == "arrow" and shape in ("auto", "canonical"):
                                from distillguard.io.blockparse import read_canonical_arrow

                                yield from read_canonical_arrow(p, label, shape, em, self.batch_rows, _unreadable,
                                                                _Unreadable, skip=self.skip)
                                continue
                            if self.reader == "sql" and shape in ("auto", "canonical"):
                                from distillguard.io.fastpath import read_canonical_fast

                                yield from read_canonical_fast(p, label, shape, em, self.batch_rows, parse_lines,
                                                               _safe_batch, _unreadable, _Unreadable)
                                continue
                            yield from _read_jsonl(p, label, shape, em, self.batch_rows, self._workers_for(p),
                                                   pool_box)
                    elif kind == "parquet":
                        yield from _read_parquet(p, label, em, self.batch_rows)
                    elif kind == "csv":
                        yield from _read_csv(p, label, self.mapping, em, self.batch_rows)
                    else:  # pragma: no cover - detect_format returns only the kinds above
                        raise InputError(f"{p}: unsupported format {kind!r}", path=label)
                except (OSError, EOFError, gzip.BadGzipFile) as e:
                    raise InputError(f"{p}: cannot read: {e}", path=label) from None
        finally:
            if pool_box:
                pool_box[0].shutdown(cancel_futures=True)


def read_events(paths: str | os.PathLike | Iterable[str | os.PathLike], *, fmt: str = "auto",
                mapping: Any = None, quarantine: Quarantine | None = None, strict: bool = False,
                batch_rows: int = 50_000, workers: int | str | None = "auto",
                fast: bool | str | None = None, skip: Iterable[str] = ()) -> EventStream:
    """Read event files as a stream of :data:`~distillguard.schema.EVENT_SCHEMA` record batches.

    ``fmt``: ``auto`` (from the extension; JSON records are recognised as canonical, OpenAI log or OTLP by
    shape), or one of :data:`FORMATS`. ``mapping``: CSV column mapping (dict or YAML/JSON file).
    Rejected records go to ``quarantine`` (a fresh in-memory one when not given, reachable as
    ``stream.quarantine``); ``strict=True`` raises :class:`InputError` at the first one instead.
    ``workers``: worker processes for large JSONL files (``"auto"``: one per core above
    :data:`PARALLEL_MIN_BYTES`; 0 = in this process). ``fast``: the reader for canonical/auto JSONL, one of
    :data:`READERS` (``True`` = ``"sql"``, ``False`` = ``"python"``, ``None`` = :data:`DEFAULT_READER`).
    ``skip``: columns the caller will not read (``messages``, ``source``); a reader that can save work by
    leaving them null does so (the Arrow block reader), the others fill them. Which records are accepted or
    rejected does not change.
    The returned stream carries ``.summary``.
    """
    return EventStream(paths, fmt, mapping, quarantine, strict, batch_rows, workers, fast, skip)
