"""The short chaos suite (``make chaos`` runs the full one): jobs created while workers are
killed and Redis and PostgreSQL restart, crash and stay away; nothing may be lost, stuck or run
twice outside a crash window. It runs in a process of its own, on services of its own."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, service_missing
from tests.services import postgres_available

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(900)
def test_no_job_is_lost_stuck_or_run_twice_under_faults(tmp_path: Path) -> None:
    problem = postgres_available()
    if problem is not None:
        service_missing("a private PostgreSQL server (initdb, pg_ctl)", problem)
    seed = random.randrange(1_000_000)  # printed: make chaos CHAOS_ARGS='--short --seed N'
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--short", "--seed", str(seed)],
        cwd=ROOT,
        env={**os.environ, "CHAOS_LOGS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=840,
    )
    print(done.stdout)
    assert done.returncode == 0, f"seed {seed}:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "lost: 0" in done.stdout and "stuck: 0" in done.stdout
