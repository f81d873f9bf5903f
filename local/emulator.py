"""Start and stop the gcloud CLI's Firestore emulator in Datastore mode (local runs and tests).

python -m local.emulator start [--port 8081]   # foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

COMPONENT_HINT = (
    "the Firestore emulator needs the gcloud CLI with its emulator component: "
    "`gcloud components install cloud-firestore-emulator` (or Debian's "
    "google-cloud-cli-firestore-emulator package) and Java 17+"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_up(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Emulator:
    host: str
    process: subprocess.Popen[bytes] | None

    def stop(self, hurry: threading.Event | None = None) -> None:
        """Stop gcloud and the Java process it started (its whole process group), and wait
        until every process of the group is gone: Java may outlive gcloud for a moment.
        `hurry` set (a second Ctrl+C): kill at once instead of waiting for a clean exit."""
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _group_alive(group):
            self.process.poll()  # reap gcloud itself, or it stays a zombie of the group
            if time.monotonic() > deadline or (hurry is not None and hurry.is_set()):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                deadline = time.monotonic() + 5
            time.sleep(0.1)
        self.process.poll()


def _group_alive(group: int) -> bool:
    """Whether any process other than a zombie is left in the process group."""
    for stat in _proc_stats():
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            return True
    return False


def _proc_stats() -> list[str]:
    stats = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stats.append(Path(entry.path, "stat").read_text(errors="replace"))
    return stats


def start(
    port: int | None = None, *, timeout_s: float = 60.0, log_path: str | None = None
) -> Emulator:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError(f"gcloud is not on PATH: {COMPONENT_HINT}")
    host = f"127.0.0.1:{port or free_port()}"
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - kept open for the child's life
    process = subprocess.Popen(
        [
            gcloud,
            "emulators",
            "firestore",
            "start",
            "--database-mode=datastore-mode",
            f"--host-port={host}",
            "--quiet",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    emulator = Emulator(host, process)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the emulator exited with {process.returncode}: {COMPONENT_HINT}"
                )
            if is_up(host):
                return emulator
            time.sleep(0.2)
    except BaseException:  # Ctrl+C while it starts: its Java must not outlive us
        emulator.stop()
        raise
    emulator.stop()
    raise RuntimeError(f"the emulator did not answer on {host} within {timeout_s:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["start"])
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    try:
        emulator = start(args.port)
    except KeyboardInterrupt:  # start() has stopped what it started
        return
    except RuntimeError as exc:
        sys.exit(str(exc))
    print(
        f"Firestore emulator (Datastore mode) on {emulator.host}\n"
        f"export DATASTORE_EMULATOR_HOST={emulator.host}",
        flush=True,
    )
    # `make stop-emulator` sends SIGTERM: take gcloud's Java process down with us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        assert emulator.process is not None
        emulator.process.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        # Stopping takes a moment: another Ctrl+C (or SIGTERM) kills instead of waiting.
        hurry = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: hurry.set())
        signal.signal(signal.SIGTERM, lambda *_: hurry.set())
        emulator.stop(hurry)


if __name__ == "__main__":
    main()
