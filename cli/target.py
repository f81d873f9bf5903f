"""Which Datastore the CLI talks to, decided from the options, the shell and `.env` (pure).

`.env` (written for the local stack) describes one target: its project, namespace, emulator
and queue. It applies only when nothing more explicit says otherwise: `--cloud`, `--emulator`,
or a `--project` other than `.env`'s all win over it, and so does the shell's environment
(DATASTORE_EMULATOR_HOST set to an empty string there means "real Datastore").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_EMULATOR_HOST = "127.0.0.1:8081"  # `make run-local` / `make run-emulator`


class NoProject(Exception):
    """No project was given anywhere."""


@dataclass(frozen=True)
class Target:
    project: str
    namespace: str | None
    emulator_host: str | None  # None: real Datastore (Google Cloud)
    why: str  # where the choice of emulator or cloud came from
    queue: str | None = None
    location: str | None = None
    tasks_emulator_host: str | None = None

    @property
    def where(self) -> str:
        namespace = f"namespace {self.namespace}" if self.namespace else "the default namespace"
        return f"project {self.project}, {namespace}"

    def describe(self) -> str:
        if self.emulator_host:
            return f"Datastore EMULATOR at {self.emulator_host} ({self.why}): {self.where}"
        return f"real Datastore (Google Cloud; {self.why}): {self.where}"


def resolve(
    *,
    project: str | None,
    namespace: str | None,
    mode: str | None,  # "emulator", "cloud" or None (decide from the environment)
    queue: str | None,
    location: str | None,
    shell: Mapping[str, str],
    dotenv: Mapping[str, str | None],
) -> Target:
    env_file = {k: v for k, v in dotenv.items() if v is not None}
    # `.env` describes its own project; a --project other than it means another target.
    file_applies = not project or project == (
        shell.get("GOOGLE_CLOUD_PROJECT") or env_file.get("GOOGLE_CLOUD_PROJECT")
    )
    if mode == "cloud" and not project and env_file.get("DATASTORE_EMULATOR_HOST"):
        file_applies = False  # this `.env` describes the local stack, not a cloud project

    def setting(name: str) -> str | None:
        if name in shell:
            return shell[name] or None
        return (env_file.get(name) or None) if file_applies else None

    chosen_project = project or setting("GOOGLE_CLOUD_PROJECT")
    if not chosen_project:
        raise NoProject(
            "no project given: pass --project ID (or set GOOGLE_CLOUD_PROJECT)"
            + ("; `.env` describes the local stack, so --cloud does not use it" if mode else "")
        )
    emulator, why = _emulator(mode, shell, env_file, file_applies=file_applies)
    return Target(
        project=chosen_project,
        namespace=namespace or setting("DATASTORE_NAMESPACE"),
        emulator_host=emulator,
        why=why,
        queue=queue or setting("TASKS_QUEUE"),
        location=location or setting("TASKS_LOCATION"),
        tasks_emulator_host=setting("CLOUD_TASKS_EMULATOR_HOST") if emulator else None,
    )


def _emulator(
    mode: str | None,
    shell: Mapping[str, str],
    env_file: Mapping[str, str],
    *,
    file_applies: bool,
) -> tuple[str | None, str]:
    in_shell = shell.get("DATASTORE_EMULATOR_HOST")
    in_file = env_file.get("DATASTORE_EMULATOR_HOST") or None
    if mode == "cloud":
        return None, "--cloud"
    if mode == "emulator":
        return in_shell or in_file or DEFAULT_EMULATOR_HOST, "--emulator"
    if in_shell is not None:
        if in_shell:
            return in_shell, "DATASTORE_EMULATOR_HOST in the environment"
        return None, "DATASTORE_EMULATOR_HOST is empty"
    if file_applies and in_file:
        return in_file, "from .env"
    if in_file:
        return None, "--project differs from .env's, so .env's emulator is not used"
    return None, "no emulator configured"
