"""Loads the Celery app when Django starts, as Celery's Django guide does."""

from __future__ import annotations

from examples.django_project.proj.celery import app as celery_app

__all__ = ["celery_app"]
