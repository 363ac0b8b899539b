"""The labelled reasoning-extraction data sets (data/extraction_train.yaml, data/extraction_test.yaml).

Each YAML lists prompt seeds (``positive``, ``negative``; a ``{q}`` placeholder takes a task question) and
its own task ``questions``. :func:`expand` turns a file into labelled examples. :func:`corpus_negatives`
adds real prompts from the third-party corpora (chat, jailbreaks, system-prompt extraction, red-team,
benchmark questions) as negatives, read in place and split into a train and a test fold by a hash of the
normalised text, so test items are never trained on. Nothing from the corpora is stored in the repository.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

__all__ = ["Example", "load_seeds", "expand", "corpus_negatives", "load_split", "TEST_FOLD"]

#: corpus items whose fold hash (:func:`fold_of`) equals this go to the test fold
TEST_FOLD = 0


def fold_of(text: str) -> int:
    """Fold (0-4) of a corpus prompt: a hash of its normalised text, so a prompt that a corpus holds twice
    (the same jailbreak against two models) can never sit in both the training and the test fold."""
    return zlib.crc32(" ".join(text.lower().split()).encode("utf-8", "surrogatepass")) % 5
#: corpora used as negatives, with the number of items taken per fold (None: all)
NEGATIVE_CORPORA = {
    "oasst": None, "arena_hard": None, "jailbreaks": None, "jailbreakbench": 600,
    "sysprompt_extraction": None, "hh_rlhf": 800, "gsm8k": 300, "mbpp": 200, "mmlu": 300, "math": 200,
}


@dataclass(frozen=True)
class Example:
    system: str | None
    user: str
    label: int
    kind: str  # where it came from, e.g. "seed:positive", "corpus:jailbreaks"


def load_seeds(path: str | Path | None = None, *, name: str = "extraction_test.yaml") -> dict:
    """Read a seeds YAML (default: the packaged file ``name``), checking its fields."""
    if path is None:
        text = resources.files("distillguard.signals").joinpath("data", name).read_text("utf-8")
        where = f"signals/data/{name}"
    else:
        text = Path(path).read_text("utf-8")
        where = str(path)
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("questions"), list):
        raise ValueError(f"{where}: expected a mapping with 'questions', 'positive', 'negative'")
    for i, q in enumerate(doc["questions"]):
        if not isinstance(q, str):
            raise ValueError(f"{where}: questions[{i}]: expected a string (quote it if it contains ': ')")
    for key in ("positive", "negative"):
        for i, item in enumerate(doc.get(key) or []):
            if not isinstance(item, dict) or not isinstance(item.get("user"), str):
                raise ValueError(f"{where}: {key}[{i}]: needs a string field 'user'")
            if item.get("system") is not None and not isinstance(item["system"], str):
                raise ValueError(f"{where}: {key}[{i}].system: expected a string")
    return doc


def expand(doc: dict, start: int = 0) -> list[Example]:
    """Combine each seed with ``per_prompt`` questions (round-robin from question ``start``) into labelled
    examples."""
    qs = doc["questions"]
    per = int(doc.get("per_prompt", 2))
    out: list[Example] = []
    k = start
    for key, label in (("positive", 1), ("negative", 0)):
        for item in doc.get(key) or []:
            user, system = item["user"], item.get("system")
            has_q = "{q}" in user or (system and "{q}" in system)
            for _ in range(per if has_q else 1):
                q = qs[k % len(qs)]
                k += 1
                out.append(Example(system.replace("{q}", q) if system else None, user.replace("{q}", q), label,
                                   f"seed:{key}"))
    return out


def corpus_negatives(fold: str, corpora_dir=None) -> list[Example]:
    """Real prompts from the corpora as negatives (``fold``: ``train`` or ``test``); empty without corpora."""
    from distillguard import corpora as C

    if C.find_corpora_dir(corpora_dir) is None:
        return []
    want_test = fold == "test"
    out = []
    for name, cap in NEGATIVE_CORPORA.items():
        n = 0
        try:
            items = C.iter_items(name, corpora_dir)
            for it in items:
                in_test = fold_of(it.text) == TEST_FOLD
                if in_test != want_test:
                    continue
                out.append(Example(None, it.text, 0, f"corpus:{name}"))
                n += 1
                if cap is not None and n >= (cap if not want_test else max(cap // 4, 1)):
                    break
        except FileNotFoundError:
            continue
    return out


def load_split(split: str, *, with_corpora: bool = True, corpora_dir=None) -> list[Example]:
    """The ``train`` or ``test`` examples: expanded seeds plus (optionally) that fold's corpus negatives."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ex = expand(load_seeds(name=f"extraction_{split}.yaml"))
    if with_corpora:
        ex += corpus_negatives(split, corpora_dir)
    return ex
