"""An ordinary Celery project: its app, configured from a settings module as most projects do.

The one line that adds hfcelery is marked below; everything else is plain Celery.
"""

from __future__ import annotations

import os

from celery import Celery

import hfcelery

app = Celery("existing_project")
app.config_from_object("examples.existing_celery_project.settings")
app.autodiscover_tasks(["examples.existing_celery_project"], related_name="tasks", force=True)

if os.environ.get("EXISTING_PROJECT_WITHOUT_HFCELERY") != "1":  # (the comparison runs without)
    hfcelery.init_app(app)  # <- the one line: every task is now a tracked job
