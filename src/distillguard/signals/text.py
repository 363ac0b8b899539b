"""Text primitives shared by every per-request signal: normalisation, de-obfuscation, masking, tokens and
stable 64-bit hashes (numpy-vectorised n-grams and SimHash).

Hashes must not depend on the Python process (``hash()`` is salted), so tokens are hashed with CRC-32 and
mixed to 64 bits with the SplitMix64 finaliser; the benchmark index cache and template ids stay valid across
runs and machines.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
import zlib
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "prepare",
    "deobfuscate",
    "mask",
    "tokens",
    "token_hashes",
    "hash_tokens",
    "mix64",
    "ngram_hashes",
    "simhash",
    "simhash_parts",
]

_U64 = np.uint64
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_GOLD = _U64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = _U64(30), _U64(27), _U64(31)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over a uint64 array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64) + _GOLD  # array arithmetic wraps silently
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


# --- normalisation and de-obfuscation ------------------------------------------------------------------

_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")
#: single characters separated by one separator, at least 4 in a row: "s h o w", "r.e.a.s.o.n"
_SPACED = re.compile(r"(?<![\w])(?:\w[ .\-_*|/]){3,}\w(?![\w])")
#: a word that mixes letters with leetspeak digits/symbols
_LEET_WORD = re.compile(r"\b(?=\w*[a-z])(?=\w*[013457@$])[a-z013457@$]{3,}\b")
_LEET_MAP = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_B64_BLOB = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_OBF_PREFILTER = re.compile(
    r"(?:\w[ .\-_*|/]){3}\w|[a-z][013457@$][a-z]|[013457@$][a-z]{2}|[A-Za-z0-9+/]{16}|[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]"
)


def _join_spaced(m: re.Match) -> str:
    return " " + re.sub(r"[ .\-_*|/]", "", m.group(0)) + " "


def _decode_b64(blob: str) -> str | None:
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(ch.isprintable() or ch.isspace() for ch in text)
    return text if text and printable / len(text) > 0.95 and any(ch == " " for ch in text) else None


def _leet(m: re.Match) -> str:
    return m.group(0).translate(_LEET_MAP)


def deobfuscate(text: str, *, b64: bool = True, zero_width: bool = True, spaced: bool = True,
                leet: bool = True) -> str:
    """Undo cheap obfuscation so rules and features see the plain words: zero-width characters, letters
    spaced out ("r e a s o n i n g"), leetspeak ("r34s0n1ng") and base64 blobs (decoded text appended).

    The keyword flags skip a step the caller knows cannot change ``text`` (the batch path's RE2
    prefilters); a step that an earlier step may have enabled still runs."""
    decoded = []
    for blob in _B64_BLOB.findall(text) if b64 else ():
        d = _decode_b64(blob)
        if d:
            decoded.append(d.lower())
    t = _ZERO_WIDTH.sub("", text) if zero_width else text
    if spaced or t != text:
        t = _SPACED.sub(_join_spaced, t)
    if leet or t != text:
        t = _LEET_WORD.sub(_leet, t)
    if decoded:
        t = t + "\n" + "\n".join(decoded)
    return t


def prepare(system_text: str | None, user_text: str | None) -> str:
    """The lower-cased, NFKC-normalised, de-obfuscated system + user text that rules and the extraction
    features read."""
    t = (system_text + "\n" if system_text else "") + (user_text or "")
    if not t.isascii():
        t = unicodedata.normalize("NFKC", t)
    low = t.lower()
    if _OBF_PREFILTER.search(low):
        # base64 is case-sensitive: decode from the original text
        low = deobfuscate(low)
        if _B64_BLOB.search(t):
            extra = [d.lower() for d in (_decode_b64(b) for b in _B64_BLOB.findall(t)) if d]
            if extra:
                low = low + "\n" + "\n".join(extra)
    return low


# --- masking and tokens ----------------------------------------------------------------------------------

_QUOTED = re.compile(r"\"[^\"\n]{1,300}\"|“[^”\n]{1,300}”|«[^»\n]{1,300}»|'[^'\n]{4,300}'(?!\w)|`[^`\n]{1,300}`")
_URL = re.compile(r"https?://\S+|\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_NUM = re.compile(r"\d+(?:[.,:/]\d+)*")
#: a capitalised word; masked as a name unless it is a common sentence-initial word (context-free, so a
#: question masks the same way alone or inside a wrapper)
_NAME = re.compile(r"\b[A-Z][a-z]{1,20}\b")
_NOT_NAMES = frozenset("""
a an the this that these those there then than what which who whom whose when where why how if is are was were
be been do does did can could would should will shall may might must have has had i you he she it we they me my
your his her its our their them us in on at by for from to of with without about above below after before
during into over under again once here all any both each few more most other some such no nor not only own
same so too very just but and or as because until while let lets please consider suppose given find
solve write compute calculate determine show prove explain describe give list answer question problem
task step note also yes ok okay hi hello dear thanks thank now today first second third next finally
one two three four five six seven eight nine ten every many much assume imagine use using return
output input example examples instructions instruction system user assistant rules rule response format
json python true false none null
""".split())


def _name(m: re.Match) -> str:
    w = m.group(0)
    return w if w.lower() in _NOT_NAMES else "NAME"


def mask(text: str) -> str:
    """Mask the parts of a prompt that vary between uses of one template: quoted spans, URLs/e-mails,
    numbers and names (capitalised words other than common sentence-initial words)."""
    t = _QUOTED.sub(" QSPAN ", text)
    t = _URL.sub(" URL ", t)
    t = _NAME.sub(_name, t)
    return _NUM.sub("0", t)


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")


def tokens(text: str) -> list[str]:
    """Word tokens (letters/digits/underscore runs); CJK characters are one token each."""
    return _TOKEN.findall(text)


_HASH_CACHE: dict[str, int] = {}
_HASH_CACHE_MAX = 2_000_000


def token_hashes(toks: list[str]) -> list[int]:
    """Stable 32-bit hash of each token (CRC-32 of its UTF-8 bytes), memoised."""
    cache = _HASH_CACHE
    if len(cache) > _HASH_CACHE_MAX:
        cache.clear()
    out = []
    for t in toks:
        h = cache.get(t)
        if h is None:
            h = zlib.crc32(t.encode("utf-8", "surrogatepass"))
            cache[t] = h
        out.append(h)
    return out


def hash_tokens(toks: list[str]) -> np.ndarray:
    """uint64 array of :func:`token_hashes` of a flat token list; many tokens are deduplicated with Arrow
    first so only distinct tokens are hashed in Python."""
    if len(toks) < 256:
        return np.asarray(token_hashes(toks), dtype=np.uint64)
    enc = pc.dictionary_encode(pa.array(toks, pa.large_string()))
    uniq = np.asarray(token_hashes(enc.dictionary.to_pylist()), dtype=np.uint64)
    return uniq[enc.indices.to_numpy(zero_copy_only=False)]


def ngram_hashes(h: np.ndarray, doc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64-bit hashes of the token n-grams that lie within one document.

    ``h``: uint64 token hashes of all documents, concatenated; ``doc``: document index of each token (non-
    decreasing). Returns (hashes, document index, flat position of the first token) of each n-gram."""
    m = len(h) - n + 1
    if m <= 0:
        return np.empty(0, np.uint64), np.empty(0, doc.dtype), np.empty(0, np.int64)
    acc = mix64(h[:m] + _U64(n))
    for k in range(1, n):
        acc = mix64(acc ^ h[k:k + m])
    ok = doc[:m] == doc[n - 1:n - 1 + m]
    pos = np.flatnonzero(ok)
    return acc[ok], doc[:m][ok], pos


