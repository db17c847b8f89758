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


def test_a_run_claimed_just_before_a_database_crash_may_run_again() -> None:
    """The account's crash window: a run whose claim was committed (asynchronously) in the
    moment before a PostgreSQL crash may be forgotten with its claim and run again, however
    late it completes; a claim from long before, or a worker's kill, is not forgiven so."""
    from tests.chaos.suite import Fault, claim_forgotten_by_crash

    crash = Fault("pg_crash", 100.0)
    crash.back_at = 101.5
    assert claim_forgotten_by_crash(99.6, crash)  # claimed 0.4 s before: in the window
    assert claim_forgotten_by_crash(100.2, crash)  # while the server was going down
    assert not claim_forgotten_by_crash(95.0, crash)  # claimed long before: durable by then
    kill = Fault("worker_kill", 100.0)
    assert not claim_forgotten_by_crash(99.6, kill)
