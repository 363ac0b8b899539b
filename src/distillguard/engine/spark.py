"""The scan on Apache Spark (docs/scale.md).

* Reading: Spark reads JSON lines (plain or ``.gz``) or Parquet from any path it can read (local, HDFS, S3,
  GCS, ABFS ...). JSON lines are parsed and validated by the same code as the local readers
  (:func:`distillguard.io.readers.parse_lines`) inside an Arrow UDF (``mapInArrow``), with real file line
  numbers; Parquet already in the canonical event schema is used as is.
* Per-request signals: :func:`distillguard.signals.compute_signals` on each Arrow batch (``mapInArrow``).
* Features, edge construction, campaign statistics: the very Ibis expressions of
  :mod:`distillguard.features`, :mod:`distillguard.linking` and :mod:`distillguard.detect`, compiled to Spark
  SQL by Ibis's PySpark backend.
* On the driver: the per-account feature table (one row per account), scoring and calibration, MinHash /
  SimHash candidate search of the linking stage, the account graph and Leiden communities.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import orjson
import pyarrow as pa

from distillguard.detect.allowlist import Allowlist
from distillguard.detect.pipeline import ScanResult, Scanner, _Findings
from distillguard.detect.scoring import Calibration, DetectConfig
from distillguard.schema import EVENT_SCHEMA
from distillguard.signals import SIGNAL_INPUTS, SIGNAL_SCHEMA

__all__ = ["SparkScanner", "spark_session", "local_conf", "read_events", "compute_signals_spark", "to_local", "restore_uri", "is_uri"]

#: event columns no scan stage reads (same list as the local reader's slim mode)
_UNUSED = ("messages", "tools", "response", "reasoning_content", "extra")
_REJECT = "_reject"

_DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}


def _register_mode() -> None:
    """Ibis 12 has no PySpark rule for ``mode()`` (used by the template clustering); Spark >= 3.4 has it."""
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    if getattr(PySparkCompiler, "_dg_mode", False):
        return

    def visit_Mode(self, op, *, arg, where):  # noqa: N802 - Ibis naming
        return self.agg.mode(arg, where=where)

    PySparkCompiler.visit_Mode = visit_Mode
    PySparkCompiler._dg_mode = True


def local_conf(master: str) -> dict:
    """Settings for a session on ``local[N]`` cores (docs/scale.md, "Local-mode settings"): adaptive
    execution off (on one machine it re-plans every stage of the scan's many-join queries and runs their
    small jobs concurrently: up to 8x slower linking queries), ``2 N`` shuffle partitions instead of 200,
    and no code generation (compiling each stage of the ~20 queries cost more CPU than it saved up to
    200k events). Empty for other masters."""
    import re

    m = re.match(r"^local(?:\[(\d+|\*)(?:,\d+)?\])?$", master or "")
    if not m:
        return {}
    n = m.group(1)
    cores = 1 if n is None else (os.cpu_count() or 2) if n == "*" else int(n)
    return {"spark.sql.adaptive.enabled": "false", "spark.sql.shuffle.partitions": str(max(2, 2 * cores)),
            "spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}


def spark_session(master: str | None = None, conf: dict | None = None, app_name: str = "distillguard"):
    """The active SparkSession (as configured by ``spark-submit``), or a new one on ``master``
    (default ``local[*]``; with :func:`local_conf` unless ``conf`` says otherwise). The session time zone is
    set to UTC: every timestamp of the scan is UTC."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    active = SparkSession.getActiveSession()
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit (or pyspark shell) chose the master
    tuned: dict = {}
    if active is None and (master or not under_submit):
        master = master or "local[*]"
        builder = builder.master(master)
        if master.startswith("local"):
            # local workers must run this interpreter (the one with distillguard installed)
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            tuned = local_conf(master)
    for k, v in {**_DEFAULT_CONF, **tuned, **(conf or {})}.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    if active is None and not under_submit:  # a session we started: keep Spark's console chatter down
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def restore_uri(path: Any) -> str:
    """``s3a://b/k`` back from the ``s3a:/b/k`` that a ``pathlib.Path`` makes of it (CLI arguments)."""
    import re

    text = str(path)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)", text)
    if not m or m.group(1).lower() == "file":  # file:/x is already a valid local URI
        return text
    return f"{m.group(1)}://{text[m.end():]}"


