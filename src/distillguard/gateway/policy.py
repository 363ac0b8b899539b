"""Enforcement policy: YAML loading with line-numbered validation, and first-match rule evaluation.

A policy is a list of rules tried in order; the first rule whose ``when`` conditions all hold decides the
action. See docs/policy.md for the format. :func:`load_policy` raises :class:`PolicyError` naming the file,
line and field of the first problem found.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ACTIONS",
    "NUMERIC_FIELDS",
    "TEXT_FIELDS",
    "Condition",
    "Rule",
    "Policy",
    "PolicyError",
    "Verdict",
    "load_policy",
    "parse_policy",
    "default_policy",
    "DEFAULT_POLICY_YAML",
]

#: Every action a rule may lead to, mildest first (used to pick the stronger of two verdicts).
ACTIONS = ("allow", "log", "canary", "withhold_reasoning", "throttle", "step_up", "block")
_STRENGTH = {a: i for i, a in enumerate(ACTIONS)}

#: Numeric inputs a rule can test (see docs/policy.md for their meaning).
NUMERIC_FIELDS = frozenset({
    "extraction_score",      # this request, from distillguard.signals.score_request
    "benchmark_score",       # this request
    "campaign_risk",         # pushed from the last batch scan (0 when unknown)
    "account_risk",          # max(campaign_risk, online risk)
    "online_risk",           # online blend of extraction share, template concentration and rate
    "extraction_share",      # decayed share of this account's recent requests that demand reasoning
    "template_share",        # decayed share of recent requests using this request's template
    "top_template_share",    # decayed share of the account's most used template
    "distinct_templates",    # templates currently tracked for the account
    "rate_1m",               # decayed requests in the last minute
    "rate_1h",               # decayed requests in the last hour
    "requests_total",        # requests ever seen for the account
})
#: Text inputs a rule can test with a value or a list of values.
TEXT_FIELDS = frozenset({
    "capability", "tier", "account_id", "model", "path", "template_id", "campaign_id", "benchmark",
    "extraction_reason",
})
_BOOL_FIELDS = frozenset({"flagged", "allowlisted", "stream"})

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
        "!=": operator.ne}
_CMP = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")

_TOP_KEYS = {"version", "mode", "default_action", "account", "fail_mode", "upstream", "tiers", "allowlist",
             "withhold", "step_up", "rules"}
_RULE_KEYS = {"name", "when", "any", "action", "reason", "retry_after_s", "replace", "shadow",
              "include_allowlisted"}


class PolicyError(ValueError):
    """An invalid policy. ``str()`` names the source, line and field."""

    def __init__(self, source: str, line: int | None, field_name: str, reason: str):
        self.source, self.line, self.field, self.reason = source, line, field_name, reason
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {field_name}: {reason}")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # one of _OPS, or "in" for text/bool membership
    value: Any

    def holds(self, inputs: dict) -> bool:
        v = inputs.get(self.field)
        if self.op == "in":
            if isinstance(v, bool) or self.field in _BOOL_FIELDS:
                return bool(v) in self.value
            return v in self.value
        if v is None:
            return False
        return _OPS[self.op](float(v), self.value)

    def describe(self) -> str:
        return f"{self.field} {self.op} {self.value!r}"


@dataclass(frozen=True)
class Rule:
    name: str
    action: str
    all_of: tuple[Condition, ...] = ()
    any_of: tuple[tuple[Condition, ...], ...] = ()
    reason: str = ""
    retry_after_s: int = 60
    replace: str = "strip"  # withhold_reasoning: strip | summary
    shadow: bool = False
    include_allowlisted: bool = False
    line: int | None = None

    def matches(self, inputs: dict) -> bool:
        if not all(c.holds(inputs) for c in self.all_of):
            return False
        if self.any_of and not any(all(c.holds(inputs) for c in group) for group in self.any_of):
            return False
        return True


@dataclass(frozen=True)
class Verdict:
    """The outcome of evaluating a policy for one request."""

    action: str
    rule: str
    reason: str
    enforced: bool  # False in shadow mode: the action is logged, the request goes through untouched
    retry_after_s: int = 60
    replace: str = "strip"

    @property
    def effective_action(self) -> str:
        return self.action if self.enforced else "allow"


@dataclass
class Policy:
    mode: str = "shadow"  # shadow | enforce
    default_action: str = "allow"
    rules: list[Rule] = field(default_factory=list)
    tiers: dict[str, str] = field(default_factory=dict)  # account_id -> tier
    allowlist: frozenset[str] = frozenset()
    account_header: str = "x-account-id"
    key_hash_secret_env: str = "DISTILLGUARD_KEY_HASH_SECRET"
    fail_scorer: str = "open"
    fail_store: str = "open"
    upstream_timeout_s: float = 60.0
    upstream_connect_timeout_s: float = 5.0
    stream_idle_timeout_s: float = 30.0
    retries: int = 1
    retry_statuses: frozenset[int] = frozenset({502, 503, 504})
    retry_backoff_s: float = 0.05
    summary_chars: int = 160
    step_up_url: str = ""
    source: str = "<default>"

    def tier_of(self, account_id: str) -> str:
        return self.tiers.get(account_id, "default")

    def evaluate(self, inputs: dict) -> Verdict:
        """First matching rule wins; allowlisted accounts skip rules unless a rule opts in."""
        allowlisted = bool(inputs.get("allowlisted"))
        for rule in self.rules:
            if allowlisted and not rule.include_allowlisted:
                continue
            if rule.matches(inputs):
                enforced = self.mode == "enforce" and not rule.shadow
                return Verdict(rule.action, rule.name, rule.reason or rule.name, enforced, rule.retry_after_s,
                               rule.replace)
        reason = "allowlisted" if allowlisted else "no rule matched"
        return Verdict(self.default_action, "default", reason, self.mode == "enforce")


def stronger(a: str, b: str) -> str:
    return a if _STRENGTH[a] >= _STRENGTH[b] else b


# --------------------------------------------------------------------------------------------- parsing

class _Loader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping and mapping key."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict:
    mapping = _LineDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        if key in mapping:
            raise PolicyError(loader.name, key_node.start_mark.line + 1, str(key), "duplicate key")
        mapping[key] = value
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


class _LineDict(dict):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lines: dict[Any, int] = {}
        self.line: int | None = None


class _LineList(list):
    line: int | None = None


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> list:
    out = _LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class _Ctx:
    def __init__(self, source: str):
        self.source = source

    def err(self, container: Any, key: Any, path: str, reason: str) -> PolicyError:
        line = None
        if isinstance(container, _LineDict):
            line = container.lines.get(key, container.line)
        elif isinstance(container, _LineList):
            line = container.line
        return PolicyError(self.source, line, path, reason)


def _want(ctx: _Ctx, parent: dict, key: str, path: str, kind: type | tuple, default: Any = None) -> Any:
    if key not in parent or parent[key] is None:
        return default
    v = parent[key]
    if isinstance(v, bool) and kind in (int, float, (int, float)):
        raise ctx.err(parent, key, path, f"expected a number, got {v!r}")
    if not isinstance(v, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ctx.err(parent, key, path, f"expected {want}, got {type(v).__name__} {v!r}")
    return v


def _choice(ctx: _Ctx, parent: dict, key: str, path: str, choices: tuple[str, ...], default: str) -> str:
    v = _want(ctx, parent, key, path, str, default)
    if v not in choices:
        raise ctx.err(parent, key, path, f"must be one of {', '.join(choices)}; got {v!r}")
    return v


def _check_keys(ctx: _Ctx, mapping: dict, allowed: set[str], path: str) -> None:
    for k in mapping:
        if k not in allowed:
            raise ctx.err(mapping, k, f"{path}.{k}" if path else str(k),
                          f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _parse_condition(ctx: _Ctx, parent: dict, key: str, path: str) -> Condition:
    value = parent[key]
    if key in NUMERIC_FIELDS:
        if isinstance(value, bool):
            raise ctx.err(parent, key, path, "expected a number or a comparison like '>= 0.8'")
        if isinstance(value, (int, float)):
            return Condition(key, ">=", float(value))
        if isinstance(value, str):
            m = _CMP.match(value)
            if m:
                return Condition(key, m.group(1) or ">=", float(m.group(2)))
        raise ctx.err(parent, key, path, f"expected a number or a comparison like '>= 0.8', got {value!r}")
    if key in TEXT_FIELDS:
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
            raise ctx.err(parent, key, path, "expected a string or a non-empty list of strings")
        return Condition(key, "in", frozenset(str(v) for v in values))
    if key in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ctx.err(parent, key, path, f"expected true or false, got {value!r}")
        return Condition(key, "in", frozenset({value}))
    known = sorted(NUMERIC_FIELDS | TEXT_FIELDS | _BOOL_FIELDS)
    raise ctx.err(parent, key, path, f"unknown field; expected one of {', '.join(known)}")


def _parse_when(ctx: _Ctx, parent: dict, key: str, path: str) -> tuple[Condition, ...]:
    when = parent[key]
    if not isinstance(when, dict) or not when:
        raise ctx.err(parent, key, path, "expected a non-empty mapping of field: condition")
    return tuple(_parse_condition(ctx, when, k, f"{path}.{k}") for k in when)


def _parse_rule(ctx: _Ctx, rules: list, i: int, seen: set[str]) -> Rule:
    raw = rules[i]
    path = f"rules[{i}]"
    if not isinstance(raw, dict):
        raise ctx.err(rules, i, path, f"expected a mapping, got {type(raw).__name__}")
    _check_keys(ctx, raw, _RULE_KEYS, path)
    name = _want(ctx, raw, "name", f"{path}.name", str)
    if not name:
        raise ctx.err(raw, "name", f"{path}.name", "missing")
    if name in seen:
        raise ctx.err(raw, "name", f"{path}.name", f"duplicate rule name {name!r}")
    seen.add(name)
    if "action" not in raw:
        raise ctx.err(raw, "action", f"{path}.action", "missing")
    action = _choice(ctx, raw, "action", f"{path}.action", ACTIONS, "")
    all_of = _parse_when(ctx, raw, "when", f"{path}.when") if "when" in raw else ()
    any_of: tuple = ()
    if "any" in raw:
        groups = raw["any"]
        if not isinstance(groups, list) or not groups:
            raise ctx.err(raw, "any", f"{path}.any", "expected a non-empty list of condition mappings")
        parsed = []
        for j, g in enumerate(groups):
            if not isinstance(g, dict) or not g:
                raise ctx.err(groups, j, f"{path}.any[{j}]", "expected a non-empty mapping of field: condition")
            parsed.append(tuple(_parse_condition(ctx, g, k, f"{path}.any[{j}].{k}") for k in g))
        any_of = tuple(parsed)
    retry = _want(ctx, raw, "retry_after_s", f"{path}.retry_after_s", int, 60)
    if retry < 1:
        raise ctx.err(raw, "retry_after_s", f"{path}.retry_after_s", "must be at least 1")
    replace = _choice(ctx, raw, "replace", f"{path}.replace", ("strip", "summary"), "strip")
    return Rule(
        name=name, action=action, all_of=all_of, any_of=any_of,
        reason=_want(ctx, raw, "reason", f"{path}.reason", str, ""),
        retry_after_s=retry, replace=replace,
        shadow=_want(ctx, raw, "shadow", f"{path}.shadow", bool, False),
        include_allowlisted=_want(ctx, raw, "include_allowlisted", f"{path}.include_allowlisted", bool, False),
        line=getattr(raw, "line", None),
    )


def _number(ctx: _Ctx, parent: dict, key: str, path: str, default: float, minimum: float = 0.0) -> float:
    v = _want(ctx, parent, key, path, (int, float), default)
    if v < minimum:
        raise ctx.err(parent, key, path, f"must be at least {minimum}")
    return float(v)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate policy YAML text; raise :class:`PolicyError` on the first problem."""
    ctx = _Ctx(source)
    loader = _Loader(text)
    loader.name = source
    try:
        doc = loader.get_single_data()
    except PolicyError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(source, mark.line + 1 if mark else None, "<yaml>", str(exc).splitlines()[0]) from None
    finally:
        loader.dispose()
    if doc is None:
        doc = _LineDict()
    if not isinstance(doc, dict):
        raise PolicyError(source, 1, "<document>", f"expected a mapping at the top level, got {type(doc).__name__}")
    _check_keys(ctx, doc, _TOP_KEYS, "")
    version = _want(ctx, doc, "version", "version", int, 1)
    if version != 1:
        raise ctx.err(doc, "version", "version", f"unsupported version {version}; this build reads version 1")
    pol = Policy(source=source)
    pol.mode = _choice(ctx, doc, "mode", "mode", ("shadow", "enforce"), "shadow")
    pol.default_action = _choice(ctx, doc, "default_action", "default_action", ("allow", "log"), "allow")

    acct = _want(ctx, doc, "account", "account", dict, _LineDict())
    _check_keys(ctx, acct, {"header", "key_hash_secret_env"}, "account")
    pol.account_header = _want(ctx, acct, "header", "account.header", str, pol.account_header).lower()
    pol.key_hash_secret_env = _want(ctx, acct, "key_hash_secret_env", "account.key_hash_secret_env", str,
                                    pol.key_hash_secret_env)

    fail = _want(ctx, doc, "fail_mode", "fail_mode", dict, _LineDict())
    _check_keys(ctx, fail, {"scorer", "store"}, "fail_mode")
    pol.fail_scorer = _choice(ctx, fail, "scorer", "fail_mode.scorer", ("open", "closed"), "open")
    pol.fail_store = _choice(ctx, fail, "store", "fail_mode.store", ("open", "closed"), "open")

    up = _want(ctx, doc, "upstream", "upstream", dict, _LineDict())
    _check_keys(ctx, up, {"timeout_s", "connect_timeout_s", "stream_idle_timeout_s", "retries",
                          "retry_statuses", "retry_backoff_s"}, "upstream")
    pol.upstream_timeout_s = _number(ctx, up, "timeout_s", "upstream.timeout_s", 60.0, 0.001)
    pol.upstream_connect_timeout_s = _number(ctx, up, "connect_timeout_s", "upstream.connect_timeout_s", 5.0, 0.001)
    pol.stream_idle_timeout_s = _number(ctx, up, "stream_idle_timeout_s", "upstream.stream_idle_timeout_s",
                                        30.0, 0.001)
    pol.retries = int(_number(ctx, up, "retries", "upstream.retries", 1, 0))
    pol.retry_backoff_s = _number(ctx, up, "retry_backoff_s", "upstream.retry_backoff_s", 0.05, 0)
    statuses = _want(ctx, up, "retry_statuses", "upstream.retry_statuses", list, None)
    if statuses is not None:
        if not all(isinstance(s, int) and not isinstance(s, bool) and 500 <= s <= 599 for s in statuses):
            raise ctx.err(up, "retry_statuses", "upstream.retry_statuses", "expected a list of 5xx status codes")
        pol.retry_statuses = frozenset(statuses)

    tiers = _want(ctx, doc, "tiers", "tiers", dict, _LineDict())
    for tier, members in tiers.items():
        if not isinstance(members, list) or not all(isinstance(m, (str, int)) for m in members):
            raise ctx.err(tiers, tier, f"tiers.{tier}", "expected a list of account ids")
        for m in members:
            pol.tiers[str(m)] = str(tier)
    allow = _want(ctx, doc, "allowlist", "allowlist", list, [])
    if not all(isinstance(m, (str, int)) and not isinstance(m, bool) for m in allow):
        raise ctx.err(doc, "allowlist", "allowlist", "expected a list of account ids")
    pol.allowlist = frozenset(str(m) for m in allow)

    wh = _want(ctx, doc, "withhold", "withhold", dict, _LineDict())
    _check_keys(ctx, wh, {"summary_chars"}, "withhold")
    pol.summary_chars = int(_number(ctx, wh, "summary_chars", "withhold.summary_chars", 160, 0))
    su = _want(ctx, doc, "step_up", "step_up", dict, _LineDict())
    _check_keys(ctx, su, {"url"}, "step_up")
    pol.step_up_url = _want(ctx, su, "url", "step_up.url", str, "")

    rules = _want(ctx, doc, "rules", "rules", list, [])
    seen: set[str] = set()
    pol.rules = [_parse_rule(ctx, rules, i, seen) for i in range(len(rules))]
    return pol


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(p), None, "<file>", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(str(p), None, "<file>", "not UTF-8 text") from None
    return parse_policy(text, str(p))


