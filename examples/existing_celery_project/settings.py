"""The project's Celery settings (``app.config_from_object``), hfcelery's among them."""

from __future__ import annotations

import os

broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
result_backend = os.environ.get("CELERY_RESULT_BACKEND", broker_url)
task_default_queue = os.environ.get("EXISTING_PROJECT_QUEUE", "existing-project")
task_serializer = "json"
result_expires = 3600

hfcelery_store_url = os.environ.get("HFCELERY_STORE_URL", "sqlite:///existing-project.db")