def is_uri(path: Any) -> bool:
    """Whether ``path`` names a location with a scheme (``hdfs:``, ``s3a:`` ...), not a local file."""
    import re

    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", str(path)) is not None


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


# ---------------------------------------------------------------------------------------------- reading
# all nullable: a reject row has no event columns
_PARSED_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA] + [pa.field(_REJECT, pa.string())])
#: what the scan persists: the event columns a stage reads, the signal columns, the reject column
_SLIM_FIELDS = [f.with_nullable(True) for f in EVENT_SCHEMA if f.name not in _UNUSED]
_SIGNAL_ONLY = [f.with_nullable(True) for f in SIGNAL_SCHEMA if f.name not in EVENT_SCHEMA.names]
_SCAN_SCHEMA = pa.schema(_SLIM_FIELDS + _SIGNAL_ONLY + [pa.field(_REJECT, pa.string())])


def _reject_batch(rejects: list[dict]) -> pa.RecordBatch:
    cols = [pa.nulls(len(rejects), f.type) for f in EVENT_SCHEMA]
    cols.append(pa.array([orjson.dumps(r).decode() for r in rejects], pa.string()))
    return pa.RecordBatch.from_arrays(cols, schema=_PARSED_SCHEMA)


def _with_reject_col(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(list(batch.columns) + [pa.nulls(batch.num_rows, pa.string())],
                                      schema=_PARSED_SCHEMA)


def _parse_jsonl_batches(offsets: dict, shape: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow function: lines (file, mid, value) -> event rows, or reject rows (``_reject`` = JSON)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from distillguard.io.readers import _base_name, _safe_batch, parse_lines

        for batch in batches:
            files = batch.column(0).to_pylist()
            mids = batch.column(1).to_numpy(zero_copy_only=False)
            values = batch.column(2).to_pylist()
            rows_all: list[tuple] = []
            rejects: list[dict] = []
            i, n = 0, len(files)
            while i < n:  # runs of consecutive lines of one file
                f = files[i]
                pid = int(mids[i]) >> 33
                first_mid, offset = offsets[(f, pid)]
                start = offset + int(mids[i]) - first_mid + 1
                j = i + 1
                while j < n and files[j] == f and int(mids[j]) == int(mids[j - 1]) + 1:
                    j += 1
                lines = [(v or "").encode("utf-8", "surrogatepass") for v in values[i:j]]
                label = _base_name(Path(f))
                rows, rej, _records, _skipped = parse_lines(label, start, lines, shape, False)
                rows_all.extend(rows)
                for ln, field, reason, raw in rej:
                    rejects.append({"source": f, "line": ln, "field": field, "reason": reason,
                                    "raw": raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)})
                i = j
            bad: list[tuple] = []
            good = _safe_batch(rows_all, bad)
            for ln, field, reason, raw in bad:
                rejects.append({"source": raw.get("source") if isinstance(raw, dict) else None, "line": ln,
                                "field": field, "reason": reason, "raw": None})
            if good is not None and good.num_rows:
                yield _with_reject_col(good)
            if rejects:
                yield _reject_batch(rejects)

    return run


def _normalize_table_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow function for non-canonical Parquet: each row through the local reader's normalisation."""
    from distillguard.io.readers import _from_table_row, _safe_batch
    from distillguard.schema import RecordError, normalize_values

    for batch in batches:
        rows, rejects = [], []
        for row in batch.to_pylist():
            try:
                rows.append(normalize_values(_from_table_row(row), "parquet"))
            except RecordError as e:
                rejects.append({"source": "parquet", "line": None, "field": e.field, "reason": e.reason, "raw": None})
            except Exception as e:  # noqa: BLE001 - one bad record never stops the scan
                rejects.append({"source": "parquet", "line": None, "field": "<record>",
                                "reason": f"invalid value: {type(e).__name__}: {e}", "raw": None})
        bad: list[tuple] = []
        good = _safe_batch(rows, bad)
        rejects += [{"source": "parquet", "line": ln, "field": f, "reason": r, "raw": None} for ln, f, r, _ in bad]
        if good is not None and good.num_rows:
            yield _with_reject_col(good)
        if rejects:
            yield _reject_batch(rejects)


def _is_parquet(path: str, fmt: str) -> bool:
    if fmt in ("parquet",):
        return True
    if fmt in ("jsonl", "canonical", "openai", "otel", "json"):
        return False
    p = path.rstrip("/").lower()
    return p.endswith(".parquet") or p.endswith(".pq")


def read_events(spark, paths: list[str], *, fmt: str = "auto"):
    """``(parsed DataFrame, reject DataFrame)`` for event files. JSON lines are validated record by record
    with their file and line; Parquet in the canonical event schema is taken as is."""
    from pyspark.sql import functions as F

    out = _read_parsed(spark, paths, fmt=fmt)
    return out.filter(F.col(_REJECT).isNull()).drop(_REJECT), out.filter(F.col(_REJECT).isNotNull()).select(_REJECT)


def _read_parsed(spark, paths: list[str], *, fmt: str = "auto"):
    """One DataFrame of parsed events and rejects (``_reject``: the reject as JSON, null on good rows)."""
    from pyspark.sql import functions as F

    paths = [str(p) for p in paths]
    pq_paths = [p for p in paths if _is_parquet(p, fmt)]
    js_paths = [p for p in paths if not _is_parquet(p, fmt)]
    shape = fmt if fmt in ("canonical", "openai", "otel") else "auto"
    parsed_schema = _spark_schema(_PARSED_SCHEMA)
    frames = []
    if js_paths:
        text = spark.read.text(js_paths).select(
            F.input_file_name().alias("file"), F.monotonically_increasing_id().alias("mid"), "value")
        # line numbers: each (file, partition) chunk starts after the lines of the file's earlier chunks
        chunks = (text.groupBy("file", (F.col("mid") / F.lit(2 ** 33)).cast("long").alias("pid"))
                  .agg(F.count(F.lit(1)).alias("n"), F.min("mid").alias("first")).collect())
        offsets: dict = {}
        for f in {r["file"] for r in chunks}:
            done = 0
            for r in sorted((r for r in chunks if r["file"] == f), key=lambda r: r["first"]):
                offsets[(f, r["pid"])] = (int(r["first"]), done)
                done += int(r["n"])
        frames.append(text.mapInArrow(_parse_jsonl_batches(offsets, shape), parsed_schema))
    if pq_paths:
        df = spark.read.parquet(*pq_paths)
        missing = [f.name for f in EVENT_SCHEMA if f.name not in df.columns]
        if not missing:
            ev_schema = _spark_schema(EVENT_SCHEMA)
            df = df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in ev_schema.fields])
            frames.append(df.withColumn(_REJECT, F.lit(None).cast("string")))
        else:
            frames.append(df.mapInArrow(_normalize_table_batches, parsed_schema))
    if not frames:
        raise ValueError("read_events: no input paths")
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