def _bits(f: np.ndarray) -> np.ndarray:
    """(m, 64) uint8: bit k of each uint64 feature, least significant first (little-endian byte view)."""
    f = np.ascontiguousarray(f, dtype=np.uint64)
    return np.unpackbits(f.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")


def _add_bit_counts(ones: np.ndarray, feat: np.ndarray, doc: np.ndarray, chunk: int) -> None:
    """Add to ``ones[d, k]`` the number of features of document d with bit k set (any document order)."""
    import scipy.sparse as sp

    n_docs = len(ones)
    for s in range(0, len(feat), chunk):
        d = doc[s:s + chunk]
        bits = _bits(feat[s:s + chunk])
        ind = sp.csr_matrix((np.ones(len(d), np.float32), (d, np.arange(len(d)))), shape=(n_docs, len(d)))
        ones += ind @ bits.astype(np.float32)


def simhash_parts(parts: list[tuple[np.ndarray, np.ndarray]], n_docs: int, chunk: int = 262_144) -> np.ndarray:
    """:func:`simhash` over the union of several (feature hashes, document index) parts; a part whose
    document index is non-decreasing is counted with :func:`bit_counts` (faster)."""
    ones = None
    total = np.zeros(n_docs, np.float64)
    if n_docs <= SMALL:  # a few documents: skip the set-up
        ones = np.zeros((n_docs, 64), dtype=np.float64)
        feat = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.uint64)
        doc = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
        if len(feat):
            bits = _bits(feat)
            if n_docs == 1:
                ones[0] = bits.sum(axis=0)
            else:  # one-hot product: exact integer counts, far cheaper than np.add.at
                onehot = np.zeros((n_docs, len(feat)), np.float64)
                onehot[doc, np.arange(len(feat))] = 1.0
                ones = onehot @ bits.astype(np.float64)
        total += np.bincount(doc, minlength=n_docs)
    else:
        counts = None  # exact integer counts of the parts ordered by document (no float round trip)
        for feat, doc in parts:
            if len(feat):
                if len(doc) < 2 or bool(np.all(doc[1:] >= doc[:-1])):
                    part = bit_counts(np.ascontiguousarray(feat, dtype=np.uint64), doc, n_docs)
                    if counts is None:
                        counts = part
                    else:
                        counts += part
                else:
                    if ones is None:
                        ones = np.zeros((n_docs, 64), dtype=np.float64)
                    _add_bit_counts(ones, feat, doc, chunk)
                total += np.bincount(doc, minlength=n_docs)
        if counts is not None:
            ones = counts if ones is None else ones + counts
        elif ones is None:
            ones = np.zeros((n_docs, 64), dtype=np.int64)
    # bit k of each signature is set where more than half the features have it; 64 flags packed per document
    set_bits = ones * 2 > total[:, None]
    sig = np.packbits(set_bits, axis=1, bitorder="little").view("<u8").reshape(n_docs)
    return sig.view(np.int64)


