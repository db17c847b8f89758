"""The Celery app the benchmarks run: plain Celery, the same app with hfcelery loaded, or plain
Celery with its own database result backend.

``BENCH_MODE=plain|hf|celerydb`` chooses, or a variant of :mod:`benchmarks.bounds` (hfcelery
with a store write taken out, for ``--bounds``); all use the same broker, queue and reliability
settings (acks late, reject on worker lost, prefetch 1, JSON). ``celerydb`` stores results in
``BENCH_STORE_URL``'s PostgreSQL database through ``db+postgresql+psycopg://`` with
``task_track_started=True``. With ``BENCH_SQL_COUNT_DIR`` set, each worker process counts the
SQL statements it executes (:mod:`benchmarks.sqlcount`). In Redis, each worker notes when it
received its first message of :data:`BENCH_QUEUE`, and jobs taken from :data:`LATENCY_QUEUE`
when they finished (after their final state is stored).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery, Task, signals

import benchmarks.sqlcount  # noqa: F401  (counts statements when BENCH_SQL_COUNT_DIR is set)
from benchmarks.bounds import VARIANTS

BENCH_QUEUE = "bench"
#: Jobs sent here note their finish time in Redis (latency figures).
LATENCY_QUEUE = "bench-latency"
#: A queue no job is sent to: workers consume it until a drain starts (``add_consumer``).
IDLE_QUEUE = "bench-idle"
#: Redis list of ``"<task id> <finish time>"`` entries of the jobs of LATENCY_QUEUE.
FINISHED_KEY = "bench:finished"
#: Redis list of the times each worker received its first message of BENCH_QUEUE.
CONSUMING_KEY = "bench:consuming"
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
MODE = os.environ.get("BENCH_MODE", "plain")
#: hfcelery is loaded (``hf``, or a variant of it).
HF = MODE == "hf" or MODE in VARIANTS

app = Celery("bench", broker=BROKER_URL)
app.conf.update(
    task_default_queue=BENCH_QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)

if MODE == "celerydb":
    app.conf.update(
        result_backend="db+" + os.environ["BENCH_STORE_URL"],
        task_ignore_result=False,
        task_track_started=True,
    )
elif HF:
    import hfcelery

    hfcelery.init_app(
        app,
        store_url=os.environ["BENCH_STORE_URL"],
        allowed_modules=["benchmarks.app"],
    )
    if MODE in VARIANTS:
        from benchmarks.bounds import remove

        remove(MODE)


@app.task(name="bench.noop")
def noop_task() -> None:
    """A no-op Celery task."""


def noop() -> None:
    """A no-op plain function (hfcelery jobs need no decorator)."""


_finish_notes: redis.Redis | None = None
_consuming_noted = False


@signals.task_received.connect
def _note_consuming(request: Any = None, **_: Any) -> None:
    """The worker's first message of BENCH_QUEUE: when it started consuming (drain figures).

    A queue added by ``add_consumer`` is only read once the Redis transport's pending BRPOP
    on the worker's other queues returns (up to 1 s): the drain is timed from here.
    """
    global _consuming_noted
    if _consuming_noted or request is None:
        return
    if (request.delivery_info or {}).get("routing_key") == BENCH_QUEUE:
        _consuming_noted = True
        client = redis.Redis.from_url(BROKER_URL)
        client.rpush(CONSUMING_KEY, time.time())
        client.close()


@signals.task_postrun.connect
def _note_finish(task_id: str = "", task: Task | None = None, **_: Any) -> None:
    """A job of LATENCY_QUEUE notes when it finished (hfcelery: after Succeeded is stored)."""
    global _finish_notes
    if task is None or (task.request.delivery_info or {}).get("routing_key") != LATENCY_QUEUE:
        return
    if _finish_notes is None:
        _finish_notes = redis.Redis.from_url(BROKER_URL)
    _finish_notes.rpush(FINISHED_KEY, f"{task_id} {time.time()}")


def mark_start(key: str, seconds: float) -> None:
    """Note the time each run starts (in the broker's Redis), then work for ``seconds``."""
    client = redis.Redis.from_url(BROKER_URL)
    client.rpush(key, time.time())
    client.close()
    time.sleep(seconds)
