"""``make demo``: the quick start, then the pages with jobs in every state until Ctrl-C, which
leaves no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for
from tests.test_dashboard_browser import free_port

pytestmark = pytest.mark.acceptance


def processes_in(directory: Path) -> list[int]:
    """Processes whose working directory is ``directory`` (what the demo started there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_demo_serves_pages_with_every_state_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "out.txt"
    with out.open("wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "examples.quickstart", "--serve"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "DEMO_PAGES_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b"state-report pages:" in out.read_bytes(), timeout=150, interval=0.5)
        assert f"http://127.0.0.1:{port}/" in out.read_text()

        def every_state() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/stats") as response:
                states = json.load(response)["states"]
            return all(n > 0 for n in states.values())

        wait_for(every_state, timeout=60, interval=1, what="a job in every state")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
        demo.send_signal(signal.SIGINT)
        # Not a timing assertion: a warm shutdown would wait minutes for the demo's long job.
        assert demo.wait(timeout=60) == 0, out.read_text()
    finally:
        if demo.poll() is None:  # the test failed early: let the demo stop what it started
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
        left = processes_in(tmp_path.resolve())
        for pid in left:  # never leave a worker behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == []
    assert "worker and beat stopped" in out.read_text()
