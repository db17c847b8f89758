"""A view that enqueues a job and links to its page."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from examples.django_project.reports.jobs import build_report
from hfcelery import BackgroundJob, call


def order_report(request: HttpRequest, region: str) -> JsonResponse:
    job_id = BackgroundJob.enqueue(call(build_report, region))
    return JsonResponse({"job_id": job_id, "page": f"/jobs/job/{job_id}"})
