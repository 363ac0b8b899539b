"""Per-account phrasing canaries for responses, and attribution of suspect text back to accounts.

Scheme
------
A *slot* is a set of interchangeable phrasings that reasoning text uses often ("therefore / thus / hence",
"it's / it is", "note that / notice that / observe that" ...). Every variant of a slot means the same thing
where it appears, so rewriting one into another preserves the answer. For an account ``a`` and a time bucket
``b`` (``floor(t / bucket_s)``, a week by default) the canary picks, for every slot ``s``, the variant
``HMAC-SHA256(secret, "a|b|s") mod k_s``. :meth:`PhrasingCanary.insert` rewrites every slot phrase found in a
response into that account's variant (never inside code blocks, inline code, LaTeX maths or URLs). The text
reads naturally; only the choice among synonyms carries the mark.

Attribution
-----------
For a suspect corpus (a leaked dataset, or outputs sampled from a suspected student model),
:func:`attribute` counts every slot's variants, giving each slot a share ``f_s(v)`` per variant. For a
hypothesis *(account, bucket)* the statistic is ``T = sum_s f_s(c_s)`` over the slots seen, where ``c_s`` is
that hypothesis' variant. Under the null hypothesis (the text does not derive from that account's canaried
responses) the key is independent of the text, so each ``c_s`` is uniform over the slot's variants and
independent across slots: the exact null distribution of ``T`` is the convolution of those uniform choices
(the shares are quantised to 1/64 so it is computed exactly on an integer grid). It needs no assumption about
how often people naturally write "thus". The p-value is ``P(T >= t_obs)``; ``p_adjusted`` multiplies it by
the number of hypotheses tested (Bonferroni). See docs/canaries.md for the limits (paraphrase, dilution).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import orjson

__all__ = ["SLOTS", "PhrasingCanary", "Attribution", "Hypothesis", "attribute", "slot_counts",
           "read_suspect_texts", "hypotheses_from_audit", "hypotheses_for_accounts", "DEFAULT_BUCKET_S",
           "CanaryError"]

DEFAULT_BUCKET_S = 7 * 86400
_GRID = 20000  # the statistic is quantised onto this many integer steps (the exact null lives on this grid)
_TAU = 0.01  # floor on a slot's spread, so no slot dominates


class CanaryError(ValueError):
    """Bad canary configuration or unreadable suspect input (the message names the file and line)."""


#: slots of answer-preserving interchangeable phrasings; no phrase belongs to two slots
SLOTS: tuple[tuple[str, ...], ...] = (
    ("therefore", "thus", "hence"),
    ("note that", "notice that", "observe that"),
    ("which means", "which implies", "which tells us"),
    ("in total", "altogether", "in all"),
    ("for example", "for instance"),
    ("in other words", "that is to say", "put differently"),
    ("is equal to", "equals"),
    ("calculate", "compute"),
    ("verify", "confirm", "double-check"),
    ("finally", "lastly"),
    ("approximately", "roughly"),
    ("we need to", "we have to", "we must"),
    ("first of all", "to begin with", "to start with"),
    ("in addition", "additionally", "moreover", "furthermore"),
    ("as a result", "consequently", "as a consequence"),
    ("for this reason", "because of this", "due to this"),
    ("it follows that", "we conclude that", "we deduce that"),
    ("recall that", "remember that"),
    ("clearly", "obviously", "evidently"),
    ("basically", "essentially"),
    ("similarly", "likewise"),
    ("in summary", "to summarize", "to sum up", "in short"),
    ("in particular", "specifically"),
    ("keep in mind", "bear in mind"),
    ("we get", "we obtain"),
    ("plug in", "substitute"),
    ("rewrite", "re-express"),
    ("let's", "let us"),
    ("it's", "it is"),
    ("that's", "that is"),
    ("there's", "there is"),
    ("we'll", "we will"),
    ("we're", "we are"),
    ("don't", "do not"),
    ("doesn't", "does not"),
    ("isn't", "is not"),
    ("aren't", "are not"),
    ("can't", "cannot"),
    ("won't", "will not"),
    ("in order to", "so as to"),
    ("in fact", "as a matter of fact"),
    ("to be precise", "to be exact"),
    ("on the other hand", "by contrast"),
    ("as expected", "as anticipated"),
    ("at first glance", "at first sight"),
    ("i'll", "i will"),
    ("i'm", "i am"),
    ("you're", "you are"),
    ("they're", "they are"),
    ("here's", "here is"),
    ("didn't", "did not"),
    ("wasn't", "was not"),
    ("weren't", "were not"),
    ("hasn't", "has not"),
    ("haven't", "have not"),
    ("wouldn't", "would not"),
    ("shouldn't", "should not"),
    ("couldn't", "could not"),
)

_VARIANT_SLOT: dict[str, tuple[int, int]] = {}
for _s, _vs in enumerate(SLOTS):
    for _i, _v in enumerate(_vs):
        if _v in _VARIANT_SLOT:
            raise AssertionError(f"phrase {_v!r} is in two slots")
        _VARIANT_SLOT[_v] = (_s, _i)


#: contractions and their expansions only swap mid-sentence ("I know what it is." cannot become "what it's.")
_MID_SENTENCE = {v for vs in SLOTS for v in vs if "'" in v} | {
    v for vs in SLOTS if any("'" in x for x in vs) for v in vs}
#: idioms where a swap would read wrongly
_NOT_BEFORE = {"we get": r"(?!\s+(?:rid|to|used|away|back|along|over|into)\b)", "plug in": r"(?!\s*[.,;!?])"}
# "it's been" is "it has been": the 's contractions never swap before a participle that needs "has"
_NOT_BEFORE.update({p: r"(?!\s+(?:been|got|gotten|had)\b)" for p in ("it's", "that's", "there's", "here's")})


def _phrase_pattern(p: str) -> str:
    parts = [re.escape(w).replace("'", "['\u2019]") for w in p.split(" ")]
    pat = r"\s+".join(parts)
    if p in _MID_SENTENCE:
        pat += r"(?=\s+[\w$\\(])"
    return pat + _NOT_BEFORE.get(p, "")


# longest phrases first, so "that is to say" wins over "that is" at the same position
_PHRASE_RE = re.compile(
    r"(?<![\w'\u2019-])(" + "|".join(_phrase_pattern(p) for p in sorted(_VARIANT_SLOT, key=len, reverse=True))
    + r")(?![\w'\u2019-])", re.IGNORECASE)
# spans never rewritten: fenced and inline code, display and inline maths, URLs
_PROTECT_RE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]*`|\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)"
                         r"|\$[^$\n]+\$|https?://\S+", re.DOTALL)


def _key(match_text: str) -> str:
    return re.sub(r"\s+", " ", match_text.lower().replace("\u2019", "'"))


def _protected(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _PROTECT_RE.finditer(text)]


def _iter_slot_matches(text: str) -> Iterator[tuple[re.Match, int, int]]:
    spans = _protected(text)
    j = 0
    for m in _PHRASE_RE.finditer(text):
        while j < len(spans) and spans[j][1] <= m.start():
            j += 1
        if j < len(spans) and spans[j][0] < m.end():
            continue  # inside code, maths or a URL
        s, i = _VARIANT_SLOT[_key(m.group(1))]
        yield m, s, i


def _match_case(src: str, repl: str) -> str:
    if "\u2019" in src:
        repl = repl.replace("'", "\u2019")
    if src.isupper() and len(src) > 1:
        return repl.upper()
    if src[:1].isupper():
        return repl[:1].upper() + repl[1:]
    return repl


def _bucket(now: float, bucket_s: int) -> int:
    return int(math.floor(now / bucket_s))


@dataclass
class PhrasingCanary:
    """The production canary inserter (``distillguard.gateway.canary.CanaryInserter``).

    ``secret`` is the provider's canary secret (keep it out of the repo: the gateway reads
    ``DISTILLGUARD_CANARY_SECRET``). ``bucket_s`` is how long one account keeps the same variants.
    """

    secret: bytes | str
    bucket_s: int = DEFAULT_BUCKET_S
    #: the slots in use (default: :data:`SLOTS`); both sides of an attribution must use the same list
    slots: tuple[tuple[str, ...], ...] = SLOTS
    #: the gateway may call :meth:`insert` on every streamed text delta (it is stateless and idempotent)
    streaming: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.secret, str):
            self.secret = self.secret.encode()
        if not self.secret or len(self.secret) < 8:
            raise CanaryError("canary secret: at least 8 bytes are needed")
        if int(self.bucket_s) <= 0:
            raise CanaryError(f"canary bucket_s: must be > 0, got {self.bucket_s}")
        if self.slots is not SLOTS:
            raise CanaryError("custom slot lists are not supported by the matcher; use SLOTS")
        self._codes = lru_cache(maxsize=8192)(self._compute_codes)

    def _compute_codes(self, account_id: str, bucket: int) -> tuple[int, ...]:
        out = []
        for s, vs in enumerate(self.slots):
            d = hmac.new(self.secret, f"{account_id}|{bucket}|{s}".encode(), hashlib.sha256).digest()
            out.append(int.from_bytes(d[:8], "big") % len(vs))
        return tuple(out)

    def codes(self, account_id: str, bucket: int) -> tuple[int, ...]:
        """The variant index chosen for every slot, for this account and time bucket."""
        return self._codes(account_id, int(bucket))

    def bucket_of(self, now: float) -> int:
        return _bucket(now, int(self.bucket_s))

    def insert(self, account_id: str, response_text: str, now: float) -> str:
        """``response_text`` with every slot phrase rewritten to this account's variant for ``now``."""
        if not response_text:
            return response_text
        codes = self.codes(account_id, self.bucket_of(now))
        out: list[str] = []
        last = 0
        for m, s, i in _iter_slot_matches(response_text):
            want = codes[s]
            if want == i:
                continue
            out.append(response_text[last:m.start(1)])
            out.append(_match_case(m.group(1), self.slots[s][want]))
            last = m.end(1)
        if not out:
            return response_text
        out.append(response_text[last:])
        return "".join(out)


