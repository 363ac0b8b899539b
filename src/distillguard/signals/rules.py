"""Loading the YAML rules (rules.yaml) and applying them to many texts at once.

Patterns are RE2 regular expressions (Arrow's engine: linear time, ASCII ``\\w``/``\\b``, ``\\p{L}`` for
Unicode classes) run over the lower-cased prepared text with ``pyarrow.compute.match_substring_regex``, one
vectorised pass per rule. ``keywords`` become one ``\\b(?:...)\\b`` pattern; ``triggers`` alone (no pattern)
fire when any of the substrings is present.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

__all__ = ["Rule", "RuleSet", "load_rules", "parse_rules", "CAPABILITIES"]

#: capability tags, in tie-break priority order
CAPABILITIES = ("tool_use", "grading", "code", "math", "reasoning", "chat", "other")


@lru_cache(maxsize=None)
def _compiled(pattern: str):
    from .text import small_regex

    return small_regex(pattern)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    weight: float
    #: the RE2 pattern the rule runs
    pattern: str

    def hits(self, texts: pa.Array | list[str]) -> np.ndarray:
        """Boolean array: which texts the rule matches (Arrow's RE2 for an Arrow array; for a short list of
        texts the pattern compiled once with the ``regex`` module in ASCII mode, which finds the same
        matches for these patterns, since Arrow would recompile the pattern on every call)."""
        if isinstance(texts, list):
            rx = _compiled(self.pattern)
            return np.array([rx.search(t) is not None for t in texts], dtype=bool)
        if len(texts) == 0:
            return np.zeros(0, bool)
        m = pc.match_substring_regex(texts, self.pattern)
        return pc.fill_null(m, False).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class RuleSet:
    extraction: tuple[Rule, ...]
    #: capability -> its rules (weight = vote)
    capability: dict[str, tuple[Rule, ...]]

    @property
    def extraction_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.extraction)

    def apply(self, texts: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(extraction hits, bool (n, n_rules); capability votes, float (n, len(CAPABILITIES)))."""
        n = len(texts)
        caps = [(CAPABILITIES.index(cap), r) for cap, rules in self.capability.items() for r in rules]
        every = list(self.extraction) + [r for _, r in caps]
        if isinstance(texts, list) or n < _GROUP_MIN:
            hits = [r.hits(texts) for r in every]
        else:
            hits = _batch_hits(every, texts)
        ext = np.zeros((n, len(self.extraction)), dtype=bool)
        for j in range(len(self.extraction)):
            ext[:, j] = hits[j]
        votes = np.zeros((n, len(CAPABILITIES)), dtype=np.float64)
        for (k, r), h in zip(caps, hits[len(self.extraction):]):
            votes[:, k] += r.weight * h
        return ext, votes


_PARALLEL_MIN = 5000
_THREADS = 2
#: batches from this size run rules in groups: one RE2 pass with the group's patterns as alternatives finds
#: the texts any of them matches, and only those are searched rule by rule (a text matches the alternation
#: exactly when it matches one of its members, so the hits are the same)
_GROUP_MIN = 1000
#: DFA memory of the RE2::Set (generous: the set must not run out, though a text on which it does is
#: detected and matched rule by rule)
_SET_MAX_MEM = 256 << 20
_GROUP_SIZE = 4
#: longer patterns run alone: combined with others they can exhaust RE2's DFA memory (then it falls back
#: to a far slower engine)
_GROUP_MAX_LEN = 500


def _groupable(pattern: str) -> bool:
    return len(pattern) <= _GROUP_MAX_LEN


@lru_cache(maxsize=64)
def _groups(patterns: tuple[str, ...]) -> list[tuple[str | None, tuple[int, ...]]]:
    """(combined pattern or None for a single rule, member indices) covering every pattern once."""
    out: list[tuple[str | None, tuple[int, ...]]] = []
    run: list[int] = []

    def flush():
        if len(run) == 1:
            out.append((None, (run[0],)))
        elif run:
            out.append(("|".join(f"(?:{patterns[j]})" for j in run), tuple(run)))
        run.clear()

    for j, p in enumerate(patterns):
        if not _groupable(p):
            out.append((None, (j,)))
            continue
        run.append(j)
        if len(run) == _GROUP_SIZE:
            flush()
    flush()
    return out


def _batch_hits(every: list[Rule], texts: pa.Array) -> list[np.ndarray]:
    """Hits of every rule over many texts: two RE2::Set passes per text when google-re2 is installed (the
    same engine and syntax as Arrow's kernels), else Arrow passes over groups of rules."""
    patterns = tuple(r.pattern for r in every)
    # two sets (halves of the rules): a DFA over fewer patterns has far fewer states to build, and the
    # states are built lazily as new texts arrive
    half = (len(patterns) + 1) // 2
    parts = [(0, half), (half, len(patterns))] if len(patterns) > 1 else [(0, len(patterns))]
    sets = [_rule_set(patterns[a:b]) for a, b in parts]
    if all(s is not None for s in sets):
        out: list[np.ndarray] = []
        for rset, (a, b) in zip(sets, parts):
            found = _set_hits(rset, b - a, texts)
            missed = np.flatnonzero(~found[:, -1])  # the sentinel always matches: its absence is a DFA failure
            if len(missed):
                sub = texts.take(pa.array(missed))
                for j in range(a, b):
                    found[missed, j - a] = every[j].hits(sub)
            out += [found[:, j] for j in range(b - a)]
        return out
    groups = _groups(patterns)
    if len(texts) >= _PARALLEL_MIN:
        # Arrow's regex kernels release the GIL: run the groups on both cores
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            results = list(pool.map(lambda g: _group_hits(every, g, texts), groups))
    else:
        results = [_group_hits(every, g, texts) for g in groups]
    hits: list = [None] * len(every)
    for (_, members), part in zip(groups, results):
        for j, h in zip(members, part):
            hits[j] = h
    return hits


