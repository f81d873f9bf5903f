"""What every `dify-batch` command shares: the resolved target, one Datastore client, and one
way to report what goes wrong. A command in any module of cli/ takes the session with
`@pass_session` and opens what it needs with `session.client()`, `.report()` or `.store()`;
registered on the `cli` group (cli/main.py), its errors get the same one-line treatment."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from dotenv import dotenv_values
from google.cloud import datastore

from cli.errors import explain
from cli.target import NoProject, Target, resolve
from shared.adapters.store import StatusReport, StatusStore
from shared.entrypoints.config import queue_path


@contextlib.contextmanager
def _emulator_env(host: str | None) -> Iterator[None]:
    """google-cloud-datastore picks the emulator from the environment when a client is built:
    set (or hide) it for that moment only."""
    name = "DATASTORE_EMULATOR_HOST"
    before = os.environ.get(name)
    if host:
        os.environ[name] = host
    else:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class Session:
    """What every command shares: the target (resolved on first use, so `--help` needs no
    settings), one Datastore client, and a check that the emulator answers. Commands in other
    modules take it with `@pass_session` and open what they need with `client()`,
    `report()` or `store()`; `Commands` turns what goes wrong into one line."""

    def __init__(
        self,
        *,
        project: str | None,
        namespace: str | None,
        mode: str | None,
        queue: str | None,
        location: str | None,
    ) -> None:
        self._options = {
            "project": project,
            "namespace": namespace,
            "mode": mode,
            "queue": queue,
            "location": location,
        }
        self._client: datastore.Client | None = None

    @cached_property
    def target(self) -> Target:
        dotenv = dotenv_values(".env") if Path(".env").is_file() else {}
        try:
            return resolve(**self._options, shell=dict(os.environ), dotenv=dotenv)
        except NoProject as exc:
            raise click.UsageError(str(exc)) from None

    def check_reachable(self) -> None:
        """With the emulator, fail in seconds with advice rather than hang on retries."""
        host = self.target.emulator_host
        if not host:
            return
        name, _, port = host.rpartition(":")
        with socket.socket() as probe:
            probe.settimeout(2)
            answered = probe.connect_ex((name or "127.0.0.1", int(port or 8081))) == 0
        if not answered:
            raise click.ClickException(
                f"no Datastore emulator answers at {host} ({self.target.why}): start the "
                "local stack with `make run-local` (or `make run-emulator`), or add --cloud "
                "for real Datastore"
            )

    def client(self) -> datastore.Client:
        if self._client is None:
            click.echo(f"→ {self.target.describe()}", err=True)
            self.check_reachable()
            with _emulator_env(self.target.emulator_host):
                self._client = datastore.Client(
                    project=self.target.project, namespace=self.target.namespace
                )
        return self._client

    def report(self) -> StatusReport:
        return StatusReport(client=self.client())

    def store(self) -> StatusStore:
        return StatusStore(client=self.client())

    def no_rows(self) -> str:
        return f"no rows found in {self.target.where} — check --project/--namespace"

    def queue_state(self) -> dict[str, Any] | None:
        t = self.target
        if not (t.queue and t.location):
            return None
        from shared.adapters.queue_control import QueueControl
        from shared.entrypoints.wiring import tasks_client

        control = QueueControl(
            client=tasks_client(t.tasks_emulator_host),
            datastore_client=self.client(),
            queue_path=queue_path(t.project, t.location, t.queue),
        )
        return control.state().to_dict()


pass_session = click.make_pass_decorator(Session)


class Commands(click.Group):
    """Runs a command; a failure an operator can fix (credentials, an unreachable emulator or
    service, a missing index, a permission) ends as one line and exit 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            session = ctx.find_object(Session)
            line = explain(exc, session.target) if session is not None else None
            if line is None:
                raise
            raise click.ClickException(line) from None
