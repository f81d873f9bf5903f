"""The whole system on one machine (demo and manual work only, never deployed): the Firestore
emulator, the Sheets, Cloud Tasks and Dify STAND-INS, and the worker and loader as real
functions-framework processes. Everything it starts, it stops (also on Ctrl+C and errors).

Where `.env` configures a real sheet (SPREADSHEET_ID other than `sample`, SHEETS_API_ENDPOINT
unset) or a real Dify (DIFY_API_ENDPOINT not on this machine, with DIFY_API_KEY), those are
used instead of the stand-ins.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from local import emulator as emu
from local.cloud_tasks_standin import CloudTasksStandIn
from local.dify_standin import DEMO_FORM, DifyStandIn, demo_reply
from local.sheets_standin import SheetsStandIn, read_csv

ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STANDIN_KEY = "app-standin-key"
PROJECT = "local-project"
LOCATION = "asia-northeast3"
QUEUE = "dify-batch-processor"


@dataclass
class Ports:
    """0 picks a free port (the demo); run-local uses the fixed ones .env points at."""

    emulator: int = 0
    worker: int = 0
    loader: int = 0
    dify: int = 0
    sheets: int = 0
    tasks: int = 0


def free(port: int) -> int:
    return port or emu.free_port()


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@dataclass
class Stack:
    csv: Path
    namespace: str
    ports: Ports = field(default_factory=Ports)
    max_concurrent: int = 5
    dify_latency: float = 1.0
    env_file: Path = ROOT / ".env"
    log_dir: Path = ROOT / ".run"
    quiet: bool = False
    write_back: bool = False
    two_workflows: bool = False  # the bundled example: rows routed by `kind` to two apps
    # Filled in by start():
    env: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    sheets: SheetsStandIn | None = None
    _emulator: emu.Emulator | None = None
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _standins: list[Any] = field(default_factory=list)
    _stopping: bool = False
    _hurry: threading.Event = field(default_factory=threading.Event)

    def say(self, line: str) -> None:
        self.lines.append(line)
        if not self.quiet:
            print(line, flush=True)

    # -- signals --------------------------------------------------------------------------

    def handle_signals(self) -> None:
        """Ctrl+C (SIGINT) and SIGTERM stop the program while it starts or runs (as a
        KeyboardInterrupt, so `finally` blocks stop what was started). Once stopping, another
        Ctrl+C only hurries the stop (kill instead of waiting): nothing is left running and no
        traceback shows, however often it is pressed."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self._stopping:
            self._stopping = True  # from now on, a signal only hurries the stop
            raise KeyboardInterrupt
        if not self._hurry.is_set():
            self._hurry.set()
            print("stopping faster: killing what is left…", flush=True)

    # -- starting ---------------------------------------------------------------------------

    def start(self) -> Stack:
        """Start everything; on any failure stop what was started and raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.log_dir.mkdir(exist_ok=True)
        dotenv = (
            {k: v for k, v in dotenv_values(self.env_file).items() if v}
            if (self.env_file.exists())
            else {}
        )
        p = self.ports
        emulator_port = free(p.emulator)
        self._emulator = emu.start(emulator_port, log_path=str(self.log_dir / "emulator.log"))
        namespace = f"namespace {self.namespace}" if self.namespace else "default namespace"
        self.say(
            f"Firestore emulator (Datastore mode): {self._emulator.host} "
            f"({namespace}; it keeps no data after it stops)"
        )
        worker_port, loader_port = free(p.worker), free(p.loader)
        env: dict[str, str] = {
            "GOOGLE_CLOUD_PROJECT": dotenv.get("GOOGLE_CLOUD_PROJECT") or PROJECT,
            "DATASTORE_EMULATOR_HOST": self._emulator.host,
            "DATASTORE_NAMESPACE": self.namespace,
            "TASKS_LOCATION": LOCATION,
            "TASKS_QUEUE": QUEUE,
            "WORKER_URL": f"http://127.0.0.1:{worker_port}",
            "THREADS": str(max(8, 2 * self.max_concurrent)),
            "LOG_LEVEL": "WARNING",
            "SECRET_MANAGER_EMULATOR_HOST": "",
            "TASKS_SERVICE_ACCOUNT_EMAIL": "",
        }
        if self.write_back:
            env["WRITE_BACK"] = "true"
        env.update(self._sheet(dotenv))
        caps: dict[str, int] = {}
        if self.two_workflows:
            env.update(self._two_workflows(caps))
        else:
            env.update(self._dify(dotenv))
        tasks = CloudTasksStandIn(
            dispatch=True,
            max_concurrent_dispatches=self.max_concurrent,
            max_attempts=25,
            min_backoff=1.0,
            queue_caps=caps,
        ).start(free(p.tasks))
        self._standins.append(tasks)
        env["CLOUD_TASKS_EMULATOR_HOST"] = tasks.host
        self.say(
            f"Cloud Tasks stand-in: {tasks.host}, queue {QUEUE}, at most {self.max_concurrent} "
            "rows at once"
        )
        self.env = env
        self._serve("worker", "worker/main.py", "process_row", worker_port)
        self._serve("loader", "loader/main.py", "load_sheet", loader_port)

    def _sheet(self, dotenv: dict[str, Any]) -> dict[str, str]:
        spreadsheet = dotenv.get("SPREADSHEET_ID") or "sample"
        endpoint = dotenv.get("SHEETS_API_ENDPOINT")
        if spreadsheet != "sample" and not endpoint:
            tab = dotenv.get("SHEET_NAME") or "Sheet1"
            self.say(f"Sheet: the real Google Sheet {spreadsheet}, tab {tab!r} (from .env)")
            return {"SPREADSHEET_ID": spreadsheet, "SHEET_NAME": tab, "SHEETS_API_ENDPOINT": ""}
        grid = read_csv(self.csv)
        self.header = [str(c) for c in grid[0]] if grid else []
        sheets = SheetsStandIn({"sample": {"Sheet1": grid}}).start(port=free(self.ports.sheets))
        self._standins.append(sheets)
        self.sheets = sheets
        self.say(
            f"Sheets stand-in: {sheets.endpoint} serving {self.csv} ({max(0, len(grid) - 1)} rows)"
        )
        return {
            "SPREADSHEET_ID": "sample",
            "SHEET_NAME": "Sheet1",
            "SHEETS_API_ENDPOINT": sheets.endpoint,
        }

    def _dify(self, dotenv: dict[str, Any]) -> dict[str, str]:
        endpoint, key = dotenv.get("DIFY_API_ENDPOINT", ""), dotenv.get("DIFY_API_KEY", "")
        host = urlsplit(endpoint).hostname if endpoint else None
        if endpoint and host not in LOCAL_HOSTS and key and key != STANDIN_KEY:
            self.say(f"Dify: the real workflow at {endpoint} (from .env)")
            return {"DIFY_API_ENDPOINT": endpoint, "DIFY_API_KEY": key}
        dify = DifyStandIn(
            api_key=STANDIN_KEY,
            latency=self.dify_latency,
            latency_jitter=self.dify_latency / 2,
            behaviour=demo_reply,
            form=DEMO_FORM,
        ).start(port=free(self.ports.dify))
        self._standins.append(dify)
        self.say(
            f"Dify STAND-IN (not a real Dify; about {self.dify_latency:g} s a run): {dify.url}"
        )
        return {"DIFY_API_ENDPOINT": dify.url, "DIFY_API_KEY": STANDIN_KEY}

    def _two_workflows(self, caps: dict[str, int]) -> dict[str, str]:
        """Two Dify STAND-INS, one per kind of row, each with its own key, cap and variable."""
        workflows: dict[str, Any] = {}
        for name, cap, variable in (("math", 2, "problem"), ("essay", 3, "topic")):
            app = DifyStandIn(
                api_key=f"app-{name}-standin-key",
                latency=self.dify_latency,
                latency_jitter=self.dify_latency / 2,
                max_active_requests=cap,
            ).start()
            self._standins.append(app)
            queue = f"{QUEUE}-{name}"
            caps[queue] = cap
            workflows[name] = {
                "endpoint": app.url,
                "api_key": f"app-{name}-standin-key",
                "queue": queue,
                "input_columns": {"질문": variable},
            }
            self.say(
                f"Dify STAND-IN for {name!r} rows (not a real Dify; at most {cap} runs at once): "
                f"{app.url}"
            )
        return {
            "WORKFLOWS": json.dumps(workflows),
            "WORKFLOW_COLUMN": "kind",
            "DEFAULT_WORKFLOW": "essay",
            "INPUT_COLUMNS": "학년->grade",
            "TASKS_QUEUE": f"{QUEUE}-essay",
        }

    def _serve(self, name: str, source: str, target: str, port: int) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "functions_framework",
                "--source",
                str(ROOT / source),
                "--target",
                target,
                "--port",
                str(port),
            ],
            env={**os.environ, **self.env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._processes.append((name, process))
        deadline = time.monotonic() + 60
        while not listening(port):
            if process.poll() is not None:
                raise RuntimeError(
                    f"the {name} exited at start; see {self.log_dir / (name + '.log')}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {name} did not listen on port {port} within 60 s")
            time.sleep(0.1)
        self.env[f"{name.upper()}_URL"] = f"http://127.0.0.1:{port}"
        self.say(
            f"{name} ({target}, functions-framework, pid {process.pid}): http://127.0.0.1:{port}"
        )

    # -- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, newest first; safe to call twice."""
        self._stopping = True
        if not self.quiet and (self._processes or self._standins or self._emulator):
            print("stopping: worker, loader, stand-ins, emulator…", flush=True)
        while self._processes:
            _name, process = self._processes[-1]
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                self._wait(process)
            self._processes.pop()
        while self._standins:
            with contextlib.suppress(Exception):
                self._standins[-1].stop()
            self._standins.pop()
        if self._emulator is not None:
            self._emulator.stop(self._hurry)
            self._emulator = None

    def _wait(self, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """Until `process` exits; killed after `timeout` s, or at once when hurried."""
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if self._hurry.is_set() or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return
            time.sleep(0.05)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
