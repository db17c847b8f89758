"""One benchmark mode (``plain`` or ``hf``), run in its own interpreter by ``benchmarks``."""

from __future__ import annotations

import os
import sys
import time

import redis

from benchmarks.__main__ import start_worker, stop, temp_dir, wait_until
from benchmarks.app import BENCH_QUEUE, app, noop, noop_task


def main(mode: str, enqueue_jobs: int, jobs: int) -> None:
    broker = redis.Redis.from_url(app.conf.broker_url)
    if mode == "hf":
        import hfcelery
        from hfcelery import BackgroundJobClient, call

        client = BackgroundJobClient(app)

        def enqueue() -> None:
            client.enqueue(call(noop))
    else:

        def enqueue() -> None:
            noop_task.apply_async()

    for _ in range(50):  # warm up connections and imports
        enqueue()
    drain(broker)

    started = time.perf_counter()
    for _ in range(enqueue_jobs):
        enqueue()
    print(f"enqueue_per_second={enqueue_jobs / (time.perf_counter() - started)}")
    drain(broker)
    if mode == "hf":
        from hfcelery.extension import extension_of

        truncate_store(extension_of(app).store)

    work = temp_dir()
    worker = start_worker(work / "worker.log", {"BENCH_SQL_COUNT_DIR": str(work)})
    try:
        wait_until(lambda: bool(app.control.ping(timeout=0.5)), 60, "the worker")
        started = time.perf_counter()
        for _ in range(jobs):
            enqueue()
        wait_until(lambda: drained(broker), 1800, "the queue to drain")
        elapsed = time.perf_counter() - started
        if mode == "hf":
            delays = scheduling_delays(broker)
            print(f"schedule_delay_p50={percentile(delays, 50)}")
            print(f"schedule_delay_p99={percentile(delays, 99)}")
    finally:
        stop(worker)
    print(f"end_to_end_per_second={jobs / elapsed}")
    if mode == "hf":
        counts = hfcelery.monitoring(app).state_counts()
        total = jobs + DELAYED_JOBS
        if counts[hfcelery.State.SUCCEEDED] != total:
            raise SystemExit(f"expected {total} succeeded jobs, store has {counts}")
        statements = sum(int(p.read_text()) for p in work.glob("*.count"))
        print(f"statements_per_job={statements / total}")


DELAYED_JOBS = 200


def scheduling_delays(broker: redis.Redis, count: int = DELAYED_JOBS) -> list[float]:
    """Seconds from each delayed job's due time to its start, for jobs due over 5 s."""
    import random
    from datetime import UTC, datetime, timedelta

    import hfcelery
    from hfcelery import BackgroundJobClient, call

    client = BackgroundJobClient(app)
    now = datetime.now(UTC)
    ids = [
        client.schedule(call(noop), now + timedelta(seconds=1 + 5 * random.random()))
        for _ in range(count)
    ]
    api = hfcelery.monitoring(app)
    wait_until(
        lambda: all(api.job(i).state is hfcelery.State.SUCCEEDED for i in ids), 120, "delayed"
    )
    delays = []
    for job_id in ids:
        job = api.job(job_id)
        due = datetime.fromisoformat(job.history[0].data["enqueue_at"])
        start = datetime.fromisoformat(job.history[2].data["started_at"])
        delays.append((start - due).total_seconds())
    return delays


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def drained(broker: redis.Redis) -> bool:
    return broker.llen(BENCH_QUEUE) == 0 and broker.hlen("unacked") == 0


def drain(broker: redis.Redis) -> None:
    broker.delete(BENCH_QUEUE)


def truncate_store(store: object) -> None:
    from hfcelery.store.models import Base

    with store.engine.begin() as conn:  # type: ignore[attr-defined]
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    os._exit(0)