# ------------------------------------------------------------------------------------------- attribution
def slot_counts(texts: Iterable[str]) -> np.ndarray:
    """``counts[s, v]``: occurrences of slot ``s``'s variant ``v`` in ``texts``."""
    kmax = max(len(v) for v in SLOTS)
    counts = np.zeros((len(SLOTS), kmax), dtype=np.int64)
    for t in texts:
        if t:
            for _m, s, i in _iter_slot_matches(t):
                counts[s, i] += 1
    return counts


@dataclass(frozen=True)
class Hypothesis:
    account_id: str
    bucket: int


@dataclass
class Attribution:
    """One tested hypothesis: how many slots matched and how surprising that is."""

    account_id: str
    bucket: int
    bucket_start: str
    statistic: float  # sum over seen slots of the share of that account's variant
    expected: float  # its mean under the null hypothesis
    slots_seen: int
    slots_matched: int  # seen slots where the account's variant is the most used one
    p_value: float
    p_adjusted: float  # Bonferroni over all hypotheses tested
    significant: bool

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("statistic", "expected"):
            d[k] = round(d[k], 4)
        return d


@dataclass
class AttributionReport:
    n_texts: int
    n_slot_occurrences: int
    slots_seen: int
    hypotheses: int
    alpha: float
    results: list[Attribution] = field(default_factory=list)  # sorted by p-value

    def significant(self) -> list[Attribution]:
        return [r for r in self.results if r.significant]

    def to_dict(self, top: int | None = None) -> dict:
        res = self.results if top is None else self.results[:top]
        return {"n_texts": self.n_texts, "n_slot_occurrences": self.n_slot_occurrences,
                "slots_seen": self.slots_seen, "hypotheses": self.hypotheses, "alpha": self.alpha,
                "correction": "bonferroni", "results": [r.to_dict() for r in res]}


