"""Retention: a worker whose store keeps Succeeded and Deleted jobs for 2 s, cleaning every 1 s."""

from __future__ import annotations

import time
import uuid

import pytest
from celery import Celery
from sqlalchemy import func, select

import hfcelery
from hfcelery import BackgroundJob, State, call
from hfcelery.extension import extension_of
from hfcelery.store.models import Job, JobState
from tests import jobs
from tests.conftest import StartWorker, wait_for

pytestmark = pytest.mark.acceptance

RETENTION_SECONDS = 2


def alive(app: Celery, ids: list[str]) -> tuple[int, int]:
    """How many of ``ids`` still have a job row, and how many history rows they have."""
    with extension_of(app).store.engine.connect() as conn:
        job_rows = conn.execute(select(func.count()).where(Job.id.in_(ids))).scalar_one()
        history = conn.execute(
            select(func.count()).select_from(JobState).where(JobState.job_id.in_(ids))
        ).scalar_one()
    return job_rows, history


def test_store_stays_bounded_under_steady_load(start_worker: StartWorker, test_app: Celery) -> None:
    queue = f"retention-{uuid.uuid4().hex[:8]}"
    start_worker(
        queues=queue,
        env={"HF_TEST_RETENTION": str(RETENTION_SECONDS), "HF_TEST_CLEANUP_INTERVAL": "1"},
    )
    failed = BackgroundJob.enqueue(call(jobs.fail, "kept"), queue=queue)
    ids: list[str] = []
    peak = 0
    for _ in range(32):  # 8 s at 20 jobs per second
        ids.extend(BackgroundJob.enqueue(call(jobs.multiply, 2, 2), queue=queue) for _ in range(5))
        time.sleep(0.25)
        peak = max(peak, alive(test_app, ids)[0])
    # At 20 jobs/s, 2 s of retention and a 1 s cleanup period keep about 60-80 rows alive:
    # far fewer than the 160 written. Without cleanup all 160 would remain.
    assert peak < 120, peak
    wait_for(lambda: alive(test_app, ids) == (0, 0), timeout=20, what="every job to expire")
    kept = hfcelery.monitoring(test_app).job(failed)
    assert kept.state is State.FAILED and kept.expire_at is None
