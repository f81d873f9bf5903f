"""Settings: one typed object per function, read from the environment on first use.

Locally a `.env` file in the working directory fills in what the environment does not
set (a variable already set always wins). Errors name the variable and say what to do.
"""

from __future__ import annotations

from typing import Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.adapters.secrets import key_problem, looks_like_a_key
from shared.core.errors import ConfigError

# Cloud Tasks accepts a dispatch deadline between 15 s and 30 min.
MIN_DISPATCH_DEADLINE_S = 15
MAX_DISPATCH_DEADLINE_S = 1800


class CommonSettings(BaseSettings):
    """What both functions read."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    google_cloud_project: str = Field(min_length=1)
    datastore_namespace: str | None = None
    dify_api_timeout_minutes: float = Field(default=10.0, gt=0)
    timeout_margin_seconds: int = Field(default=60, ge=10, le=600)
    max_attempts: int = Field(default=5, ge=1, le=100)
    secret_manager_emulator_host: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Several workflows from one sheet (shared/core/workflows.py): a JSON object name -> settings,
    # the header whose value picks a row's workflow, the one for an empty cell, and headers
    # mapped to variable names (`질문->question`). Unset: the single workflow below.
    workflows: str | None = None
    workflow_column: str | None = None
    default_workflow: str | None = None
    input_columns: str | None = None
    # The spend limit: tokens every finished row of this sheet (namespace) may charge in all,
    # counted by the worker; reached, the batch pauses until it is raised. 0: no limit.
    max_total_tokens: int = Field(default=0, ge=0)

    @property
    def dify_timeout_seconds(self) -> float:
        return self.dify_api_timeout_minutes * 60

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts: the whole Dify call plus margin for the bookkeeping around it."""
        return self.dify_timeout_seconds + self.timeout_margin_seconds

    @property
    def dispatch_deadline_seconds(self) -> int:
        return int(self.dify_timeout_seconds + self.timeout_margin_seconds)

    @model_validator(mode="after")
    def _deadline_fits_cloud_tasks(self) -> Self:
        deadline = self.dispatch_deadline_seconds
        if not MIN_DISPATCH_DEADLINE_S <= deadline <= MAX_DISPATCH_DEADLINE_S:
            raise ValueError(
                f"DIFY_API_TIMEOUT_MINUTES ({self.dify_api_timeout_minutes}) plus "
                f"TIMEOUT_MARGIN_SECONDS ({self.timeout_margin_seconds}) gives a task dispatch "
                f"deadline of {deadline} s, but Cloud Tasks allows {MIN_DISPATCH_DEADLINE_S} s "
                f"to {MAX_DISPATCH_DEADLINE_S} s: lower DIFY_API_TIMEOUT_MINUTES (at most "
                f"{(MAX_DISPATCH_DEADLINE_S - self.timeout_margin_seconds) / 60:g})"
            )
        return self


