"""One benchmark run of one mode, in its own interpreter, started by ``python -m benchmarks``.

Modes (``BENCH_MODE``, see :mod:`benchmarks.app`): ``plain`` Celery, ``hf`` (hfcelery on
PostgreSQL), ``celerydb`` (plain Celery with its database result backend), and the variants of
:mod:`benchmarks.bounds` (hfcelery with a store write taken out, for ``--bounds``). Commands:

``round MODE``
    One round of the comparison, with a prefork worker of 2 processes (acks_late, prefetch 1)
    that consumes no bench queue at first: the enqueue rate (single client thread, the worker
    not consuming), 1,000 jobs at once (hfcelery's ``enqueue_many``; plain Celery's loop of
    ``apply_async``), the drain (jobs already queued, then ``add_consumer``, until the last
    is acknowledged), end to end (enqueue while the worker consumes, until the last is
    acknowledged), the latency of single jobs sent one at a time on the idle worker (the
    enqueue call to the job's end: for hfcelery, its Succeeded state stored), and, after the
    worker stopped, the SQL statements and commits per job of its processes.
``extras``
    hfcelery only: the delay of delayed jobs and the latency of continuations.
``scale MODE --workers N``
    N workers of 2 processes drain ``--drain-jobs`` queued jobs, then take jobs sent at half that
    rate for the latency under load; with the CPU of each part.

Prints one ``BENCH_RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from benchmarks import sqlcount
from benchmarks.__main__ import start_worker, stop, temp_dir, wait_until
from benchmarks.app import (
    BENCH_QUEUE,
    CONSUMING_KEY,
    FINISHED_KEY,
    HF,
    IDLE_QUEUE,
    LATENCY_QUEUE,
    MODE,
    app,
    noop,
    noop_task,
)
from benchmarks.bounds import VARIANTS
from benchmarks.resources import Meter, process_tree

DELAYED_JOBS = 200
DELAYED_SPREAD_SECONDS = 5.0
CONTINUATIONS = 100
CONTINUATION_SPACING_SECONDS = 0.05
WARM_UP_JOBS = 50
LATENCY_WARM_UP = 10
LATENCY_PAUSE_SECONDS = 0.01
STALL_SECONDS = 120
#: Store tables whose rows the bench discards between phases (the workers' rows stay).
KEPT_TABLES = ("hfcelery_servers", "hfcelery_locks")

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

Result = dict[str, Any]
Enqueue = Callable[[str | None], str]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["round", "extras", "scale"])
    parser.add_argument("mode", nargs="?", default=MODE)
    parser.add_argument("--enqueue-jobs", type=int, default=0)
    parser.add_argument("--batch-jobs", type=int, default=0)
    parser.add_argument("--drain-jobs", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--latency-samples", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.mode != MODE:
        raise SystemExit(f"BENCH_MODE is {MODE}, the command asks for {args.mode}")
    bench = Bench()
    try:
        if args.command == "round":
            result = bench.round(args)
        elif args.command == "extras":
            result = bench.extras()
        else:
            result = bench.scale(args)
    finally:
        bench.close()
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def progress(message: str) -> None:
    print(f"  [{MODE}] {message}", file=sys.stderr, flush=True)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    hostname: str


class Bench:
    """The figures of one mode: its client, its workers, the meter of their CPU."""

    def __init__(self) -> None:
        self.broker = redis.Redis.from_url(app.conf.broker_url)
        self.notes = redis.Redis.from_url(app.conf.broker_url, decode_responses=True)
        self.store_url = os.environ.get("BENCH_STORE_URL")
        self.workers: list[Worker] = []
        self.meter = Meter(
            os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL),
            self.store_url if MODE != "plain" else None,
            self.worker_pids,
            self.broker,
            self.main_pids,
        )
        self.enqueue = self._enqueuer()

    def close(self) -> None:
        self.meter.close()

    def _enqueuer(self) -> Enqueue:
        if not HF:

            def plain(queue: str | None) -> str:
                return str(noop_task.apply_async(queue=queue).id)

            return plain
        from hfcelery import BackgroundJobClient, call

        client = BackgroundJobClient(app)

        def hf(queue: str | None) -> str:
            return client.enqueue(call(noop), queue=queue)

        return hf

    def main_pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]

    def worker_pids(self) -> list[int]:
        return [pid for w in self.workers for pid in process_tree(w.process.pid)]

    # -- the workers ---------------------------------------------------------------------------

    @contextmanager
    def running(self, count: int, queues: str, *, count_sql: bool) -> Iterator[Path]:
        """``count`` workers of 2 processes consuming ``queues``; yields where SQL counts go."""
        work = temp_dir()
        env = {sqlcount.ENV: str(work)} if count_sql else {}
        for i in range(count):
            hostname = f"bench{i}-{uuid.uuid4().hex[:6]}@bench"
            process = start_worker(work / f"worker{i}.log", env, queues=queues, hostname=hostname)
            self.workers.append(Worker(process, hostname))
        try:
            names = [w.hostname for w in self.workers]
            wait_until(
                lambda: len(app.control.ping(destination=names, timeout=0.5)) == len(names),
                90,
                "the workers",
            )
            yield work
        finally:
            for worker in self.workers:
                stop(worker.process)
            self.workers = []

    def consume(self, queue: str) -> None:
        """Have every worker consume ``queue``; back as soon as all of them said so.

        ``limit`` matters: a broadcast with ``reply=True`` otherwise waits its whole timeout.
        """
        names = [w.hostname for w in self.workers]
        replies = app.control.add_consumer(
            queue, destination=names, reply=True, limit=len(names), timeout=10
        )
        if len(replies) != len(names):
            raise SystemExit(f"add_consumer: {len(replies)} of {len(names)} workers replied")

    def wait_drained(self) -> None:
        """Until the bench queue is empty and every message taken is acknowledged; fails when
        nothing moves for STALL_SECONDS."""
        last, moved = (-1, -1), time.monotonic()
        while True:
            now = (self.broker.llen(BENCH_QUEUE), self.broker.hlen("unacked"))
            if now == (0, 0):
                return
            if now != last:
                last, moved = now, time.monotonic()
            elif time.monotonic() - moved > STALL_SECONDS:
                raise SystemExit(f"the drain stalled: {now[0]} queued, {now[1]} unacknowledged")
            time.sleep(0.01)

    def discard(self) -> None:
        """Drop the queued messages, and (hfcelery) their jobs, which would be sent again."""
        self.broker.delete(BENCH_QUEUE)
        if not HF:
            return
        from hfcelery.extension import extension_of
        from hfcelery.store.models import Base

        with extension_of(app).store.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                if table.name not in KEPT_TABLES:
                    conn.execute(table.delete())

    def succeeded(self) -> int:
        if not HF:
            return 0
        import hfcelery

        return hfcelery.monitoring(app).state_counts()[hfcelery.State.SUCCEEDED]

    # -- the figures -----------------------------------------------------------------------------

    def round(self, args: argparse.Namespace) -> Result:
        result: Result = {}
        with self.running(1, f"{IDLE_QUEUE},{LATENCY_QUEUE}", count_sql=MODE != "plain") as work:
            if args.enqueue_jobs:
                for _ in range(WARM_UP_JOBS):  # connections and imports
                    self.enqueue(None)
                self.discard()
                started = time.perf_counter()
                for _ in range(args.enqueue_jobs):
                    self.enqueue(None)
                result["enqueue_per_second"] = args.enqueue_jobs / (time.perf_counter() - started)
                self.discard()
                # A plain Celery task sent the plain way: with hfcelery, it is tracked as a job.
                started = time.perf_counter()
                for _ in range(args.enqueue_jobs):
                    noop_task.apply_async()
                elapsed = time.perf_counter() - started
                result["apply_async_per_second"] = args.enqueue_jobs / elapsed
                self.discard()
            if args.batch_jobs:
                result.update(self.batch(args.batch_jobs))
                self.discard()
            expected = self.succeeded()  # the discarded jobs of earlier rounds are gone
            if args.drain_jobs:
                result.update(self.drain(args.drain_jobs))
                expected += args.drain_jobs
            else:
                self.consume(BENCH_QUEUE)
            if args.jobs:
                started = time.perf_counter()
                for _ in range(args.jobs):
                    self.enqueue(None)
                self.wait_drained()
                result["end_to_end_per_second"] = args.jobs / (time.perf_counter() - started)
                expected += args.jobs
            if args.latency_samples:
                result["latency"] = self.latencies(args.latency_samples)
                expected += args.latency_samples + LATENCY_WARM_UP
        if MODE == "hf" and (succeeded := self.succeeded()) != expected:
            raise SystemExit(f"expected {expected} succeeded jobs, the store has {succeeded}")
        if MODE in VARIANTS:  # jobs left Processing or Enqueued: later rounds must not see them
            self.discard()
        if MODE != "plain":
            counts = sqlcount.read(work)
            result["statements_per_job"] = counts.per_job
            result["commits_per_job"] = counts.commits / counts.tasks if counts.tasks else None
            result["statements_in_job"] = counts.in_tasks / counts.tasks if counts.tasks else None
        return result

    def batch(self, jobs: int) -> Result:
        """1,000 jobs at once: hfcelery's ``enqueue_many``, or plain Celery's loop."""
        if HF:
            import hfcelery
            from hfcelery import call

            if not hasattr(hfcelery.BackgroundJob, "enqueue_many"):
                return {"batch_available": False}
            hfcelery.BackgroundJob.enqueue_many([call(noop) for _ in range(10)])  # warm up
            self.discard()
            started = time.perf_counter()
            ids = hfcelery.BackgroundJob.enqueue_many([call(noop) for _ in range(jobs)])
            elapsed = time.perf_counter() - started
            if len(ids) != jobs or self.broker.llen(BENCH_QUEUE) != jobs:
                raise SystemExit(f"enqueue_many: {len(ids)} ids for {jobs} calls")
        else:
            for _ in range(10):  # warm up
                noop_task.apply_async()
            self.discard()
            started = time.perf_counter()
            for _ in range(jobs):
                noop_task.apply_async()
            elapsed = time.perf_counter() - started
        return {"batch_available": True, "batch_per_second": jobs / elapsed}

    def fill(self, jobs: int) -> None:
        """Queue ``jobs`` no-op jobs, quickly (not a figure)."""
        if HF:
            import hfcelery

            if hasattr(hfcelery.BackgroundJob, "enqueue_many"):
                for start in range(0, jobs, 1000):
                    calls = [hfcelery.call(noop) for _ in range(min(1000, jobs - start))]
                    hfcelery.BackgroundJob.enqueue_many(calls)
                return
        for _ in range(jobs):
            self.enqueue(None)

    def drain(self, jobs: int) -> Result:
        """Jobs already queued, then the workers are told to consume them: from the first
        message a worker received (it notes the time) until the last is acknowledged."""
        self.fill(jobs)
        self.broker.delete(CONSUMING_KEY)
        self.meter.start()
        self.consume(BENCH_QUEUE)
        self.wait_drained()
        finished = time.time()
        usage = self.meter.stop()
        started = min(float(t) for t in self.notes.lrange(CONSUMING_KEY, 0, -1))
        # The CPU window (usage.seconds) starts with add_consumer: up to 1 s longer, idle.
        return {
            "drain_per_second": jobs / (finished - started),
            "drain_seconds": finished - started,
            "drain_usage": usage.as_dict(),
        }

    def latencies(self, samples: int) -> list[float]:
        """Seconds from each enqueue call to the job's end, one job at a time."""
        self.broker.delete(FINISHED_KEY)
        figures = []
        for i in range(LATENCY_WARM_UP + samples):
            sent = time.time()
            job_id = self.enqueue(LATENCY_QUEUE)
            popped = self.notes.blpop([FINISHED_KEY], timeout=60)
            if popped is None:
                raise SystemExit("a latency job did not finish within 60 s")
            finished_id, finished_at = str(popped[1]).split()
            if finished_id != job_id:
                raise SystemExit(f"latency: {finished_id} finished, {job_id} expected")
            if i >= LATENCY_WARM_UP:
                figures.append(float(finished_at) - sent)
            time.sleep(LATENCY_PAUSE_SECONDS)
        return figures

    def scale(self, args: argparse.Namespace) -> Result:
        """``--workers`` workers drain ``--jobs`` jobs; then the latency at half that rate."""
        with self.running(args.workers, f"{IDLE_QUEUE},{LATENCY_QUEUE}", count_sql=False):
            progress(f"{args.workers} worker(s): queueing {args.drain_jobs:,} jobs")
            result = self.drain(args.drain_jobs)
            rate = result["drain_per_second"] / 2
            progress(f"drained at {result['drain_per_second']:,.0f}/s; latency at {rate:,.0f}/s")
            result.update(self.latency_under_load(rate, args.latency_seconds))
        result["processes"] = args.workers * 2
        return result

    def latency_under_load(self, rate: float, seconds: float) -> Result:
        """Jobs sent at ``rate`` per second for ``seconds``: their enqueue-to-end latency."""
        self.broker.delete(FINISHED_KEY)
        jobs = max(20, int(rate * seconds))
        sent: dict[str, float] = {}
        started = time.perf_counter()
        for i in range(jobs):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            sent[self.enqueue(LATENCY_QUEUE)] = at
        achieved = jobs / (time.perf_counter() - started)
        wait_until(lambda: self.broker.llen(FINISHED_KEY) >= jobs, 600, "the latency jobs")
        figures = []
        for entry in self.notes.lrange(FINISHED_KEY, 0, -1):
            job_id, finished_at = str(entry).split()
            figures.append(float(finished_at) - sent[job_id])
        return {"latency": figures, "latency_rate": achieved}

    def extras(self) -> Result:
        with self.running(1, BENCH_QUEUE, count_sql=False):
            delays = scheduling_delays()
            latencies = continuation_latencies()
        return {
            "schedule_delay_p50": percentile(delays, 50),
            "schedule_delay_p99": percentile(delays, 99),
            "continuation_latency_p50": percentile(latencies, 50),
        }


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


if __name__ == "__main__":
    main(sys.argv[1:])
    os._exit(0)