#: The policy used when ``--policy`` is not given: shadow mode, so it decides and logs but enforces nothing.
DEFAULT_POLICY_YAML = """\
version: 1
mode: shadow            # decide and log every request; enforce nothing
default_action: allow
fail_mode: {scorer: open, store: open}
rules:
  - name: campaign-member
    when: {campaign_risk: ">= 0.9"}
    action: block
    reason: campaign_member
  - name: campaign-suspect-extraction
    when: {campaign_risk: ">= 0.5", extraction_score: ">= 0.5"}
    action: withhold_reasoning
    replace: summary
    reason: suspected_campaign_reasoning_harvest
  - name: sustained-extraction
    when: {extraction_share: ">= 0.6", requests_total: ">= 50", top_template_share: ">= 0.5"}
    action: withhold_reasoning
    reason: sustained_templated_reasoning_extraction
  - name: extraction-burst
    when: {extraction_score: ">= 0.8", rate_1m: ">= 120"}
    action: throttle
    retry_after_s: 30
    reason: extraction_burst
  - name: extraction-request
    when: {extraction_score: ">= 0.8"}
    action: log
    reason: reasoning_extraction_prompt
"""


def default_policy() -> Policy:
    return parse_policy(DEFAULT_POLICY_YAML, "<default policy>")