def _slot_scores(counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Integer per-(slot, variant) scores and their scale. A slot's score of a variant is its share of the
    slot's occurrences, centred and divided by the spread of the shares (plus a small-sample term), so a
    slot whose natural usage is balanced and well sampled weighs more than one seen once. The weights
    depend on the suspect text only, never on a key, so the null distribution stays exact."""
    totals = counts.sum(axis=1)
    seen = totals > 0
    g = np.zeros(counts.shape, float)
    for s in np.nonzero(seen)[0]:
        k = len(SLOTS[s])
        f = counts[s, :k] / totals[s]
        var = f.var() + 1.0 / (4.0 * totals[s]) + _TAU
        g[s, :k] = (f - f.min()) / var
    span = sum(g[s].max() for s in np.nonzero(seen)[0])
    scale = _GRID / span if span > 0 else 1.0
    return np.rint(g * scale).astype(np.int64), scale


def _null_tail(q: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Survival function P(T >= t) for t = 0.. on the integer grid; ``q[s, v]`` quantised shares."""
    dist = np.ones(1)
    for s in np.nonzero(seen)[0]:
        k = len(SLOTS[s])
        vals = q[s, :k]
        new = np.zeros(dist.size + int(vals.max()))
        for v in vals:
            new[int(v):int(v) + dist.size] += dist / k
        dist = new
    tail = np.cumsum(dist[::-1])[::-1]
    return np.minimum(tail, 1.0)


def attribute(texts: Iterable[str] | np.ndarray, hypotheses: Sequence[Hypothesis], secret: bytes | str,
              *, bucket_s: int = DEFAULT_BUCKET_S, alpha: float = 0.01) -> AttributionReport:
    """Test suspect ``texts`` (or precomputed :func:`slot_counts`) for each hypothesis' canary."""
    if not 0 < alpha < 1:
        raise CanaryError(f"alpha: must be in (0, 1), got {alpha}")
    canary = PhrasingCanary(secret, bucket_s)
    n_texts = -1
    if isinstance(texts, np.ndarray):
        counts = texts
    else:
        texts = list(texts)
        n_texts = len(texts)
        counts = slot_counts(texts)
    totals = counts.sum(axis=1)
    seen = totals > 0
    q, scale = _slot_scores(counts)
    tail = _null_tail(q, seen)
    expected = float(sum(q[s, :len(SLOTS[s])].mean() for s in np.nonzero(seen)[0])) / scale
    top = counts.argmax(axis=1)
    seen_idx = np.nonzero(seen)[0]
    n_h = max(1, len(hypotheses))
    results = []
    for h in hypotheses:
        codes = np.asarray(canary.codes(h.account_id, h.bucket))
        t_obs = int(q[seen_idx, codes[seen_idx]].sum()) if seen_idx.size else 0
        p = float(tail[t_obs]) if t_obs < tail.size else 0.0
        p = 1.0 if not seen_idx.size else max(p, 0.0)
        pa = min(1.0, p * n_h)
        start = datetime.fromtimestamp(h.bucket * bucket_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        results.append(Attribution(h.account_id, int(h.bucket), start, float(t_obs / scale), float(expected),
                                   int(seen_idx.size), int((top[seen_idx] == codes[seen_idx]).sum()), float(p),
                                   float(pa), bool(pa < alpha)))
    results.sort(key=lambda r: (r.p_value, -r.statistic, r.account_id, r.bucket))
    return AttributionReport(n_texts, int(totals.sum()), int(seen_idx.size), len(hypotheses), alpha, results)


# ------------------------------------------------------------------------------------------- inputs
_TEXT_FIELDS = ("text", "completion", "response", "output", "content", "answer", "reasoning",
                "reasoning_content", "solution", "generated_text", "chosen")


def _texts_of(obj, depth: int = 0) -> Iterator[str]:
    if depth > 4:
        return
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k in _TEXT_FIELDS:
            if k in obj:
                yield from _texts_of(obj[k], depth + 1)
        for k in ("messages", "conversations"):
            turns = obj.get(k)
            for m in turns if isinstance(turns, list) else []:
                if isinstance(m, dict) and m.get("role", m.get("from", "assistant")) in ("assistant", "gpt",
                                                                                         "model"):
                    yield from _texts_of(m.get("content", m.get("value", m.get("message"))), depth + 1)
    elif isinstance(obj, list):
        for x in obj:
            yield from _texts_of(x, depth + 1)


def read_suspect_texts(path: str | Path, max_bytes: int = 2 << 30) -> list[str]:
    """Texts of a suspect file: JSONL (``.jsonl``/``.jsonl.gz``; text, completion, response, output,
    content, answer, reasoning fields or assistant turns of ``messages``) or plain text (one document)."""
    from distillguard.intel.stix import checked_size

    p = Path(path)
    checked_size(p, max_bytes, CanaryError)
    opener = gzip.open if p.name.endswith(".gz") else open
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    try:
        with opener(p, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise CanaryError(f"{p}: cannot read: {exc}") from None
    if not name.endswith((".jsonl", ".ndjson", ".json")):
        return [data.decode("utf-8", errors="replace")]
    out: list[str] = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CanaryError(f"{p}:{n}: not valid JSON: {exc}") from None
        texts = list(_texts_of(obj))
        if not texts:
            raise CanaryError(f"{p}:{n}: no text field (expected one of {', '.join(_TEXT_FIELDS)} or messages)")
        out.append("\n".join(texts))
    return out


def hypotheses_for_accounts(accounts: Iterable[str], since: float, until: float,
                            bucket_s: int = DEFAULT_BUCKET_S) -> list[Hypothesis]:
    """Every (account, bucket) with the bucket overlapping ``[since, until]`` (epoch seconds)."""
    if until < since:
        raise CanaryError("until is before since")
    b0, b1 = _bucket(since, bucket_s), _bucket(until, bucket_s)
    if (b1 - b0 + 1) * 1 > 5000:
        raise CanaryError(f"{b1 - b0 + 1} time buckets per account: narrow --since/--until or raise --bucket-s")
    return [Hypothesis(a, b) for a in dict.fromkeys(accounts) for b in range(b0, b1 + 1)]


def hypotheses_from_audit(state_path: str | Path, bucket_s: int = DEFAULT_BUCKET_S) -> list[Hypothesis]:
    """The (account, bucket) pairs the gateway actually canaried, from its audit log (action ``canary``,
    enforced)."""
    from distillguard.gateway.state import read_audit

    t = read_audit(state_path)
    seen: dict[Hypothesis, None] = {}
    for a, ts, act, enf in zip(t.column("account_id").to_pylist(), t.column("timestamp").to_pylist(),
                               t.column("action").to_pylist(), t.column("enforced").to_pylist()):
        if act == "canary" and enf:
            seen[Hypothesis(a, _bucket(ts.timestamp(), bucket_s))] = None
    return list(seen)
