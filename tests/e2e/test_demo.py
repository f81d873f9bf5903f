"""`make demo`'s runner as a user meets it: the whole stack in real processes, the summary and
results file at the end, and nothing left running after Ctrl+C."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import ROOT

pytestmark = pytest.mark.emulator


def start_demo(*args: str) -> subprocess.Popen[str]:
    if shutil.which("gcloud") is None:
        pytest.skip("the demo needs the gcloud CLI's Firestore emulator")
    env = {k: v for k, v in os.environ.items() if k != "DATASTORE_EMULATOR_HOST"}
    return subprocess.Popen(
        [sys.executable, "-m", "local.demo", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent is gone for every purpose here.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def test_the_demo_runs_every_sample_row_to_its_end(tmp_path):
    demo = start_demo("--latency", "0.3")
    out, _ = demo.communicate(timeout=300)
    assert demo.returncode == 0, out
    assert "Dify STAND-IN" in out
    assert re.search(r"SUCCESS\s*│\s*29", out), out
    assert re.search(r"FAILED\s*│\s*1\b", out), out
    assert "'title' is required, but its cell is empty" in out  # the failed row, explained
    # The transient failure, retried, and why.
    assert re.search(r"succeeded after 2 attempts \(before that: \S+", out), out
    rows = results_of(out, 30)
    assert [r["id"] for r in rows][:2] == ["ko-001", "ko-002"]
    assert rows[0]["status"] == "SUCCESS"
    assert "고양이는" in rows[0]["outputs"]
    failed = next(r for r in rows if r["id"] == "ko-012")
    assert (failed["status"], failed["error"].split(":")[0]) == ("FAILED", "input_check")


def results_of(out: str, count: int) -> list[dict[str, str]]:
    """The demo's results file (read, then removed): a BOM first, for Excel."""
    [path] = re.findall(rf"results: {count} rows written to (\S+)", out)
    raw = (ROOT / path).read_bytes()
    (ROOT / path).unlink()
    assert raw.startswith("\ufeff".encode())
    return list(csv.DictReader(raw.decode("utf-8-sig").splitlines(keepends=True)))


def test_the_results_file_keeps_every_sheet_row_and_defuses_formulas(tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        'id,title\nq-1,=HYPERLINK("https://evil.example")\n,no id here\nq-1,same id\nq-2,fine\n',
        encoding="utf-8",
    )
    demo = start_demo("--latency", "0.1", "--csv", str(sheet))
    out, _ = demo.communicate(timeout=300)
    assert demo.returncode == 0, out
    rows = results_of(out, 4)
    assert [(r["row"], r["id"], r["status"]) for r in rows] == [
        ("2", "q-1", "SUCCESS"),
        ("3", "", "INVALID"),
        ("4", "q-1", "DUPLICATE_ID"),
        ("5", "q-2", "SUCCESS"),
    ]
    assert rows[0]["title"] == '\'=HYPERLINK("https://evil.example")'
    assert rows[1]["error"] == "the id cell is empty"


def test_the_two_workflow_demo_file_carries_inputs_and_the_unroutable_row():
    demo = start_demo("--latency", "0.1", "--two-workflows")
    out, _ = demo.communicate(timeout=300)
    assert demo.returncode == 0, out
    rows = results_of(out, 9)
    assert all(r["질문"] and r["학년"] for r in rows)
    unroutable = next(r for r in rows if r["id"] == "x-001")
    assert unroutable["status"] == "INVALID"
    assert "poetry" in unroutable["error"]


def test_ctrl_c_stops_everything_the_demo_started():
    demo = start_demo("--latency", "5")  # slow enough to be interrupted mid-batch
    assert demo.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while not any(line.startswith("loader:") for line in lines):
        assert time.monotonic() < deadline, "".join(lines)
        line = demo.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    text = "".join(lines)
    pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
    emulator_port = re.search(r"Firestore emulator \(Datastore mode\): 127.0.0.1:(\d+)", text)
    assert len(pids) == 2
    assert emulator_port
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 130, text + rest
    assert "stopped: emulator, stand-ins, worker and loader" in rest
    assert not [pid for pid in pids if alive(pid)]
    assert processes_mentioning(f"127.0.0.1:{emulator_port.group(1)}") == []
    assert processes_mentioning(f"--port={emulator_port.group(1)}") == []
