"""Read the Terraform module with python-hcl2 and evaluate its simple arithmetic locals."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
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


# -- The real terraform binary over the module's variables and locals -------------------------
# variables.tf and locals.tf need no provider, so `terraform console` and a plan of stand-in
# resources (terraform_data, built in) run offline: validations and locals are evaluated by
# Terraform itself (RE2 regexes, its own functions), not by a re-implementation.

TERRAFORM = shutil.which("terraform")
REQUIRED = {
    "project_id": "my-project-1",
    "region": "asia-northeast3",
    "spreadsheet_id": "1AbCdEfGhIjK",
}


class TerraformRefused(Exception):
    """Terraform refused the values (a validation) or the expression; the message is its own."""


def _run(args: list[str], folder: Path, stdin: str = "") -> str:
    assert TERRAFORM, "the terraform binary is not installed"
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "NO_COLOR": "1"}
    done = subprocess.run(
        [TERRAFORM, *args], input=stdin, cwd=folder, capture_output=True, text=True, env=env
    )
    # terraform console answers 0 even when a variable fails its validation: its errors go to
    # stderr, headed "Error:".
    if done.returncode or re.search(r"^Error: ", done.stderr, flags=re.M):
        raise TerraformRefused(done.stderr)
    return done.stdout


def _workspace(folder: Path, values: dict[str, Any], extra: str = "") -> None:
    for name in ("variables.tf", "locals.tf"):
        shutil.copy(MODULE / name, folder / name)
    (folder / "terraform.tfvars.json").write_text(json.dumps({**REQUIRED, **values}))
    (folder / "stand_ins.tf").write_text(extra)


def console(expression: str, **values: Any) -> Any:
    """The value of `expression` over the module's variables (`values` plus the required ones)
    and locals, evaluated by terraform console."""
    with tempfile.TemporaryDirectory() as tmp:
        _workspace(Path(tmp), values)
        out = _run(["console", "-no-color"], Path(tmp), f"jsonencode({expression})\n")
    return json.loads(json.loads(out.strip().splitlines()[-1]))


def plan_after_apply(
    stand_ins: str, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, list[str]]:
    """Apply `stand_ins` (terraform_data resources over the module's locals) with the variables
    `before`, then plan with `after`: the addresses Terraform would create, destroy, update or
    leave alone (keys "create", "delete", "update", "no-op")."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _workspace(folder, before, stand_ins)
        _run(["init", "-input=false", "-no-color"], folder)
        _run(["apply", "-input=false", "-auto-approve", "-no-color"], folder)
        (folder / "terraform.tfvars.json").write_text(json.dumps({**REQUIRED, **after}))
        _run(["plan", "-input=false", "-no-color", "-out=switch.plan"], folder)
        plan = json.loads(_run(["show", "-json", "switch.plan"], folder))
    actions: dict[str, list[str]] = {}
    for change in plan.get("resource_changes", []):
        for action in change["change"]["actions"]:
            actions.setdefault(action, []).append(change["address"])
    return {k: sorted(v) for k, v in actions.items()}