# ---------------------------------------------------------------------------------------------- signals
def _signal_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    from distillguard.signals import compute_signals

    for batch in batches:
        if batch.num_rows == 0:
            continue
        out = compute_signals(pa.Table.from_batches([batch])).cast(SIGNAL_SCHEMA)
        yield from out.to_batches()


def _with_signals_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow function: parsed rows (events and rejects) -> the same rows with the signal columns
    appended (null on reject rows), so one persisted DataFrame holds events, signals and rejects."""
    import pyarrow.compute as pc

    from distillguard.detect.pipeline import _after_signals
    from distillguard.signals import compute_signals

    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        good_mask = pc.is_null(table.column(_REJECT))
        good = table.filter(good_mask)
        rejects = table.filter(pc.invert(good_mask))
        if good.num_rows:
            sig = compute_signals(good.select([c for c in SIGNAL_INPUTS if c in good.column_names])).cast(SIGNAL_SCHEMA)
            # as the DuckDB scan: system text dropped, user text cut, before caching (Spark stores the other
            # columns in its own format: no dictionary encoding of them here)
            good = _after_signals(good, encode=False)
            cols = [good.column(f.name) for f in _SLIM_FIELDS] + [sig.column(f.name) for f in _SIGNAL_ONLY]
            cols.append(good.column(_REJECT))
            yield from pa.Table.from_arrays(cols, schema=_SCAN_SCHEMA).to_batches()
        if rejects.num_rows:
            cols = [rejects.column(f.name) for f in _SLIM_FIELDS]
            cols += [pa.nulls(rejects.num_rows, f.type) for f in _SIGNAL_ONLY] + [rejects.column(_REJECT)]
            yield from pa.Table.from_arrays(cols, schema=_SCAN_SCHEMA).to_batches()


def compute_signals_spark(events_df):
    """Per-request signals as a Spark DataFrame of :data:`distillguard.signals.SIGNAL_SCHEMA` (Arrow UDF)."""
    cols = [c for c in SIGNAL_INPUTS if c in events_df.columns]
    return events_df.select(*cols).mapInArrow(_signal_batches, _spark_schema(SIGNAL_SCHEMA))


# ---------------------------------------------------------------------------------------------- results
def to_local(table: pa.Table) -> pa.Table:
    """A result collected from Spark with its timestamps marked UTC again (Spark hands them back naive,
    in the session time zone, which this engine pins to UTC)."""
    cols, fields = [], []
    for f, col in zip(table.schema, table.columns):
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            col = col.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
            f = pa.field(f.name, pa.timestamp("us", tz="UTC"), f.nullable)
        cols.append(col)
        fields.append(f)
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


class _ScanTables(NamedTuple):
    events_t: Any  # Ibis views
    signals_t: Any
    joined_t: Any
    events: Any  # Spark DataFrames
    signals: Any
    rejects: Any
    cached: Any  # the one persisted DataFrame the others select from
    reader: str


def _arrow_backend():
    """Ibis's PySpark backend collecting results with ``DataFrame.toArrow`` (Ibis 12 goes through pandas)."""
    import ibis

    _ = ibis.pyspark  # loading the backend through ibis registers its compile options
    from ibis.backends.pyspark import Backend
    from ibis.formats.pyarrow import PyArrowData

    class ArrowBackend(Backend):
        def to_pyarrow(self, expr, /, *, params=None, limit=None, **kwargs):
            table_expr = expr.as_table()
            self._run_pre_execute_hooks(table_expr)
            sql = self.compile(table_expr, params=params, limit=limit, **kwargs)
            out = self._session.sql(sql).toArrow()
            out = to_local(out)
            return expr.__pyarrow_result__(PyArrowData.convert_table(out, table_expr.schema()))

    return ArrowBackend()


