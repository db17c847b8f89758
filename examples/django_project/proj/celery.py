"""The project's Celery app, configured from Django's settings, with hfcelery loaded."""

from __future__ import annotations

import os

from celery import Celery

import hfcelery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.proj.settings")

app = Celery("django_example")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
hfcelery.init_app(app)  # store URL and allowed modules come from CELERY_HFCELERY_* settings
