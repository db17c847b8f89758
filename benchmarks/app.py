"""The Celery app the benchmarks run: plain Celery, or the same app with hfcelery loaded.

``BENCH_MODE=plain|hf`` chooses; both use the same broker, queue and reliability settings
(acks late, reject on worker lost, prefetch 1, JSON). With ``BENCH_SQL_COUNT_DIR`` set, each
worker process counts the SQL statements it executes and writes the count there on exit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery, signals
from sqlalchemy import Engine, event

BENCH_QUEUE = "bench"

app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13"))
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

if os.environ.get("BENCH_MODE", "plain") == "hf":
    import hfcelery

    hfcelery.init_app(
        app,
        store_url=os.environ["BENCH_STORE_URL"],
        allowed_modules=["benchmarks.app"],
    )


@app.task(name="bench.noop")
def noop_task() -> None:
    """A no-op Celery task."""


def noop() -> None:
    """A no-op plain function (hfcelery jobs need no decorator)."""


_statements = 0


def _count(*_: Any) -> None:
    global _statements
    _statements += 1


@signals.worker_process_init.connect
def _start_counting(**_: Any) -> None:
    if os.environ.get("BENCH_SQL_COUNT_DIR"):
        event.listen(Engine, "before_cursor_execute", _count)


@signals.worker_process_shutdown.connect
def _write_count(**_: Any) -> None:
    directory = os.environ.get("BENCH_SQL_COUNT_DIR")
    if directory:
        (Path(directory) / f"{os.getpid()}.count").write_text(str(_statements))


def mark_start(key: str, seconds: float) -> None:
    """Note the time each run starts (in the broker's Redis), then work for ``seconds``."""
    import time

    import redis

    client = redis.Redis.from_url(os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13"))
    client.rpush(key, time.time())
    client.close()
    time.sleep(seconds)
