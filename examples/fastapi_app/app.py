"""A FastAPI app that enqueues jobs and shows them on hfcelery's pages, mounted at ``/jobs``.

Run it with ``uvicorn examples.fastapi_app.app:api`` beside a worker
(``celery -A examples.fastapi_app.app worker``). ``POST /reports/eu`` enqueues a job and
answers with a link to its page.
"""

from __future__ import annotations

import hmac
import os

from celery import Celery
from fastapi import FastAPI

import hfcelery
from hfcelery import BackgroundJob, call
from hfcelery.dashboard import Request, asgi_app

celery_app = Celery("fastapi_example", broker=os.environ.get("CELERY_BROKER_URL"))
celery_app.conf.task_default_queue = os.environ.get("EXAMPLE_QUEUE", "fastapi-example")
hfcelery.init_app(
    celery_app,
    store_url=os.environ.get("HFCELERY_STORE_URL", "sqlite:///fastapi-example.db"),
    allowed_modules=["examples.fastapi_app.jobs"],
)

JOBS_PATH = "/jobs"


def is_operator(request: Request) -> bool:
    """Who may see the pages: whoever sends the operators' token (your app's own login in a
    real project). Without an authorization callable only local clients are served."""
    token = os.environ.get("OPS_TOKEN", "")
    sent = request.headers.get("x-ops-token", "")
    return bool(token) and hmac.compare_digest(token.encode(), sent.encode())


api = FastAPI(title="hfcelery FastAPI example")
api.mount(JOBS_PATH, asgi_app(celery_app, authorization=is_operator))


@api.post("/reports/{region}")
def order_report(region: str) -> dict[str, str]:
    """Enqueue a report job; answer with its id and the page that shows it."""
    from examples.fastapi_app.jobs import build_report

    job_id = BackgroundJob.enqueue(call(build_report, region))
    return {"job_id": job_id, "page": f"{JOBS_PATH}/job/{job_id}"}
