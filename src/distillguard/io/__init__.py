"""Ingestion: readers and adapters that turn logs into :data:`distillguard.schema.EVENT_SCHEMA` batches.

Entry point: :func:`read_events`. Bad records go to a :class:`Quarantine`; ``strict=True`` raises
:class:`InputError` at the first one. See docs/schema.md.
"""

from distillguard.io.quarantine import InputError, Quarantine, ReadSummary, Reject
from distillguard.io.readers import FORMATS, EventStream, detect_format, load_mapping, read_events, rows_to_batch

__all__ = ["read_events", "EventStream", "Quarantine", "Reject", "ReadSummary", "InputError", "FORMATS",
           "detect_format", "load_mapping", "rows_to_batch"]