def simhash(feat: np.ndarray, doc: np.ndarray, n_docs: int, chunk: int = 262_144) -> np.ndarray:
    """64-bit SimHash per document from feature hashes ``feat`` (uint64) with document index ``doc``
    (any order). Returns int64 (the same bits, signed, so it fits Arrow/Parquet int64); 0 for a document
    without features."""
    return simhash_parts([(feat, doc)], n_docs, chunk)


# --- vectorised (Arrow / RE2) versions used by the batch and the single-request path -------------------
#
# Both compute_signals and score_request go through these functions, so one request scores the same alone
# or in a batch. Patterns are RE2 (Arrow's regex engine): \w, \d and \b are ASCII; \p{L} etc. for Unicode.

_OBF_RE2 = (r"(?i)(?:\w[ .\-_*|/]){3}\w|[a-z][013457@$][a-z]|[013457@$][a-z]{2}|[A-Za-z0-9+/]{16}"
            "|[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")  # literal characters: both engines take them
_CJK_RE2 = r"([\p{Han}\p{Hiragana}\p{Katakana}])"
_SPLIT_RE2 = r"[^\p{L}\p{M}\p{N}_]+"
_QUOTED_RE2 = "\"[^\"\\n]{1,200}\"|“[^”\\n]{1,200}”|«[^»\\n]{1,200}»|(^|\\s)'[^'\\n]{4,200}'|`[^`\\n]{1,200}`"
_URL_RE2 = r"https?://\S+|[\w.+-]+@[\w-]+\.[\w.-]+"
_NUM_RE2 = r"\d+(?:[.,:/]\d+)*"
_NAME_TOKEN = re.compile(r"[A-Z][a-z]{1,20}")