class SparkScanner(Scanner):
    """:class:`distillguard.detect.Scanner` whose relational stages run on Spark.

    ``scan(paths)`` takes file paths or URIs Spark can read (or a Spark DataFrame of canonical events).
    ``last_dataframes`` keeps the persisted events and signals DataFrames of the last scan.
    """

    def __init__(self, config: DetectConfig | None = None, allowlist: Allowlist | None = None, *, spark: Any = None,
                 master: str | None = None, spark_conf: dict | None = None, collect_events: int = 0):
        super().__init__(config, allowlist)
        self.spark = spark if spark is not None else spark_session(master, spark_conf)
        self.spark.conf.set("spark.sql.session.timeZone", "UTC")
        self.collect_events = collect_events
        self.last_dataframes: dict = {}
        _register_mode()
        self.con = _arrow_backend().connect(self.spark)
        self._n = 0

    # -- helpers
    def _view(self, df, stem: str):
        self._n += 1
        name = f"dg_{stem}_{id(self) & 0xffffff:x}_{self._n}"
        df.createOrReplaceTempView(name)
        return self.con.table(name)

    def _load(self, source: Any, fmt: str | None):
        from pyspark.sql import DataFrame

        if isinstance(source, DataFrame):
            from pyspark.sql import functions as F

            return source.withColumn(_REJECT, F.lit(None).cast("string")), "spark.dataframe"
        paths = [source] if isinstance(source, (str, Path)) else list(source)
        return _read_parsed(self.spark, [str(p) for p in paths], fmt=fmt or "auto"), "spark"

    def tables(self, source: Any, *, fmt: str | None = None) -> "_ScanTables":
        """The scan's inputs on Spark: events parsed and their signals computed in one pass over the input
        (two chained Arrow UDFs), persisted once (``MEMORY_AND_DISK``) with the reject rows; events,
        signals, their join and the rejects are filters and projections of that one cached DataFrame."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        parsed, reader = self._load(source, fmt)
        parsed = parsed.select(*[f.name for f in _PARSED_SCHEMA if f.name not in _UNUSED])
        both = parsed.mapInArrow(_with_signals_batches, _spark_schema(_SCAN_SCHEMA))
        both = both.persist(StorageLevel.MEMORY_AND_DISK)
        good = both.filter(F.col(_REJECT).isNull())
        ev = good.select(*[f.name for f in _SLIM_FIELDS])
        sg = good.select(*SIGNAL_SCHEMA.names)
        joined = good.drop(_REJECT)
        rej = both.filter(F.col(_REJECT).isNotNull()).select(_REJECT)
        return _ScanTables(self._view(ev, "events"), self._view(sg, "signals"), self._view(joined, "joined"),
                           ev, sg, rej, both, reader)

    def collect(self, expr) -> pa.Table:
        return to_local(expr.to_pyarrow())

    def fit(self, baseline: Any | None = None, *, features: pa.Table | None = None, label: str = "baseline") -> Calibration:
        if features is None:
            tb = self.tables(baseline)
            features = self._features(tb.joined_t)
            tb.cached.unpersist()
        return super().fit(features=features, label=label)

    def _features(self, joined_t) -> pa.Table:
        from distillguard.features import account_features

        return self.collect(account_features(joined_t, None, config=self.config.features)).sort_by("account_id")

    # -- the scan
    def scan(self, source: Any, *, out_dir: str | Path | None = None, strict: bool = False, fmt: str | None = None,
             mapping: str | None = None, progress: Callable[[str], None] | None = None) -> ScanResult:
        from distillguard.io import InputError

        if mapping is not None:
            raise ValueError("--mapping (CSV input) is not supported by the spark engine; convert to Parquet first")
        if getattr(self, "peer_intel", None) is not None:
            raise ValueError("peer intelligence is not supported by the spark engine yet (docs/scale.md)")
        cfg = self.config
        say = progress or (lambda _msg: None)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        say("reading events and computing request signals on Spark")
        tb = self.tables(source, fmt=fmt)
        ev_t, sg_t, ev, sg = tb.events_t, tb.signals_t, tb.events, tb.signals
        tb.cached.count()  # one pass over the input: parse, signals, cache
        timings["read_signals_s"] = time.perf_counter() - t0
        t = time.perf_counter()
        n_events = ev.count()
        rejected = self._rejects(tb.rejects, out_dir, strict, InputError)
        timings["rejects_s"] = time.perf_counter() - t

        t = time.perf_counter()
        say("computing account features on Spark")
        features = self._features(tb.joined_t)
        timings["features_s"] = time.perf_counter() - t

        # the same scoring and linking code as the DuckDB scan, on the Spark-backed Ibis tables
        calibration, raw, own, evidence, allow_mask, edges, linked = self._score_and_link(
            features, ev_t, sg_t, ev_t, sg_t, timings, say)

        t = time.perf_counter()
        say("building findings")
        result = _Findings(self, ev_t, sg_t, features, edges, linked, raw, own, evidence, allow_mask,
                           calibration).build()
        timings["findings_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        timings["events"] = n_events
        result.timings = timings
        result.rejected = rejected
        result.stages = {"read": tb.reader, "engine": "spark"}
        result.signals = None
        result.events = None
        if self.collect_events and n_events <= self.collect_events:
            result.events = to_local(ev.toArrow()) if hasattr(ev, "toArrow") else None
            result.signals = to_local(sg.toArrow()) if hasattr(sg, "toArrow") else None
        self.last_dataframes = {"events": ev, "signals": sg, "cached": tb.cached}
        if out_dir is not None:
            result.write(out_dir, write_signals=False)
            if cfg.write_signals:
                import pyarrow.parquet as pq

                sg.write.mode("overwrite").parquet(str(Path(out_dir) / "signals.parquet"))
                pq.write_table(features, Path(out_dir) / "features.parquet")
        return result

    def _rejects(self, rej, out_dir, strict: bool, error_type) -> int:
        """Count rejected records; write up to 100,000 to ``out_dir/rejected.jsonl``; with ``strict`` raise
        on the first, naming file, line and field."""
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        if rej is None:
            if out_dir is not None:
                (Path(out_dir) / "rejected.jsonl").write_bytes(b"")
            return 0
        rows = [orjson.loads(r[0]) for r in rej.limit(100_000).collect()]
        n = len(rows) if len(rows) < 100_000 else rej.count()
        if strict and rows:
            r = rows[0]
            raise error_type(f"{r['source']}:{r['line']}: {r['field']}: {r['reason']}", path=r["source"],
                             line=r["line"], field=r["field"], reason=r["reason"])
        if out_dir is not None:
            from distillguard.io import Quarantine

            qpath = Path(out_dir) / "rejected.jsonl"
            qpath.write_bytes(b"")
            with Quarantine(qpath) as q:
                for r in rows:
                    q.add(r["source"], r["line"], r["field"], r["reason"], r["raw"])
        return int(n)