@lru_cache(maxsize=16)
def _rule_set(patterns: tuple[str, ...]):
    """The patterns compiled into one ``re2.Set`` (google-re2) plus an empty sentinel pattern, or None when
    google-re2 is missing or the set does not compile."""
    try:
        import re2
    except ImportError:
        return None
    opt = re2.Options()
    opt.max_mem = _SET_MAX_MEM
    opt.log_errors = False
    rset = re2.Set.SearchSet(opt)
    try:
        for p in patterns:
            rset.Add(p)
        rset.Add("")
        rset.Compile()
    except re2.error:
        return None
    return rset


def _set_hits(rset, n_patterns: int, texts: pa.Array) -> np.ndarray:
    """bool (n, n_patterns + 1): which patterns of the set each text matches (last column: the sentinel;
    False where the set's DFA gave up on the text, which then needs the per-rule path)."""
    from .text import _string_buffers

    off, data = _string_buffers(texts)
    view = memoryview(data)
    match = rset._set.Match  # the binding's method: no per-call str/bytes checks
    lo, hi = off[:-1].tolist(), off[1:].tolist()
    found = [match(view[a:b]) for a, b in zip(lo, hi)]
    lens = np.fromiter((len(m) for m in found), np.int64, len(found))
    out = np.zeros((len(found), n_patterns + 1), bool)
    flat = [j for m in found for j in m]
    if flat:
        out[np.repeat(np.arange(len(found)), lens), np.asarray(flat, np.int64)] = True
    return out


def _group_hits(every: list[Rule], group: tuple[str | None, tuple[int, ...]], texts: pa.Array) -> list[np.ndarray]:
    combined, members = group
    if combined is None:
        return [every[members[0]].hits(texts)]
    any_hit = pc.fill_null(pc.match_substring_regex(texts, combined), False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(any_hit)
    out = []
    sub = texts.take(pa.array(rows)) if len(rows) else None
    for j in members:
        h = np.zeros(len(texts), bool)
        if sub is not None:
            h[rows] = every[j].hits(sub)
        out.append(h)
    return out

_RE2_META = set("\\.^$|?*+()[]{}")


def _literal(s: str) -> str:
    return "".join("\\" + c if c in _RE2_META else ("\\n" if c == "\n" else c) for c in s)


def _check_re2(pattern: str, where: str) -> str:
    try:
        pc.match_substring_regex(pa.array([""]), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{where}: invalid regular expression (RE2): {exc}") from None
    return pattern


def _rule(r: dict, where: str, name: str | None = None) -> Rule:
    if not isinstance(r, dict):
        raise ValueError(f"{where}: expected a mapping")
    if "weight" not in r:
        raise ValueError(f"{where}: missing field 'weight'")
    if name is None:
        if "name" not in r:
            raise ValueError(f"{where}: missing field 'name'")
        name = str(r["name"])
    alts = []
    if "pattern" in r:
        alts.append(_check_re2(str(r["pattern"]), f"{where}.pattern"))
    if r.get("keywords"):
        kws = sorted({str(k).lower() for k in r["keywords"]}, key=lambda k: (-len(k), k))
        alts.append(r"\b(?:" + "|".join(_literal(k) for k in kws) + r")\b")
    if r.get("triggers") and "pattern" not in r and not r.get("keywords"):
        alts.append("|".join(_literal(str(t).lower()) for t in r["triggers"]))
    if not alts:
        raise ValueError(f"{where}: needs 'pattern', 'keywords' or 'triggers'")
    try:
        weight = float(r["weight"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}.weight: not a number: {r['weight']!r}") from None
    pattern = alts[0] if len(alts) == 1 else "|".join(f"(?:{a})" for a in alts)
    return Rule(name, str(r.get("description", "")), weight, _check_re2(pattern, where))


def parse_rules(doc: dict, source: str = "rules.yaml") -> RuleSet:
    """Validate and compile a rules document; errors name the file and the rule at fault."""
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: expected a mapping with 'extraction' and 'capability'")
    ext = [_rule(r, f"{source}: extraction[{i}]") for i, r in enumerate(doc.get("extraction") or [])]
    names = [r.name for r in ext]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: duplicate extraction rule names")
    caps = {}
    for cap, rules in (doc.get("capability") or {}).items():
        if cap not in CAPABILITIES:
            raise ValueError(f"{source}: capability.{cap}: unknown capability (known: {', '.join(CAPABILITIES)})")
        caps[cap] = tuple(_rule(r, f"{source}: capability.{cap}[{j}]", cap) for j, r in enumerate(rules))
    return RuleSet(tuple(ext), caps)


@lru_cache(maxsize=1)
def load_rules() -> RuleSet:
    """The packaged rules."""
    text = resources.files("distillguard.signals").joinpath("rules.yaml").read_text("utf-8")
    return parse_rules(yaml.safe_load(text))
