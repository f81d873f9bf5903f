"""Read the Terraform module with python-hcl2 and evaluate its simple arithmetic locals."""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "terraform/modules/dify_batch_processor"
ENVIRONMENTS = ROOT / "terraform/environments"


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@cache
def load(folder: Path = MODULE) -> dict[str, list[dict[str, Any]]]:
    merged: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.tf")):
        with path.open() as f:
            for key, blocks in hcl2.load(f).items():
                if not key.startswith("__"):
                    merged.setdefault(key, []).extend(blocks)
    return merged


def resources(kind: str, folder: Path = MODULE) -> dict[str, dict[str, Any]]:
    found = {}
    for block in load(folder).get("resource", []):
        for rtype, named in block.items():
            if unquote(rtype) == kind:
                for name, body in named.items():
                    found[unquote(name)] = body
    return found


def variables(folder: Path = MODULE) -> dict[str, dict[str, Any]]:
    return {
        unquote(name): body
        for block in load(folder).get("variable", [])
        for name, body in block.items()
    }


def locals_(folder: Path = MODULE) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in load(folder).get("locals", []):
        merged.update({k: v for k, v in block.items() if not k.startswith("__")})
    return merged


def defaults() -> dict[str, Any]:
    return {name: unquote(body.get("default")) for name, body in variables().items()}


def members(folder: Path = MODULE) -> list[str]:
    """Every `member`/`members` value of every resource: who is granted what."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("member", "members"):
                    found.extend(value if isinstance(value, list) else [value])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(load(folder).get("resource", []))
    return found


_FUNCS = {
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "length": len,
    "keys": lambda m: sorted(m),
    "contains": lambda items, value: value in items,
}


def evaluate(expression: str, values: dict[str, Any]) -> Any:
    """Evaluate an arithmetic HCL expression such as "${min(3600, local.x + 30)}" with the given
    variable values; locals are evaluated recursively."""
    text = expression.removeprefix("${").removesuffix("}")
    text = text.replace("&&", " and ").replace("||", " or ")

    def local(match: re.Match[str]) -> str:
        # A test may give a local's value (one this evaluator cannot compute, e.g. from regex).
        if f"local.{match.group(1)}" in values:
            return repr(values[f"local.{match.group(1)}"])
        return repr(evaluate(locals_()[match.group(1)], values))

    text = re.sub(r"\blocal\.(\w+)", local, text)
    text = re.sub(r"\bvar\.(\w+)", lambda m: repr(values[m.group(1)]), text)
    return eval(text, {"__builtins__": {}}, _FUNCS)  # noqa: S307 - our own module's expressions


def env_keys(expression: str) -> set[str]:
    """Keys of a `merge(local.common_env, {A = ..., B = ...})` environment expression."""
    keys = set(re.findall(r"[{,]\s*([A-Z][A-Z0-9_]*)\s*=", expression))
    for name in ("common_env", "routing_env"):
        if f"local.{name}" in expression:
            keys |= set(locals_()[name])
    return keys
