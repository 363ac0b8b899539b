"""Canary insertion hook.

A canary is a per-account, per-day mark hidden in response text so that text later found in a suspected
distilled model's outputs or training data can be attributed to the account that harvested it.

The gateway calls ``inserter.insert(account_id, response_text, now) -> text`` on the assistant text of a
response when a rule's action is ``canary``. Any object with that method can replace the built-in
:class:`ZeroWidthCanary` (``create_app(..., canary=MyInserter())``); the intel part provides the production
generator. :class:`ZeroWidthCanary` hides ``HMAC-SHA256(secret, account_id|day)[:4 bytes]`` as 32
zero-width characters after the first sentence; :meth:`ZeroWidthCanary.extract` reads it back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

__all__ = ["CanaryInserter", "ZeroWidthCanary"]

_ZERO, _ONE = "\u200b", "\u200c"
_MARK = re.compile(f"[{_ZERO}{_ONE}]{{32}}")


@runtime_checkable
class CanaryInserter(Protocol):
    def insert(self, account_id: str, response_text: str, now: float) -> str:
        """Return ``response_text`` with this account's canary inserted."""


class ZeroWidthCanary:
    def __init__(self, secret: bytes | str = b"distillguard-canary"):
        self._secret = secret.encode() if isinstance(secret, str) else secret

    def code(self, account_id: str, now: float) -> str:
        day = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%d")
        return hmac.new(self._secret, f"{account_id}|{day}".encode(), hashlib.sha256).hexdigest()[:8]

    def insert(self, account_id: str, response_text: str, now: float) -> str:
        if not response_text:
            return response_text
        bits = bin(int(self.code(account_id, now), 16))[2:].zfill(32)
        mark = "".join(_ONE if b == "1" else _ZERO for b in bits)
        m = re.search(r"[.!?](\s|$)", response_text)
        at = m.end(0) - len(m.group(1)) if m else len(response_text)
        return response_text[:at] + mark + response_text[at:]

    @staticmethod
    def extract(text: str) -> list[str]:
        """Every canary code (8 hex digits) hidden in ``text``."""
        return [f"{int(''.join('1' if c == _ONE else '0' for c in m.group(0)), 2):08x}"
                for m in _MARK.finditer(text)]
