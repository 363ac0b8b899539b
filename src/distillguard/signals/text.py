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


def deobfuscate(text: str) -> str:
    """Undo cheap obfuscation so rules and features see the plain words: zero-width characters, letters
    spaced out ("r e a s o n i n g"), leetspeak ("r34s0n1ng") and base64 blobs (decoded text appended)."""
    decoded = []
    for blob in _B64_BLOB.findall(text):
        d = _decode_b64(blob)
        if d:
            decoded.append(d.lower())
    t = _ZERO_WIDTH.sub("", text)
    t = _SPACED.sub(_join_spaced, t)
    t = _LEET_WORD.sub(lambda m: m.group(0).translate(_LEET_MAP), t)
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


def simhash(feat: np.ndarray, doc: np.ndarray, n_docs: int, chunk: int = 500_000) -> np.ndarray:
    """64-bit SimHash per document from feature hashes ``feat`` (uint64) with document index ``doc``
    (any order). Returns int64 (the same bits, signed, so it fits Arrow/Parquet int64); 0 for a document
    without features."""
    import scipy.sparse as sp

    ones = np.zeros((n_docs, 64), dtype=np.float64)
    for s in range(0, len(feat), chunk):
        f = np.ascontiguousarray(feat[s:s + chunk], dtype=np.uint64)
        d = doc[s:s + chunk]
        # bit k of each feature, least significant first
        bits = np.unpackbits(f.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little").astype(np.float32)
        ind = sp.csr_matrix((np.ones(len(f), np.float32), (d, np.arange(len(f)))), shape=(n_docs, len(f)))
        ones += ind @ bits
    total = np.bincount(doc, minlength=n_docs).astype(np.float64)
    # the little-endian byte view above matches this bit order on little-endian machines
    set_bits = (ones * 2 > total[:, None]).astype(np.uint64)
    sig = (set_bits << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    return sig.view(np.int64)