class WorkerSettings(CommonSettings):
    dify_api_endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")
    dify_api_key: SecretStr | None = None
    dify_api_key_secret_id: str | None = None
    # Streaming by default: it frees Dify's concurrency slot when the connection closes, can be
    # stopped, survives proxies that cut long requests (Dify Cloud: 100 s), and a lost stream's
    # run can be looked up instead of run twice.
    dify_response_mode: Literal["blocking", "streaming"] = "streaming"
    dify_user: str = Field(default="dify-batch-processor", min_length=1)
    # Kept answers (the final event, a blocking answer) larger than this are refused unread: a
    # Datastore entity holds about 1 MiB, and parsing large JSON takes many times its size.
    dify_max_response_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # The worker's own queue, which it pauses when Dify fails every row alike. Unset (a worker
    # run by hand), nothing is paused.
    tasks_location: str | None = None
    tasks_queue: str | None = None
    cloud_tasks_emulator_host: str | None = None
    # functions-framework's request threads (gunicorn reads the same variable): the HTTP pool
    # to Dify is sized from it.
    threads: int = Field(default=8, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        # The messages never quote the values: either may be a key.
        if self.dify_api_key is not None:
            key = self.dify_api_key.get_secret_value().strip()
            problem = key_problem(key)
            if problem:
                raise ValueError(f"DIFY_API_KEY {problem}")
            self.dify_api_key = SecretStr(key)
        if self.dify_api_key_secret_id and looks_like_a_key(self.dify_api_key_secret_id):
            raise ValueError(
                "DIFY_API_KEY_SECRET_ID holds what looks like a Dify API key (app-…), not a "
                "secret id: store the key in Secret Manager (gcloud secrets create "
                "dify-api-key --data-file=-) and set the secret's id here"
            )
        if self.workflows:
            return self  # each workflow names its own endpoint and key (WORKFLOWS)
        if not self.dify_api_endpoint:
            raise ValueError("DIFY_API_ENDPOINT is not set (or set WORKFLOWS)")
        if self.dify_api_key is None and not self.dify_api_key_secret_id:
            raise ValueError(
                "set DIFY_API_KEY (local runs) or DIFY_API_KEY_SECRET_ID (the Secret Manager "
                "secret holding the Dify app key, when deployed)"
            )
        if (self.tasks_location is None) != (self.tasks_queue is None):
            raise ValueError(
                "TASKS_LOCATION and TASKS_QUEUE go together: set both (the queue the worker "
                "pauses when Dify fails every row alike) or neither"
            )
        return self

    @property
    def queue_path(self) -> str | None:
        if self.tasks_location is None or self.tasks_queue is None:
            return None
        return queue_path(self.google_cloud_project, self.tasks_location, self.tasks_queue)


class LoaderSettings(CommonSettings):
    spreadsheet_id: str = Field(min_length=1)
    sheet_name: str = Field(default="Sheet1", min_length=1)
    unique_id_column: str = Field(default="0", min_length=1)
    row_filter_column: str | None = None
    row_filter_value: str | None = None
    google_sheets_credentials_secret_id: str | None = None
    google_sheets_credentials_file: str | None = None
    sheets_api_endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")
    sheet_chunk_rows: int = Field(default=1000, ge=10, le=50_000)
    tasks_location: str = Field(min_length=1)
    tasks_queue: str = Field(min_length=1)
    worker_url: str = Field(pattern=r"^https?://\S+$")
    tasks_service_account_email: str | None = None
    cloud_tasks_emulator_host: str | None = None
    enqueue_concurrency: int = Field(default=32, ge=1, le=256)
    # Results back in the sheet (needs the sheet shared with the loader as Editor).
    write_back: bool = False
    result_columns: str | None = None  # "answer->Answer, score->점수"; empty: one per output
    result_status_column: str = Field(default="dify_status", min_length=1)
    result_error_column: str = Field(default="dify_error", min_length=1)
    # The workflow's input form, to check every row before anything runs (GET /v1/parameters).
    check_inputs: bool = True
    dify_api_endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")
    dify_api_key: SecretStr | None = None
    dify_api_key_secret_id: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.row_filter_column is None) != (self.row_filter_value is None):
            raise ValueError(
                "ROW_FILTER_COLUMN and ROW_FILTER_VALUE go together: set both (e.g. target and "
                "TRUE) or neither"
            )
        if self.write_back and self.unique_id_column.strip().upper() == "ROW_NUMBER":
            raise ValueError(
                "WRITE_BACK=true needs ids that stay with their row, but UNIQUE_ID_COLUMN="
                "ROW_NUMBER changes when someone inserts, deletes or sorts rows (results would "
                "land beside the wrong inputs): add an id column and name it in "
                "UNIQUE_ID_COLUMN, or set WRITE_BACK=false"
            )
        if self.check_inputs and self.dify_api_endpoint:
            if self.dify_api_key is not None:
                problem = key_problem(self.dify_api_key.get_secret_value().strip())
                if problem:
                    raise ValueError(f"DIFY_API_KEY {problem}")
            elif not self.dify_api_key_secret_id:
                raise ValueError(
                    "the loader checks rows against the workflow's input form at "
                    "DIFY_API_ENDPOINT: set DIFY_API_KEY (local) or DIFY_API_KEY_SECRET_ID, or "
                    "CHECK_INPUTS=false"
                )
            elif looks_like_a_key(self.dify_api_key_secret_id):
                raise ValueError(
                    "DIFY_API_KEY_SECRET_ID holds what looks like a Dify API key (app-…), not a "
                    "secret id"
                )
        if not self.cloud_tasks_emulator_host and not self.tasks_service_account_email:
            raise ValueError(
                "set TASKS_SERVICE_ACCOUNT_EMAIL: the service account whose OIDC token Cloud "
                "Tasks sends to the worker"
            )
        return self

    @property
    def queue_path(self) -> str:
        return queue_path(self.google_cloud_project, self.tasks_location, self.tasks_queue)


def queue_path(project: str, location: str, queue: str) -> str:
    return f"projects/{project}/locations/{location}/queues/{queue}"


S = TypeVar("S", bound=CommonSettings)


def load(cls: type[S]) -> S:
    """Read settings of `cls` from the environment (and .env), or raise ConfigError naming the
    variable that is missing or invalid. Secret values never appear in the message."""
    try:
        return cls()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else ""
            if err["type"] == "missing":
                problems.append(f"{name} is not set")
            elif name:
                field = cls.model_fields.get(name.lower())
                secret = field is not None and "SecretStr" in str(field.annotation)
                shown = "" if secret else f" (got {err.get('input')!r})"
                problems.append(f"{name} is invalid{shown}: {err['msg']}")
            else:
                problems.append(str(err["msg"]).removeprefix("Value error, "))
        raise ConfigError(
            "bad settings: " + "; ".join(problems) + ". Set them in the environment, or in .env "
            "for local runs; .env.example documents every variable."
        ) from None
