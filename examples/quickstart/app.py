"""The quick start's Celery app: an ordinary Celery app with hfcelery loaded.

``python -m examples.quickstart`` sets the broker and store URLs; run alone, it expects Redis on
127.0.0.1:6379 and keeps its store in ``hfcelery-demo.db``.
"""

from __future__ import annotations

import os

from celery import Celery

import hfcelery

# deploy/ sets CELERY_BROKER_URL (CELERY_REDBEAT_REDIS_URL) and HFCELERY_STORE_URL; `make demo`
# sets the DEMO_* ones.
BROKER_URL = os.environ.get("CELERY_BROKER_URL") or os.environ.get("DEMO_BROKER_URL")
STORE_URL = os.environ.get("HFCELERY_STORE_URL") or os.environ.get("DEMO_STORE_URL")

app = Celery("quickstart", broker=BROKER_URL or "redis://127.0.0.1:6379/0")
app.conf.task_default_queue = "quickstart"
# RedBeat keeps the recurring jobs' entries in a Redis: the broker's, unless it is RabbitMQ.
app.conf.redbeat_redis_url = os.environ.get("CELERY_REDBEAT_REDIS_URL") or app.conf.broker_url
hfcelery.init_app(
    app,
    store_url=STORE_URL or "sqlite:///hfcelery-demo.db",
    allowed_modules=["examples.quickstart.jobs"],
)


@app.task(name="quickstart.send_email")
def send_email(address: str) -> str:
    """An existing Celery task: hfcelery tracks it like any other job."""
    return f"email sent to {address}"