_B64_RE2 = "[A-Za-z0-9+/]{16}"
_WORDISH = "[0-9A-Za-z_\\x{80}-\\x{10FFFF}]"  # Python's Unicode \w, widened to every non-ASCII character
_NOT_ASCII_WORD = "(?:^|[^0-9A-Za-z_])"  # implied by (?<!\w) and by \b before a word character
#: RE2 patterns over the lower-cased text, one per step of :func:`_deobfuscate_full` after the first (which
#: reads the original text with ``_B64_RE2``): wherever the step's Python pattern matches, its RE2 pattern
#: matches too, so a step whose pattern finds nothing can be skipped
_DEOBF_NEEDS = (
    _B64_RE2,
    "[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]",
    f"{_NOT_ASCII_WORD}(?:{_WORDISH}[ .\\-_*|/]){{3,}}{_WORDISH}(?:[^0-9A-Za-z_]|$)",
    # a leetspeak match starts a word with [a-z013457] and holds a letter and a [013457@$] before its end
    # or just after it (the lookahead may read one '@'/'$' past the final word boundary)
    f"{_NOT_ASCII_WORD}(?:[a-z][a-z013457@$]*[013457@$]|[013457][a-z013457@$]*[a-z])",
)


def _deobfuscate_full(text: str, steps: tuple[bool, ...] = (True,) * 5) -> str:
    """:func:`deobfuscate` of the lower-cased text plus the base64 blobs of the original; ``steps``: which
    of (base64 in the original, then :func:`deobfuscate`'s b64, zero_width, spaced, leet) may apply."""
    low = text.lower()
    out = deobfuscate(low, b64=steps[1], zero_width=steps[2], spaced=steps[3], leet=steps[4])
    extra = [d.lower() for d in (_decode_b64(b) for b in _B64_BLOB.findall(text)) if d] if steps[0] else []
    if extra:
        out = out + "\n" + "\n".join(extra)
    return out


#: batches up to this size take the per-string path (compiled RE2 objects): Arrow compiles a pattern on
#: every call, which dominates for one request
SMALL = 16


_W = "A-Za-z0-9_"
_OUT = {"w": f"[{_W}]", "W": f"[^{_W}]", "d": "[0-9]", "D": "[^0-9]", "s": "[\\t\\n\\f\\r ]",
        "S": "[^\\t\\n\\f\\r ]", "b": f"(?:(?<=[{_W}])(?![{_W}])|(?<![{_W}])(?=[{_W}]))"}
_IN = {"w": _W, "d": "0-9", "s": "\\t\\n\\f\\r "}


