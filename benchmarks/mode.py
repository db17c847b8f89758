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
    finally:
        stop(worker)
    print(f"end_to_end_per_second={jobs / elapsed}")
    if mode == "hf":
        counts = hfcelery.monitoring(app).state_counts()
        if counts[hfcelery.State.SUCCEEDED] != jobs:
            raise SystemExit(f"expected {jobs} succeeded jobs, store has {counts}")
        statements = sum(int(p.read_text()) for p in work.glob("*.count"))
        print(f"statements_per_job={statements / jobs}")


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
