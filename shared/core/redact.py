"""One scrubber for every text that leaves a function: log lines, stored errors, answers.

Every secret this process reads (the Dify key) is registered here when read, and removed
from any text before it is written anywhere, whatever produced the text (an HTTP library that
quotes a header, a hostile server that echoes it). Bearer tokens are masked even when unknown.
"""

from __future__ import annotations

import re
import threading

MASK = "[redacted]"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words


class Redactor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, secret: str) -> None:
        if len(secret) < _MIN_SECRET_CHARS:
            return
        with self._lock:
            if secret not in self._secrets:
                # Longest first, so a key that contains another is masked whole.
                self._secrets = tuple(sorted({*self._secrets, secret}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _BEARER.sub(rf"\g<1>{MASK}", text)


# Process-wide on purpose: whoever reads a secret registers it, and every writer scrubs with it.
scrub = Redactor()
