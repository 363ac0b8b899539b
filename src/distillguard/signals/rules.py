"""Loading the YAML rules (rules.yaml) into compiled regexes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import yaml

__all__ = ["Rule", "RuleSet", "load_rules", "CAPABILITIES"]

#: capability tags, in tie-break priority order
CAPABILITIES = ("tool_use", "grading", "code", "math", "reasoning", "chat", "other")


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    weight: float
    regex: re.Pattern | None
    #: substrings of which one must be present before the regex runs (empty: always run)
    triggers: tuple[str, ...] = ()
    #: single words matched against the prompt's token set (instead of / besides the regex)
    keywords: frozenset = frozenset()

    def matches(self, low: str, toks: set | frozenset | None = None) -> bool:
        if self.keywords and toks is not None and not self.keywords.isdisjoint(toks):
            return True
        if self.triggers:
            for t in self.triggers:
                if t in low:
                    break
            else:
                return False
            if self.regex is None and not self.keywords:
                return True  # a triggers-only rule
        if self.regex is None:
            return False
        return self.regex.search(low) is not None


@dataclass(frozen=True)
class RuleSet:
    extraction: tuple[Rule, ...]
    #: capability -> its rules (name = capability, weight = vote)
    capability: dict[str, tuple[Rule, ...]]

    @property
    def extraction_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.extraction)

    def extraction_hits(self, low: str) -> list[int]:
        """Indices of extraction rules that match one prepared (lower-cased) text."""
        return [i for i, r in enumerate(self.extraction) if r.matches(low)]

    def capability_scores(self, low: str, toks: set | frozenset) -> dict[str, float]:
        """Capability -> total weight of its rules that fire on the prepared text / its token set."""
        out = {}
        for cap, rules in self.capability.items():
            s = 0.0
            for r in rules:
                if r.matches(low, toks):
                    s += r.weight
            if s:
                out[cap] = s
        return out

    def apply(self, lows: list[str], toks: list[set]) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Rules over many prepared texts: (extraction hits, bool (n, n_rules); capability votes per text)."""
        ext = np.zeros((len(lows), len(self.extraction)), dtype=bool)
        caps = []
        for i, low in enumerate(lows):
            for j in self.extraction_hits(low):
                ext[i, j] = True
            caps.append(self.capability_scores(low, toks[i]))
        return ext, caps


def _compile(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}: invalid regular expression: {exc}") from None


def _rule(r: dict, where: str, name: str | None = None) -> Rule:
    if not isinstance(r, dict):
        raise ValueError(f"{where}: expected a mapping")
    if "weight" not in r:
        raise ValueError(f"{where}: missing field 'weight'")
    if name is None:
        if "name" not in r:
            raise ValueError(f"{where}: missing field 'name'")
        name = str(r["name"])
    if "pattern" not in r and "keywords" not in r and "triggers" not in r:
        raise ValueError(f"{where}: needs 'pattern', 'keywords' or 'triggers'")
    regex = _compile(str(r["pattern"]), f"{where}.pattern") if "pattern" in r else None
    triggers = tuple(str(t).lower() for t in r.get("triggers") or ())
    keywords = frozenset(str(k).lower() for k in r.get("keywords") or ())
    try:
        weight = float(r["weight"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}.weight: not a number: {r['weight']!r}") from None
    return Rule(name, str(r.get("description", "")), weight, regex, triggers, keywords)


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
