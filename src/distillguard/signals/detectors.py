"""The per-request signals as :class:`distillguard.api.Detector` classes (documented in docs/detectors.md).

Each reads ``system_text`` and ``user_text`` (and ``n_tools`` for the capability tag) from an events table
and returns one row per input row with its outputs and an ``explanation``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.api import Detector, register

from .benchmark import BenchmarkIndex
from .core import analyse

__all__ = ["ExtractionDetector", "CapabilityDetector", "TemplateDetector", "BenchmarkMatchDetector"]


def _texts(batch: pa.Table | pa.RecordBatch) -> tuple[list, list]:
    if "user_text" not in batch.column_names:
        raise ValueError("input lacks column 'user_text'")
    user = pc.fill_null(batch.column("user_text"), "").to_pylist()
    system = batch.column("system_text").to_pylist() if "system_text" in batch.column_names else [None] * len(user)
    return system, user


def _analyse(batch, index=None):
    system, user = _texts(batch)
    return analyse(system, user, benchmark_index=index or BenchmarkIndex.empty())


@register
class ExtractionDetector(Detector):
    """Probability that a request demands the model's hidden or full reasoning for harvesting.

    Config: ``threshold`` (default 0.5), the score from which a request counts as extraction in
    ``baseline_rate_``. Fit learns ``baseline_rate_``: share of baseline requests at or above the threshold.
    """

    name = "extraction"
    level = "request"
    outputs = ("extraction_score",)
    inputs = ("system_text", "user_text")

    def __init__(self, threshold: float = 0.5):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold

    def fit(self, baseline):
        a = _analyse(baseline)
        self.baseline_rate_ = float(np.mean(a.extraction_score >= self.threshold)) if len(a.text_len) else 0.0
        return self

    def score(self, batch):
        a = _analyse(batch)
        return pa.table({"extraction_score": pa.array(a.extraction_score, pa.float64()),
                         "explanation": pa.array(a.extraction_reason, pa.string())})


@register
class CapabilityDetector(Detector):
    """Capability tag (math, code, reasoning, tool_use, grading, chat, other) from the capability rules,
    the benchmark match and the presence of tools; ``capability_score`` is the tag's share of the rule
    votes (1.0 for a single clear tag, 0 for the fallback tags chat/other with no vote).

    Config: none. Fit learns ``baseline_mix_``: share of each tag in the baseline traffic."""

    name = "capability"
    level = "request"
    outputs = ("capability", "capability_score")
    inputs = ("system_text", "user_text", "n_tools")

    def __init__(self):
        pass

    def _tags(self, batch):
        from .rules import CAPABILITIES

        system, user = _texts(batch)
        tools = (pc.fill_null(batch.column("n_tools"), 0).to_numpy(zero_copy_only=False) > 0
                 if "n_tools" in batch.column_names else np.zeros(len(user), bool))
        a = analyse(system, user, benchmark_index=BenchmarkIndex.empty())
        tags, conf, why = [], [], []
        for i in range(len(user)):
            votes = {c: float(v) for c, v in zip(CAPABILITIES, a.cap_votes[i]) if v > 0}
            tag = "tool_use" if tools[i] else a.capability[i]
            total = sum(votes.values())
            if tools[i]:
                conf.append(1.0)
                why.append(f"{tag}: request declares tools")
            elif total:
                conf.append(votes.get(tag, 0.0) / total)
                why.append(f"{tag}: rule votes " + ", ".join(f"{k}={v:g}" for k, v in sorted(votes.items())))
            else:
                conf.append(0.0)
                why.append(f"{tag}: no capability rule matched")
            tags.append(tag)
        return tags, conf, why

    def fit(self, baseline):
        tags, _, _ = self._tags(baseline)
        c = Counter(tags)
        self.baseline_mix_ = {k: v / max(len(tags), 1) for k, v in sorted(c.items())}
        return self

    def score(self, batch):
        tags, conf, why = self._tags(batch)
        return pa.table({"capability": pa.array(tags, pa.string()),
                         "capability_score": pa.array(conf, pa.float64()),
                         "explanation": pa.array(why, pa.string())})


@register
class TemplateDetector(Detector):
    """Prompt-template fingerprints: ``template_id`` (hash of the masked prompt: numbers, names, quoted
    spans and any matched benchmark item masked) and ``template_sig`` (64-bit SimHash of it, for
    paraphrased templates). ``template_novelty`` is 1 for a template never seen in the baseline and
    1/(1+count) otherwise.

    Config: none. Fit learns ``baseline_counts_``: template id -> number of baseline requests."""

    name = "template"
    level = "request"
    outputs = ("template_id", "template_sig", "template_novelty")
    inputs = ("user_text",)

    def __init__(self):
        pass

    def fit(self, baseline):
        a = _analyse(baseline)
        self.baseline_counts_ = dict(Counter(a.template_id))
        return self

    def score(self, batch):
        a = _analyse(batch)
        counts = getattr(self, "baseline_counts_", {})
        nov = [1.0 / (1 + counts.get(t, 0)) for t in a.template_id]
        why = [f"template {t} seen {counts.get(t, 0)} times in baseline" for t in a.template_id]
        return pa.table({"template_id": pa.array(a.template_id, pa.string()),
                         "template_sig": pa.array(a.template_sig, pa.int64()),
                         "template_novelty": pa.array(nov, pa.float64()),
                         "explanation": pa.array(why, pa.string())})


@register
class BenchmarkMatchDetector(Detector):
    """Near-duplicate match of the prompt against public task sets (gsm8k, math, humaneval, mbpp, mmlu),
    surviving wrapper text and small edits.

    Config: ``corpora_dir`` (folder of the corpora; default: found as in distillguard.corpora; none found
    gives an empty index and null matches), ``threshold`` (share of an item's shingles that must be
    present, default 0.5). Fit learns ``baseline_match_rate_``: share of baseline requests that match."""

    name = "benchmark_match"
    level = "request"
    outputs = ("benchmark", "benchmark_item", "benchmark_score")
    inputs = ("user_text",)

    def __init__(self, corpora_dir: str | None = None, threshold: float = 0.5):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.corpora_dir = corpora_dir
        self.threshold = threshold
        self._index: BenchmarkIndex | None = None

    def _get_index(self) -> BenchmarkIndex:
        if self._index is None:
            self._index = BenchmarkIndex.from_corpora(self.corpora_dir, threshold=self.threshold)
        return self._index

    def fit(self, baseline):
        a = _analyse(baseline, self._get_index())
        self.baseline_match_rate_ = (float(np.mean([b is not None for b in a.benchmark]))
                                     if a.benchmark else 0.0)
        return self

    def score(self, batch):
        a = _analyse(batch, self._get_index())
        why = [f"matches {it} ({s:.2f} of its shingles)" if b else "no public task-set match"
               for b, it, s in zip(a.benchmark, a.benchmark_item, a.benchmark_score)]
        return pa.table({"benchmark": pa.array(a.benchmark, pa.string()),
                         "benchmark_item": pa.array(a.benchmark_item, pa.string()),
                         "benchmark_score": pa.array(a.benchmark_score, pa.float64()),
                         "explanation": pa.array(why, pa.string())})
