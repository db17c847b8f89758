"""The SQL statements hfcelery's worker executes per job stay at today's figure.

A real worker (prefork, 2 processes) of tests/app.py runs no-op jobs against the machine's
PostgreSQL (under CI=true a missing PostgreSQL fails the test; elsewhere it is skipped).
:mod:`benchmarks.sqlcount`, the counter behind ``make bench``'s "SQL statements per job", counts
in the worker's pool processes every statement, every committed transaction, and the statements
of each task run from its prerun to its postrun. Every job but each process's first must stay
within today's figure; the first may add the process's one-time work (the store's schema check),
bounded in the totals. The worker's main process is left out: its heartbeat and maintenance
depend on time, not on jobs. A statement added to the path of every job makes this test fail;
no timing is asserted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import sqlcount
from hfcelery import BackgroundJob, State, call
from hfcelery.monitoring import Monitoring
from tests import jobs
from tests.conftest import StartWorker, wait_state

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres_only]

#: Measured when this test was written (``make bench`` printed 2.00): on PostgreSQL the claim
#: (Enqueued to Processing, with its history entry) and the finish (to Succeeded, with its
#: history entry) are one data-modifying statement each, in autocommit mode.
STATEMENTS_PER_JOB = 2
COMMITS_PER_JOB = 2
JOBS = 40
#: Statements a pool process may run once (today: 2 at most, the store's schema check on its
#: first connection, inside its first job), with some room for more one-time work.
ONCE_PER_PROCESS = 4
PROCESSES = 2


def _celery_task() -> Any:
    from tests.app import add

    return add.s(1, 2)


@pytest.mark.parametrize(
    "make_call",
    [lambda: call(jobs.no_arguments), _celery_task],
    ids=["function", "celery-task"],
)
def test_worker_statements_per_successful_noop_job(
    postgres_url: str,
    test_env: dict[str, str],
    start_worker: StartWorker,
    api: Monitoring,
    tmp_path: Path,
    make_call: Callable[[], Any],
) -> None:
    assert test_env["HF_TEST_STORE_URL"] == postgres_url, "the jobs must run on PostgreSQL"
    queue = f"stmtcount-{uuid.uuid4().hex[:8]}"  # no other test's messages
    counts_dir = tmp_path / "sql"
    counts_dir.mkdir()
    worker = start_worker(
        queues=queue,
        concurrency=PROCESSES,
        args=["--include", "benchmarks.sqlcount"],
        env={sqlcount.ENV: str(counts_dir)},
    )
    ids = [BackgroundJob.enqueue(make_call(), queue=queue) for _ in range(JOBS)]
    for job_id in ids:
        job = wait_state(api, job_id)
        assert job.state is State.SUCCEEDED, job
    worker.stop()  # the pool processes write their counts as they exit

    counts = sqlcount.read(counts_dir)
    assert counts.processes == PROCESSES, worker.log()
    assert counts.tasks == JOBS, counts
    worst = max(counts.per_task)
    assert worst <= STATEMENTS_PER_JOB, (
        f"a job ran {worst} SQL statements in the worker (today: {STATEMENTS_PER_JOB}); "
        f"statements per job -> jobs: {dict(counts.per_task)} (first jobs of each process: "
        f"{dict(counts.first_task)})"
    )
    allowed = STATEMENTS_PER_JOB * JOBS + ONCE_PER_PROCESS * PROCESSES
    assert counts.statements <= allowed, (
        f"{counts.statements} SQL statements in the worker's processes for {JOBS} jobs "
        f"(allowed: {STATEMENTS_PER_JOB} per job and {ONCE_PER_PROCESS} per process); {counts}"
    )
    allowed = COMMITS_PER_JOB * JOBS + ONCE_PER_PROCESS * PROCESSES
    assert counts.commits <= allowed, (
        f"{counts.commits} transactions committed in the worker's processes for {JOBS} jobs "
        f"(allowed: {COMMITS_PER_JOB} per job and {ONCE_PER_PROCESS} per process); {counts}"
    )
