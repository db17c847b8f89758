"""The Celery app of the chaos suite's workers: broker, store and the place jobs note their
runs come from the environment the suite sets."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

import hfcelery

app = Celery("hfchaos", broker=os.environ["CHAOS_BROKER_URL"])
app.conf.task_default_queue = "chaos"
app.conf.broker_connection_retry_on_startup = True
app.conf.broker_connection_max_retries = None
hfcelery.init_app(
    app,
    store_url=os.environ["CHAOS_STORE_URL"],
    allowed_modules=["tests.chaos.app"],
    heartbeat_interval_seconds=float(os.environ.get("CHAOS_HEARTBEAT", "2")),
    server_timeout_seconds=float(os.environ.get("CHAOS_SERVER_TIMEOUT", "10")),
    republish_after_seconds=float(os.environ.get("CHAOS_REPUBLISH_AFTER", "20")),
)

_effects: redis.Redis | None = None


def effects() -> redis.Redis:
    """Where runs are noted: a Redis of its own that no fault touches."""
    global _effects
    if _effects is None:
        _effects = redis.Redis.from_url(os.environ["CHAOS_EFFECTS_URL"])
    return _effects


def work(key: str, seconds: float) -> str:
    """A job: note its start, work, note its end."""
    effects().rpush(f"chaos:start:{key}", time.time())
    time.sleep(seconds)
    effects().rpush(f"chaos:done:{key}", time.time())
    return key
