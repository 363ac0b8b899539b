"""Synthetic infrastructure: ASNs by kind, IP addresses, user agents, time zones, daily activity profiles.

ASN numbers are those of well-known networks of each kind (a detector may legitimately know which ASNs are
datacenters); the addresses drawn inside them are synthetic.
"""

from __future__ import annotations

import random

import numpy as np

#: kind -> [(asn, first octets used for synthetic addresses)]
ASNS: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "datacenter": [("AS16509", (3, 18, 52, 54)), ("AS14061", (104, 138, 159, 167)), ("AS24940", (88, 95, 116)),
                   ("AS16276", (51, 141, 145)), ("AS396982", (34, 35)), ("AS45102", (47, 8)),
                   ("AS8075", (20, 40, 13)), ("AS63949", (172, 45))],
    "residential": [("AS7922", (24, 67, 73, 98)), ("AS701", (71, 72, 96, 108)), ("AS3320", (79, 84, 87, 91)),
                    ("AS4134", (58, 59, 61, 113)), ("AS4837", (60, 112, 123)), ("AS9808", (111, 117, 120)),
                    ("AS3215", (2, 86, 90)), ("AS2856", (81, 86, 109)), ("AS12389", (5, 37, 46, 95)),
                    ("AS4713", (60, 114, 122)), ("AS7018", (12, 99, 107)), ("AS17676", (126, 119)),
                    ("AS4766", (121, 211)), ("AS6830", (62, 77, 84))],
    "mobile": [("AS21928", (172, 174)), ("AS22394", (174, 97)), ("AS9121", (78, 88)), ("AS24445", (39, 223))],
    "university": [("AS3", (18,)), ("AS25", (128,)), ("AS786", (146,)), ("AS2200", (193,)),
                   ("AS4538", (166, 202)), ("AS11537", (192,)), ("AS7539", (140,))],
}
ASN_KIND: dict[str, str] = {asn: kind for kind, rows in ASNS.items() for asn, _ in rows}

SDK_UAS = ("OpenAI/Python 1.54.3", "OpenAI/Python 1.58.1", "OpenAI/Python 1.61.0", "openai-node/4.77.0",
           "openai-node/4.85.1", "python-httpx/0.27.2", "python-requests/2.32.3", "curl/8.5.0",
           "langchain-openai/0.2.14", "litellm/1.55.2", "Go-OpenAI/1.36.0", "Apache-HttpClient/5.2.1 (Java/17)")
CHAT_UAS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
            "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/130.0 Mobile Safari/537.36",
            "ChatBox/1.9.3 (Electron)", "LibreChat/0.7.5", "OpenWebUI/0.4.8") + SDK_UAS[:4]
EVAL_UAS = ("lm-eval-harness/0.4.7 OpenAI/Python 1.58.1", "inspect_ai/0.3.58 openai-python", "simple-evals/2025 httpx",
            "helm/0.5.4 OpenAI/Python 1.54.3", "lighteval/0.7.0 litellm/1.55.2")
PROXY_UAS = ("new-api/0.4.9", "one-api/0.6.10", "Go-http-client/2.0", "okhttp/4.12.0", "axios/1.7.9",
             "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)")

#: (utc offset hours, weight) of where users are
TIMEZONES = ((-8, 10), (-7, 4), (-6, 6), (-5, 12), (-3, 4), (0, 6), (1, 12), (2, 5), (3, 4), (5.5, 9), (7, 4),
             (8, 14), (9, 6), (10, 2))
_TZ_VALS = np.array([t for t, _ in TIMEZONES], dtype=float)
_TZ_P = np.array([w for _, w in TIMEZONES], dtype=float) / sum(w for _, w in TIMEZONES)


def _norm(xs) -> np.ndarray:
    a = np.asarray(xs, dtype=float)
    return a / a.sum()


#: activity by local hour (0..23)
PROFILES: dict[str, np.ndarray] = {
    "human": _norm([2, 1, .6, .4, .3, .4, 1, 2, 3.5, 4.5, 5, 5, 4.5, 5, 5, 5, 4.5, 4.5, 5, 5.5, 6, 6, 5, 3.5]),
    "work": _norm([.3, .2, .1, .1, .1, .2, .5, 1.5, 4, 7, 8, 8, 6, 7, 8, 8, 7, 5, 3, 2, 1.5, 1.2, 1, .6]),
    "student": _norm([3, 2, 1, .5, .2, .2, .3, 1, 2.5, 4, 5, 5, 4, 5, 5.5, 5.5, 5, 5, 5, 6, 6.5, 7, 6, 4.5]),
}


def draw_tz(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(_TZ_VALS, size=n, p=_TZ_P)


def ip_of(kind: str, r: random.Random) -> tuple[str, str]:
    """One synthetic address in a random network of ``kind``: ``(ip, asn)``."""
    asn, firsts = r.choice(ASNS[kind])
    return f"{r.choice(firsts)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}", asn


def ip_near(ip: str, r: random.Random) -> str:
    """Another address in the same /24 (an office or household with a few addresses)."""
    return ip.rsplit(".", 1)[0] + f".{r.randrange(1, 255)}"
