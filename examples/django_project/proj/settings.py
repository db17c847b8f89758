"""Django settings, with Celery's (``CELERY_*``) and hfcelery's (``CELERY_HFCELERY_*``)."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["examples.django_project.reports"]
ROOT_URLCONF = "examples.django_project.proj.urls"
# Django with hfcelery's pages under /jobs/ (runserver serves this one too).
WSGI_APPLICATION = "examples.django_project.proj.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# Celery, configured the Django way: app.config_from_object(settings, namespace="CELERY").
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("EXAMPLE_QUEUE", "django-example")
# hfcelery's settings, in the same namespace.
CELERY_HFCELERY_STORE_URL = os.environ.get("HFCELERY_STORE_URL", "sqlite:///django-example.db")
CELERY_HFCELERY_ALLOWED_MODULES = ["examples.django_project.reports.jobs"]
