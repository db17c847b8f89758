"""``make demo`` (the quick start) runs to the end on its embedded Redis and SQLite store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.acceptance
def test_quick_start_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.quickstart"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "embedded Redis: redis://127.0.0.1:" in out
    assert "Enqueued -> Processing -> Succeeded" in out
    assert "Scheduled -> Enqueued -> Processing -> Succeeded" in out
    assert "answered on attempt 3" in out
    assert "Enqueued -> Deleted" in out
    assert "Awaiting -> Enqueued -> Processing -> Succeeded" in out  # "world!" after "Hello, "
    assert re.search(
        r"recurring job 'heartbeat-report' .* -> Succeeded, next run \d\d:\d\d:\d\d", out
    )
    assert re.search(r"jobs per state: \{'Succeeded': (9|1\d), 'Failed': 1, 'Deleted': 1\}", out)
    assert "worker and beat stopped" in out
