"""Ctrl+C at every moment of `make demo` and `make run-local` (starting, running, stopping,
and pressed again while stopping): everything they started stops, the emulator's Java
included, and no traceback is shown."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from local.emulator import free_port
from tests.support.servers import ROOT

pytestmark = pytest.mark.emulator


def _stat(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def descendants(root: int) -> dict[int, str]:
    """Every living process under `root`: pid -> command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo += children.get(pid, [])
    return found


def alive(pid: int) -> bool:
    fields = _stat(str(pid))
    return fields is not None and fields[0] != "Z"


def launch(*args: str) -> subprocess.Popen[str]:
    if shutil.which("gcloud") is None:
        pytest.skip("needs the gcloud CLI's Firestore emulator")
    env = {k: v for k, v in os.environ.items() if k != "DATASTORE_EMULATOR_HOST"}
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], done: Callable[[str], bool], seen: list[str]) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline, "".join(seen)
        line = proc.stdout.readline()
        assert line, "".join(seen)
        seen.append(line)
        if done(line):
            return


def interrupt_and_check(
    proc: subprocess.Popen[str], seen: list[str], *, presses: int = 1
) -> tuple[str, dict[int, str]]:
    """Ctrl+C (`presses` times), then: it ended, without a traceback, leaving nothing."""
    started = descendants(proc.pid)
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    rest, _ = proc.communicate(timeout=120)
    out = "".join(seen) + rest
    assert "Traceback" not in out, out
    left = {pid: cmd for pid, cmd in started.items() if alive(pid)}
    assert left == {}, out
    return out, started


def test_ctrl_c_while_the_demo_starts_its_emulator():
    demo = launch("local.demo")
    deadline = time.monotonic() + 120
    while not any("java" in cmd for cmd in descendants(demo.pid).values()):
        assert demo.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out, started = interrupt_and_check(demo, [])
    assert demo.returncode == 130, out
    assert any("java" in cmd for cmd in started.values())  # the emulator's Java was running


def test_ctrl_c_pressed_again_and_again_while_the_demo_runs():
    demo = launch("local.demo", "--latency", "5")
    seen: list[str] = []
    read_until(demo, lambda line: line.startswith("loader:"), seen)
    out, started = interrupt_and_check(demo, seen, presses=3)
    assert demo.returncode == 130, out
    assert "stopped: emulator, stand-ins, worker and loader" in out
    commands = " ".join(started.values())
    assert "--target load_sheet" in commands
    assert "--target process_row" in commands


def test_ctrl_c_while_the_demo_stops():
    demo = launch("local.demo", "--latency", "0.2")
    seen: list[str] = []
    read_until(demo, lambda line: line.startswith("stopping:"), seen)
    out, _ = interrupt_and_check(demo, seen, presses=2)
    for path in re.findall(r"results: \d+ rows written to (\S+)", out):
        (ROOT / path).unlink()
    assert "stopping faster" in out
    assert "stopped: emulator, stand-ins, worker and loader" in out


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """A .env for run-local on free ports (never the developer's 8081, 8080, …)."""
    ports = {name: free_port() for name in ("emulator", "worker", "dify", "sheets", "tasks")}
    path = tmp_path / ".env"
    path.write_text(
        f"DATASTORE_EMULATOR_HOST=127.0.0.1:{ports['emulator']}\n"
        f"WORKER_URL=http://127.0.0.1:{ports['worker']}\n"
        f"DIFY_API_ENDPOINT=http://127.0.0.1:{ports['dify']}/v1/workflows/run\n"
        f"SHEETS_API_ENDPOINT=http://127.0.0.1:{ports['sheets']}/\n"
        f"CLOUD_TASKS_EMULATOR_HOST=127.0.0.1:{ports['tasks']}\n"
        "DATASTORE_NAMESPACE=\n"
    )
    return path


@pytest.mark.parametrize("moment", ["starting", "running"])
def test_ctrl_c_stops_run_local(env_file: Path, moment: str):
    loader_port = str(free_port())
    stack = launch("local.run_local", "--env-file", str(env_file), "--loader-port", loader_port)
    seen: list[str] = []
    if moment == "starting":
        read_until(stack, lambda line: line.startswith("Firestore emulator"), seen)
    else:
        read_until(stack, lambda line: line.startswith("all up"), seen)
    out, _ = interrupt_and_check(stack, seen, presses=2)
    assert "stopped: everything run-local started" in out
    assert "namespace ;" not in out
    assert "default namespace" in out
