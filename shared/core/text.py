"""Pure helpers for text that came from outside (Dify, the sheet, a request) and must be
stored, logged or sent on: lone UTF-16 surrogates (a code node that slices an emoji in half)
cannot be encoded as UTF-8, so Datastore, gRPC and JSON encoders refuse them."""

from __future__ import annotations

import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def parse_arrows(text: str | None) -> list[tuple[str, str]] | str:
    """`a->A, b->B` -> [("a", "A"), ("b", "B")], or the first item that is not `x->y`."""
    pairs = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        left, arrow, right = item.partition("->")
        if not arrow or not left.strip() or not right.strip():
            return item.strip()
        pairs.append((left.strip(), right.strip()))
    return pairs


def has_lone_surrogate(text: str) -> bool:
    return _LONE_SURROGATE.search(text) is not None


def storable(text: str) -> str:
    """The text with every lone surrogate replaced by U+FFFD, so it can be encoded."""
    return _LONE_SURROGATE.sub(REPLACEMENT, text)


def storable_value(value: Any) -> Any:
    """A JSON-like value with every string (keys too) made storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_value(v) for v in value]
    return value