def re2_to_regex(pattern: str) -> str:
    """Rewrite an RE2 pattern for the ``regex`` module with RE2's meaning of the Perl classes: ``\\w \\d
    \\s \\b`` are ASCII in RE2 but Unicode in ``regex`` (whose ASCII flag would also shrink ``\\p{L}``)."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            e = pattern[i + 1]
            if in_class and e in _IN:
                out.append(_IN[e])
            elif in_class and e in "WDSb":
                raise ValueError(f"unsupported escape \\{e} inside a character class: {pattern!r}")
            elif not in_class and e in _OUT:
                out.append(_OUT[e])
            else:
                out.append(c + e)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            if pattern[i + 1:i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1:i + 2] == "]":
                out.append("]")
                i += 1
        elif c == "]" and in_class:
            in_class = False
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


@lru_cache(maxsize=None)
def small_regex(pattern: str):
    """``pattern`` (RE2 syntax) compiled for the small-batch path with the ``regex`` module, rewritten by
    :func:`re2_to_regex`; tests check that both paths agree."""
    import regex

    if "\\p{" not in pattern:
        # no Unicode classes: the standard library's ``re`` with the ASCII flag gives RE2's ASCII \\w \\d
        # \\b directly and is about twice as fast as ``regex`` on these rules (only \\s differs from RE2:
        # it also takes \\v)
        return re.compile(pattern, re.ASCII)
    return regex.compile(re2_to_regex(pattern), regex.VERSION0)


_re2 = small_regex


def prepare_one(system: str | None, user: str) -> str:
    """:func:`prepared_array` for one request without Arrow calls (both paths NFKC-normalise and lower-case
    non-ASCII text with Python's ``unicodedata``/``str.lower``, so they agree by construction)."""
    full = user if system is None else system + "\n" + user
    if not full.isascii():
        full = unicodedata.normalize("NFKC", full)
    low = full.lower()
    return _deobfuscate_full(full) if small_regex(_OBF_RE2).search(full) else low


def prepared_array(system: pa.Array, user: pa.Array) -> pa.Array:
    """Lower-cased, NFKC-normalised, de-obfuscated system + user text of each row (the text the extraction
    rules and features read)."""
    sep = pa.scalar("\n", system.type)
    full = pc.binary_join_element_wise(pc.fill_null(system, ""), pc.fill_null(user, ""), sep)
    full = pc.if_else(pc.is_null(system), pc.fill_null(user, ""), full)
    if len(full) == 0:
        return full
    ascii_ = pc.string_is_ascii(full)
    if pc.all(ascii_).as_py():
        low = pc.ascii_lower(full)
    else:
        # non-ASCII rows: NFKC and lower-casing in Python, exactly as prepare_one does
        other = pc.invert(ascii_)
        rows = [unicodedata.normalize("NFKC", t) for t in full.filter(other).to_pylist()]
        full = pc.replace_with_mask(full, other, pa.array(rows, full.type))
        low = pc.replace_with_mask(pc.ascii_lower(full), other, pa.array([t.lower() for t in rows], full.type))
    flag = pc.match_substring_regex(full, _OBF_RE2)
    idx = np.flatnonzero(flag.to_numpy(zero_copy_only=False))
    if len(idx):
        # most flagged texts hold nothing deobfuscate would change: keep those as they are
        take = pa.array(idx)
        sub, sub_low = full.take(take), low.take(take)
        steps = np.stack([pc.match_substring_regex(sub, _B64_RE2).to_numpy(zero_copy_only=False)]
                         + [pc.match_substring_regex(sub_low, p).to_numpy(zero_copy_only=False) for p in _DEOBF_NEEDS],
                         axis=1)
        work = steps.any(axis=1)
        if work.any():
            rows = np.zeros(len(full), bool)
            rows[idx[work]] = True
            new = [_deobfuscate_full(t, tuple(f)) for t, f in
                   zip(sub.filter(pa.array(work)).to_pylist(), steps[work].tolist())]
            low = pc.replace_with_mask(low, pa.array(rows), pa.array(new, low.type))
    return low


def split_tokens(arr: pa.Array | list[str]) -> tuple[pa.Array | list[str], np.ndarray]:
    """Word tokens of every string (runs of letters, marks, digits, underscore; CJK characters one token
    each), flattened: (tokens, document index of each token)."""
    if isinstance(arr, list):
        cjk, split = _re2(_CJK_RE2), _re2(_SPLIT_RE2)
        toks: list[str] = []
        doc: list[int] = []
        for i, t in enumerate(arr):
            t = t or ""
            if cjk.search(t):
                t = cjk.sub(r" \1 ", t)
            parts = [p for p in split.split(t) if p]
            toks.extend(parts)
            doc.extend([i] * len(parts))
        return toks, np.asarray(doc, dtype=np.int64)
    if len(arr) == 0:
        return pa.array([], pa.large_string()), np.empty(0, np.int64)
    if pc.any(pc.match_substring_regex(arr, _CJK_RE2)).as_py():
        arr = pc.replace_substring_regex(arr, _CJK_RE2, r" \1 ")
    parts = pc.split_pattern_regex(pc.fill_null(arr, ""), _SPLIT_RE2)
    flat = pc.list_flatten(parts)
    doc = pc.list_parent_indices(parts)
    keep = pc.not_equal(flat, "")
    return flat.filter(keep), doc.filter(keep).to_numpy(zero_copy_only=False).astype(np.int64)


def hash_token_array(tokens: pa.Array | list[str], transform=None) -> np.ndarray:
    """Stable uint64 hash of each token (CRC-32 of its UTF-8 bytes), computed once per distinct token;
    ``transform`` maps a distinct token to the string that is hashed."""
    if isinstance(tokens, list):
        if transform is not None:
            tokens = [transform(t) for t in tokens]
        return np.asarray(token_hashes(tokens), dtype=np.uint64)
    if len(tokens) == 0:
        return np.empty(0, np.uint64)
    enc = pc.dictionary_encode(tokens)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    uniq = enc.dictionary.to_pylist()
    if transform is not None:
        uniq = [transform(t) for t in uniq]
    hu = np.asarray(token_hashes(uniq), dtype=np.uint64)
    return hu[enc.indices.to_numpy(zero_copy_only=False)]


def _mask_token(tok: str) -> str:
    if _NAME_TOKEN.fullmatch(tok) and tok.lower() not in _NOT_NAMES:
        return "name"
    return tok.lower()


def masked_array(user: pa.Array | list[str]) -> pa.Array | list[str]:
    """User text with quoted spans, URLs/e-mails and numbers masked (names are masked per token)."""
    if isinstance(user, list):
        q, u, n = _re2(_QUOTED_RE2), _re2(_URL_RE2), _re2(_NUM_RE2)
        return [n.sub("0", u.sub(" URL ", q.sub(r"\1 QSPAN ", x or ""))) for x in user]
    t = pc.fill_null(user, "")
    t = pc.replace_substring_regex(t, _QUOTED_RE2, r"\1 QSPAN ")
    t = pc.replace_substring_regex(t, _URL_RE2, " URL ")
    return pc.replace_substring_regex(t, _NUM_RE2, "0")


def masked_token_hashes_array(user: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and document index of the masked, lower-cased tokens of each user text (capitalised words
    other than common sentence-initial words become ``name``)."""
    toks, doc = split_tokens(masked_array(user))
    return hash_token_array(toks, _mask_token), doc


# --- batch fast path: one tokenisation per text, per-distinct-token tables, in-place hashing -------------
#
# The batch path of :func:`distillguard.signals.core.analyse` tokenises each text once into ids of distinct
# tokens; every hash that depends on one token only (CRC-32, unigram buckets, the first SplitMix step of an
# n-gram) is computed once per distinct token and gathered. The values are the same as those of
# :func:`split_tokens` / :func:`hash_token_array` / :func:`ngram_hashes` (tests compare both).

_WORD_BYTE = np.zeros(256, bool)
_WORD_BYTE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", np.uint8)] = True


def mix64_(x: np.ndarray, tmp: np.ndarray | None = None) -> np.ndarray:
    """:func:`mix64` in place on a uint64 array (``tmp``: optional scratch of the same size); returns x."""
    if tmp is None or len(tmp) < len(x):
        tmp = np.empty_like(x)
    tmp = tmp[:len(x)]
    x += _GOLD
    np.right_shift(x, _S30, out=tmp)
    x ^= tmp
    x *= _M1
    np.right_shift(x, _S27, out=tmp)
    x ^= tmp
    x *= _M2
    np.right_shift(x, _S31, out=tmp)
    x ^= tmp
    return x


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the first string, UTF-8 bytes) of a large_string array without copying."""
    arr = arr.cast(pa.large_string())
    _, off_buf, data_buf = arr.buffers()
    off = np.frombuffer(off_buf, np.int64, len(arr) + 1, arr.offset * 8) if off_buf is not None else np.zeros(1, np.int64)
    base, end = int(off[0]), int(off[-1])
    data = np.frombuffer(data_buf, np.uint8, end - base, base) if data_buf is not None and end > base else np.empty(0, np.uint8)
    return off - base, data


_CHAR_CLASS: dict[int, int] = {}  # non-ASCII code point -> 0 separator, 1 word character, 2 CJK (one token)


def _char_classes(cps: np.ndarray) -> np.ndarray:
    """Class of each distinct non-ASCII code point, as RE2 sees it (asked once per code point and memoised,
    so the Unicode tables are RE2's own)."""
    cache = _CHAR_CLASS
    new = [c for c in cps.tolist() if c not in cache]
    if new:
        chars = pa.array([chr(c) for c in new], pa.large_string())
        word = pc.match_substring_regex(chars, f"^{_WORD_CLASS_RE2}$").to_numpy(zero_copy_only=False)
        cjk = pc.match_substring_regex(chars, f"^{_CJK_RE2}$").to_numpy(zero_copy_only=False)
        for c, wd, cj in zip(new, word.tolist(), cjk.tolist()):
            cache[c] = (2 if cj else 1) if wd else 0
    return np.array([cache[c] for c in cps.tolist()], np.int8)


_WORD_CLASS_RE2 = r"[\p{L}\p{M}\p{N}_]"  # the complement of _SPLIT_RE2


def _tokens(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """:func:`split_tokens` of a large_string array without nulls, with numpy over the UTF-8 bytes: word
    characters are ``[A-Za-z0-9_]`` in ASCII and RE2's ``[\\p{L}\\p{M}\\p{N}_]`` beyond; a CJK character
    is a token of its own. Returns (tokens, document index of each token)."""
    off, data = _string_buffers(arr)
    if not len(data):
        return pa.array([], pa.large_string()), np.zeros(0, np.int64)
    w = _WORD_BYTE[data]
    # cut[i]: a token may not run across byte i-1 and byte i (the start of each string, and either side of a
    # CJK character, which is a token of its own)
    cut = np.zeros(len(data) + 1, bool)
    cut[off[:-1]] = True
    lead = np.flatnonzero(data >= 0xC0)  # first byte of each non-ASCII character
    if len(lead):
        b = [data[lead].astype(np.int64)] + [data[np.minimum(lead + k, len(data) - 1)].astype(np.int64) & 0x3F
                                              for k in (1, 2, 3)]
        size = np.where(b[0] >= 0xF0, 4, np.where(b[0] >= 0xE0, 3, 2))
        cp = np.where(size == 2, ((b[0] & 0x1F) << 6) | b[1],
                      np.where(size == 3, ((b[0] & 0x0F) << 12) | (b[1] << 6) | b[2],
                               ((b[0] & 0x07) << 18) | (b[1] << 12) | (b[2] << 6) | b[3]))
        uniq, inv = np.unique(cp, return_inverse=True)
        cls = _char_classes(uniq)[inv]
        for k in range(4):  # every byte of the character takes its class
            m = size > k
            w[lead[m] + k] = cls[m] > 0
        cjk = cls == 2
        if cjk.any():
            cut[lead[cjk]] = True
            cut[lead[cjk] + size[cjk]] = True
    # a token starts at a word byte whose left neighbour is no word byte or across a cut, and ends (exclusive)
    # after a word byte whose right neighbour is no word byte or across a cut
    n = len(w)
    head = np.empty(n, bool)
    head[0] = w[0]
    np.greater(w[1:], w[:-1], out=head[1:])  # w[i] and not w[i-1]
    head |= w & cut[:-1]
    tail = np.empty(n, bool)
    tail[-1] = w[-1]
    np.greater(w[:-1], w[1:], out=tail[:-1])  # w[i] and not w[i+1]
    tail[:-1] |= w[:-1] & cut[1:-1]
    starts = np.flatnonzero(head)
    ends = np.flatnonzero(tail) + 1
    counts = np.diff(np.searchsorted(starts, off, "left"))
    doc = np.repeat(np.arange(len(off) - 1, dtype=np.int64), counts)
    toff = np.empty(len(starts) + 1, np.int64)
    toff[0] = 0
    np.cumsum(ends - starts, out=toff[1:])
    toks = pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(toff), pa.py_buffer(np.ascontiguousarray(data[w])))
    return toks, doc


def token_ids(arr: pa.Array, transform=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Tokens of every string of ``arr`` (the same as :func:`split_tokens`) as ids of distinct tokens.

    Returns ``(table, ids, doc, distinct)``: uint64 CRC-32 of each distinct token (after ``transform``, as
    :func:`hash_token_array`), the id of each token, the document index of each token (non-decreasing) and
    the distinct tokens."""
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    toks, doc = _tokens(arr)
    if len(toks) == 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64), doc, []
    enc = pc.dictionary_encode(toks)
    distinct = enc.dictionary.to_pylist()
    ids = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    hashed = [transform(t) for t in distinct] if transform is not None else distinct
    table = np.asarray(token_hashes(hashed), dtype=np.uint64)
    return table, ids, doc, distinct


def ngram_first(table: np.ndarray, n: int) -> np.ndarray:
    """Per distinct token: the first step of :func:`ngram_hashes` for n-grams starting with it."""
    return mix64(table + _U64(n))


def ngram_hashes_ids(table: np.ndarray, first: np.ndarray, ids: np.ndarray, doc: np.ndarray, n: int,
                     with_pos: bool = True):
    """:func:`ngram_hashes` of the token sequence ``table[ids]`` given ``first = ngram_first(table, n)``."""
    m = len(ids) - n + 1
    if m <= 0:
        return np.empty(0, np.uint64), np.empty(0, doc.dtype), np.empty(0, np.int64)
    acc = first[ids[:m]]
    tmp = np.empty_like(acc)
    for k in range(1, n):
        acc ^= table[ids[k:k + m]]
        mix64_(acc, tmp)
    ok = doc[:m] == doc[n - 1:n - 1 + m]
    if ok.all():
        return acc, doc[:m], (np.arange(m) if with_pos else None)
    pos = np.flatnonzero(ok)
    return acc[pos], doc[pos], pos


# --- SimHash by packed lane counts ---------------------------------------------------------------------

_LANE4 = _U64(0x1111111111111111)
_LANE8 = _U64(0x0F0F0F0F0F0F0F0F)
_LANE16 = _U64(0x00FF00FF00FF00FF)
_LANE32 = _U64(0x0000FFFF0000FFFF)


def _blocks(doc: np.ndarray, limit: int | None) -> np.ndarray:
    """Start of each run of equal ``doc`` values, runs cut into blocks of at most ``limit`` items."""
    m = len(doc)
    new = np.empty(m, bool)
    new[0] = True
    np.not_equal(doc[1:], doc[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    if limit is None:
        return starts
    run = np.diff(starts, append=m)
    if run.max() <= limit:
        return starts
    pos = np.arange(m) - np.repeat(starts, run)
    return np.flatnonzero(pos % limit == 0)


def bit_counts(feat: np.ndarray, doc: np.ndarray, n_docs: int) -> np.ndarray:
    """(n_docs, 64) int64: number of features of each document with bit k set, for features ordered by
    document. Counts are summed in packed lanes of one uint64 (4, 8, 16, then 32 bits wide; blocks are cut
    so that no lane overflows), which reads each feature four times instead of unpacking 64 bits."""
    out = np.zeros((n_docs, 64), np.int64)
    if not len(feat):
        return out
    st = _blocks(doc, 15)
    d = doc[st]
    tmp = np.empty_like(feat)
    level = []  # (partial sums, bit of lane 0); lane i is bit off + i * width
    for s in range(4):
        np.right_shift(feat, _U64(s), out=tmp)
        tmp &= _LANE4
        level.append((np.add.reduceat(tmp, st), s))
    for width, mask, limit in ((4, _LANE8, 17), (8, _LANE16, 257), (16, _LANE32, None)):
        st = _blocks(d, limit)
        d = d[st]
        nxt = []
        for a, off in level:
            nxt.append((np.add.reduceat(a & mask, st), off))
            nxt.append((np.add.reduceat((a >> _U64(width)) & mask, st), off + width))
        level = nxt
    for a, off in level:  # 32-bit lanes: lane 0 is bit off, lane 1 is bit off + 32
        out[d, off] += (a & _U64(0xFFFFFFFF)).astype(np.int64)
        out[d, off + 32] += (a >> _U64(32)).astype(np.int64)
    return out
