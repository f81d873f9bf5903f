"""The worker's cold start does not load the loader's clients (Sheets, Cloud Tasks)."""

import subprocess
import sys

from tests.support.servers import ROOT

PROBE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("main", "worker/main.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(sorted(m for m in ("googleapiclient.discovery", "google.cloud.tasks_v2") if m in sys.modules))
"""


def test_the_worker_does_not_import_the_loaders_clients():
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout
    assert out.strip() == "[]"
