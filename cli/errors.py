"""One line for each way reaching Datastore (or Cloud Tasks) can fail: what is wrong and what
to run. Never a traceback for a situation an operator can fix."""

from __future__ import annotations

import re

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from cli.target import Target

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
LOGIN = "gcloud auth application-default login"


def first_line(text: object, limit: int = 240) -> str:
    """A server's or library's message, one line, no control characters, bounded."""
    line = _CONTROL.sub(" ", str(text)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _unreachable(target: Target, exc: BaseException) -> str:
    if target.emulator_host:
        return (
            f"no Datastore emulator answers at {target.emulator_host} ({target.why}): start "
            "the local stack with `make run-local` (or `make run-emulator`), or add --cloud "
            "for real Datastore"
        )
    return (
        f"Google Cloud did not answer for {target.where} ({first_line(exc, 120)}): check the "
        "network and try again"
    )


def explain(exc: BaseException, target: Target) -> str | None:
    """The line to show for `exc`, or None for an error nobody anticipated (a bug: let it show
    its traceback)."""
    project = target.project
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return (
            f"no Google credentials to read real Datastore ({target.where}): run `{LOGIN}` "
            "(or add --emulator for the local stack)"
        )
    if isinstance(exc, auth_exc.RefreshError | gexc.Unauthenticated):
        return f"your Google credentials were refused ({first_line(exc, 120)}): run `{LOGIN}` again"
    if isinstance(exc, auth_exc.TransportError):
        return _unreachable(target, exc)
    if isinstance(exc, gexc.PermissionDenied | gexc.Forbidden):
        text = str(exc)
        if "SERVICE_DISABLED" in text or "has not been used" in text or "is disabled" in text:
            return (
                f"the Datastore API is not enabled in project {project}: run `gcloud services "
                f"enable datastore.googleapis.com --project {project}` (or check --project)"
            )
        return (
            f"permission denied on project {project}: your account needs "
            f"roles/datastore.viewer there (roles/datastore.user to change rows), or "
            f"--project is wrong ({first_line(exc, 120)})"
        )
    if isinstance(exc, gexc.FailedPrecondition) and "index" in str(exc).lower():
        return (
            f"project {project} lacks a Datastore index this command needs: run `terraform "
            "apply` in terraform/environments/<env> (it creates the indexes), then wait a few "
            f"minutes for them to build ({first_line(exc, 120)})"
        )
    if isinstance(exc, gexc.NotFound):
        return (
            f"project {project} has no Datastore database, or no such project exists: check "
            f"--project ({first_line(exc, 120)})"
        )
    if isinstance(exc, gexc.InvalidArgument):
        return (
            f"Datastore refused the request for {target.where}: {first_line(exc, 160)}; check "
            "--project and --namespace"
        )
    if isinstance(exc, gexc.RetryError | gexc.ServiceUnavailable | gexc.DeadlineExceeded):
        return _unreachable(target, exc)
    if isinstance(exc, gexc.GoogleAPICallError):
        return f"Google Cloud answered an error for {target.where}: {first_line(exc)}"
    return None
