"""The project's Celery app: hfcelery loaded, and the project's filters registered.

Run a worker with ``celery -A examples.filters_project.app worker``, then
``python -m examples.filters_project``.
"""

from __future__ import annotations

import os

from celery import Celery

import hfcelery
from examples.filters_project import filters

app = Celery(
    "filters_project", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
)
app.conf.task_default_queue = os.environ.get("FILTERS_PROJECT_QUEUE", "filters-project")
hfcelery.init_app(
    app,
    store_url=os.environ.get("HFCELERY_STORE_URL", "sqlite:///filters-project.db"),
    allowed_modules=["examples.filters_project.jobs"],
)
filters.install()  # in the worker and in every process that creates jobs
