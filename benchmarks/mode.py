"""One benchmark mode (``plain`` or ``hf``), run in its own interpreter by ``benchmarks``.

Prints ``name=value`` lines: the enqueue rate, end-to-end throughput and (hfcelery only) SQL
statements per job, the delay of delayed jobs and the latency of continuations.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from benchmarks.__main__ import start_worker, stop, temp_dir, wait_until
from benchmarks.app import BENCH_QUEUE, app, noop, noop_task

DELAYED_JOBS = 200
DELAYED_SPREAD_SECONDS = 5.0
CONTINUATIONS = 100
CONTINUATION_SPACING_SECONDS = 0.05


def main(mode: str, enqueue_jobs: int, jobs: int) -> None:
    broker = redis.Redis.from_url(app.conf.broker_url)
    enqueue = hf_enqueue() if mode == "hf" else noop_task.apply_async

    for _ in range(50):  # warm up connections and imports
        enqueue()
    broker.delete(BENCH_QUEUE)
    started = time.perf_counter()
    for _ in range(enqueue_jobs):
        enqueue()
    print(f"enqueue_per_second={enqueue_jobs / (time.perf_counter() - started)}")
    broker.delete(BENCH_QUEUE)
    if mode == "hf":
        truncate_store()

    with running_worker(count_sql=mode == "hf") as counts_dir:
        started = time.perf_counter()
        for _ in range(jobs):
            enqueue()
        wait_until(lambda: drained(broker), 1800, "the queue to drain")
        elapsed = time.perf_counter() - started
    print(f"end_to_end_per_second={jobs / elapsed}")
    if mode != "hf":
        return
    import hfcelery

    succeeded = hfcelery.monitoring(app).state_counts()[hfcelery.State.SUCCEEDED]
    if succeeded != jobs:
        raise SystemExit(f"expected {jobs} succeeded jobs, the store has {succeeded}")
    statements = sum(int(p.read_text()) for p in counts_dir.glob("*.count"))
    print(f"statements_per_job={statements / jobs}")

    with running_worker(count_sql=False):
        delays = scheduling_delays()
        latencies = continuation_latencies()
    print(f"schedule_delay_p50={percentile(delays, 50)}")
    print(f"schedule_delay_p99={percentile(delays, 99)}")
    print(f"continuation_latency_p50={percentile(latencies, 50)}")


def hf_enqueue() -> Callable[[], object]:
    from hfcelery import BackgroundJobClient, call

    client = BackgroundJobClient(app)
    return lambda: client.enqueue(call(noop))


@contextmanager
def running_worker(*, count_sql: bool) -> Iterator[Path]:
    work = temp_dir()
    env = {"BENCH_SQL_COUNT_DIR": str(work)} if count_sql else {}
    worker = start_worker(work / "worker.log", env)
    try:
        wait_until(lambda: bool(app.control.ping(timeout=0.5)), 60, "the worker")
        yield work
    finally:
        stop(worker)


def wait_for_succeeded(ids: list[str], what: str) -> None:
    import hfcelery

    api = hfcelery.monitoring(app)

    def done() -> bool:
        time.sleep(0.2)  # poll gently: the worker shares these two cores
        return all(api.job(i).state is hfcelery.State.SUCCEEDED for i in ids)

    wait_until(done, 120, what)


def scheduling_delays() -> list[float]:
    """Seconds from each delayed job's due time to its start; jobs due over 5 s."""
    import hfcelery
    from hfcelery import BackgroundJobClient, call

    client = BackgroundJobClient(app)
    now = datetime.now(UTC)
    ids = [
        client.schedule(
            call(noop), now + timedelta(seconds=1 + DELAYED_SPREAD_SECONDS * random.random())
        )
        for _ in range(DELAYED_JOBS)
    ]
    wait_for_succeeded(ids, "the delayed jobs")
    api = hfcelery.monitoring(app)
    delays = []
    for job_id in ids:
        job = api.job(job_id)
        due = datetime.fromisoformat(job.history[0].data["enqueue_at"])
        start = datetime.fromisoformat(job.history[2].data["started_at"])
        delays.append((start - due).total_seconds())
    return delays


def continuation_latencies() -> list[float]:
    """Seconds from each parent's success to its continuation's start.

    Parents are due one every 50 ms, after their continuation is added, so the latency
    measured is the release's, not a queue's.
    """
    import hfcelery
    from hfcelery import BackgroundJobClient, call

    client = BackgroundJobClient(app)
    first = datetime.now(UTC) + timedelta(seconds=2)
    pairs = []
    for i in range(CONTINUATIONS):
        parent = client.schedule(
            call(noop), first + timedelta(seconds=i * CONTINUATION_SPACING_SECONDS)
        )
        pairs.append((parent, client.continue_job_with(parent, call(noop))))
    wait_for_succeeded([child for _, child in pairs], "the continuations")
    api = hfcelery.monitoring(app)
    latencies = []
    for parent_id, child_id in pairs:
        parent_done = api.job(parent_id).history[-1].created_at
        start = datetime.fromisoformat(api.job(child_id).history[2].data["started_at"])
        latencies.append((start - parent_done).total_seconds())
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def drained(broker: redis.Redis) -> bool:
    return broker.llen(BENCH_QUEUE) == 0 and broker.hlen("unacked") == 0


def truncate_store() -> None:
    from hfcelery.extension import extension_of
    from hfcelery.store.models import Base

    with extension_of(app).store.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    os._exit(0)
