"""Execution engines for the scan's relational stages (docs/scale.md).

The feature and linking stages are written once, as Ibis expressions; an *engine* decides where those
expressions run and where the events come from:

* ``duckdb`` (default): events are read on this machine into Arrow, the expressions run in-process on
  DuckDB (:class:`distillguard.detect.Scanner`).
* ``spark``: events are read by Spark from any path it can read (Parquet or JSON lines), per-request
  signals run as Arrow UDFs (``mapInArrow``) on the executors, and the same expressions compile to Spark SQL
  through Ibis's PySpark backend (:class:`distillguard.engine.spark.SparkScanner`). The account graph and
  the community detection run on the driver.

:func:`make_scanner` returns the scanner for an engine name; Spark is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ENGINES", "make_scanner"]

#: engine names accepted by ``distillguard scan --engine``
ENGINES = ("duckdb", "spark")


def make_scanner(engine: str = "duckdb", config: Any = None, allowlist: Any = None, *, spark: Any = None,
                 master: str | None = None, spark_conf: dict | None = None):
    """A scanner for ``engine``. For ``spark``: an existing ``SparkSession`` (``spark``), or ``master``
    (e.g. ``local[2]``, ``yarn``; default: whatever ``spark-submit`` configured, else ``local[*]``) and extra
    ``spark_conf`` settings for a new session."""
    if engine == "duckdb":
        from distillguard.detect import Scanner

        return Scanner(config, allowlist)
    if engine == "spark":
        from .spark import SparkScanner

        return SparkScanner(config, allowlist, spark=spark, master=master, spark_conf=spark_conf)
    raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
