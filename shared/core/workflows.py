"""Several workflows from one sheet: the set of workflows (WORKFLOWS), and the pure routing of
each row to one of them by a column (WORKFLOW_COLUMN), with headers mapped to variable names
(INPUT_COLUMNS and each workflow's `input_columns`).

With WORKFLOWS unset, the single-workflow settings (DIFY_API_ENDPOINT, DIFY_API_KEY[_SECRET_ID],
TASKS_QUEUE, ...) are the one workflow, named `default`, and nothing else changes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.core.errors import ConfigError, SheetError
from shared.core.rows import InvalidRow, SheetRow, inputs_hash
from shared.core.text import parse_arrows

DEFAULT_NAME = "default"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(pattern=r"^https?://\S+$")
    api_key: str | None = None
    api_key_secret_id: str | None = None
    queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,100}$")
    response_mode: Literal["blocking", "streaming"] | None = None
    timeout_minutes: float | None = Field(default=None, gt=0, le=29)
    workflow_id: str | None = None
    input_columns: dict[str, str] = Field(default_factory=dict)
    max_total_tokens: int = Field(default=0, ge=0)  # this workflow's spend limit; 0: none

    @field_validator("workflow_id")
    @classmethod
    def _a_uuid(cls, value: str | None) -> str | None:
        # Dify refuses any other form (uuid.UUID in AppGenerateService._get_workflow).
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(
                "must be a published workflow version's id, a UUID like "
                "3c90c3cc-0d44-4b50-8888-8dd25736052a (Dify refuses other forms)"
            ) from None


@dataclass(frozen=True)
class Workflow:
    name: str
    endpoint: str  # the run URL: …/workflows/run, or …/workflows/{workflow_id}/run
    api_key: str | None = None  # local runs
    api_key_secret_id: str | None = None  # deployed
    queue: str | None = None  # queue id in TASKS_LOCATION
    response_mode: Literal["blocking", "streaming"] | None = None
    timeout_minutes: float | None = None
    input_columns: dict[str, str] = field(default_factory=dict)  # header -> variable
    max_total_tokens: int = 0  # this workflow's spend limit (MAX_TOTAL_TOKENS is the sheet's)


def run_url(endpoint: str, workflow_id: str | None) -> str:
    """Pin a published version: POST /v1/workflows/{workflow_id}/run."""
    if not workflow_id:
        return endpoint
    base = endpoint.removesuffix("/").removesuffix("/workflows/run")
    return f"{base}/workflows/{workflow_id}/run"


def parse_workflows(text: str) -> dict[str, Workflow]:
    """WORKFLOWS (a JSON object, name -> spec), validated; errors name the workflow and field
    and never quote a key."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"WORKFLOWS is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("WORKFLOWS must be a JSON object: workflow name -> its settings")
    workflows = {}
    for name, spec in raw.items():
        try:
            parsed = _Spec.model_validate(spec)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"WORKFLOWS: workflow {name!r}: {problems}") from None
        if (parsed.api_key is None) == (parsed.api_key_secret_id is None):
            raise ConfigError(
                f"WORKFLOWS: workflow {name!r}: give exactly one of api_key (local runs) and "
                "api_key_secret_id (the Secret Manager secret, when deployed)"
            )
        if parsed.api_key_secret_id and parsed.api_key_secret_id.lower().startswith("app-"):
            raise ConfigError(
                f"WORKFLOWS: workflow {name!r}: api_key_secret_id looks like a Dify API key, "
                "not a secret id"
            )
        workflows[str(name)] = Workflow(
            name=str(name),
            endpoint=run_url(parsed.endpoint, parsed.workflow_id),
            api_key=parsed.api_key,
            api_key_secret_id=parsed.api_key_secret_id,
            queue=parsed.queue,
            response_mode=parsed.response_mode,
            timeout_minutes=parsed.timeout_minutes,
            input_columns=dict(parsed.input_columns),
            max_total_tokens=parsed.max_total_tokens,
        )
    return workflows


def parse_input_columns(text: str | None) -> dict[str, str]:
    """INPUT_COLUMNS `질문->question, 학년->grade` -> {"질문": "question", "학년": "grade"}."""
    pairs = parse_arrows(text)
    if isinstance(pairs, str):
        raise ConfigError(
            f"INPUT_COLUMNS has {pairs!r}, which is not Header->variable; write it like "
            "질문->question, 학년->grade"
        )
    return dict(pairs)


@dataclass(frozen=True)
class Routing:
    """How rows find their workflow: by `column` (None: every row to `default`)."""

    workflows: dict[str, Workflow]
    column: str | None = None
    default: str | None = None
    input_columns: dict[str, str] = field(default_factory=dict)  # for every workflow
    multi: bool = False  # WORKFLOWS set: the workflow is part of what counts as an edit

    def check_headers(self, headers: Sequence[str]) -> None:
        """A mapping or the routing column naming a header the sheet lacks is an error."""
        present = set(headers)
        if self.column is not None and self.column not in present:
            raise SheetError(
                f"WORKFLOW_COLUMN {self.column!r} is not a header of the sheet; headers: "
                f"{', '.join(headers)}"
            )
        for owner, mapping in [("INPUT_COLUMNS", self.input_columns)] + [
            (f"workflow {w.name!r} input_columns", w.input_columns) for w in self.workflows.values()
        ]:
            missing = [h for h in mapping if h not in present]
            if missing:
                raise SheetError(
                    f"{owner} maps {', '.join(repr(m) for m in missing)}, which the sheet has no "
                    f"header for; headers: {', '.join(headers)}"
                )

    def variables(self, workflow: str, headers: Sequence[str]) -> list[str]:
        mapping = {**self.input_columns, **self.workflows[workflow].input_columns}
        return [mapping.get(h, h) for h in headers]


def route(rows: Sequence[SheetRow], routing: Routing) -> tuple[list[SheetRow], list[InvalidRow]]:
    """Each row with its workflow and its inputs under the workflow's variable names; rows whose
    cell names no workflow are invalid (with the value and the known names)."""
    routed, invalid = [], []
    known = ", ".join(sorted(routing.workflows))
    for row in rows:
        value = row.route.strip()
        name = value or routing.default
        if routing.column is None:
            name = routing.default or DEFAULT_NAME
        if not name:
            invalid.append(
                InvalidRow(
                    row.row_number,
                    row.row_id,
                    f"its {routing.column} cell is empty and DEFAULT_WORKFLOW is not set; "
                    f"name one of: {known}",
                )
            )
            continue
        if name not in routing.workflows:
            invalid.append(
                InvalidRow(
                    row.row_number,
                    row.row_id,
                    f"its {routing.column} cell says {value!r}, which names no workflow; "
                    f"known: {known}",
                )
            )
            continue
        mapping = {**routing.input_columns, **routing.workflows[name].input_columns}
        inputs: dict[str, Any] = {mapping.get(k, k): v for k, v in row.inputs.items()}
        hashed = (
            inputs_hash({"inputs": inputs, "workflow": name})
            if routing.multi
            else (inputs_hash(inputs) if mapping else row.inputs_hash)
        )
        routed.append(replace(row, inputs=inputs, inputs_hash=hashed, workflow=name))
    return routed, invalid
