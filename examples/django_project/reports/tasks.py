"""An ordinary Celery task of the Django app, found by ``app.autodiscover_tasks()``."""

from __future__ import annotations

from celery import shared_task


@shared_task
def send_report(region: str) -> str:
    return f"sent report for {region}"
