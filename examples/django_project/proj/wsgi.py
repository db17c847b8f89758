"""The WSGI application: Django, with hfcelery's pages under ``/jobs/``.

The pages are a WSGI application of their own (``hfcelery.dashboard.wsgi_app``); requests
under ``/jobs`` go to them, everything else to Django.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

from hfcelery.dashboard import Request, wsgi_app

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.proj.settings")

JOBS_PREFIX = "/jobs"

django_application = get_wsgi_application()


def is_staff(request: Request) -> bool:
    """Who may see the pages. A real project checks its own session here; this example trusts
    a header its reverse proxy sets after login."""
    return request.headers.get("x-staff-user", "") != ""


from examples.django_project.proj.celery import app as celery_app  # noqa: E402

jobs_application = wsgi_app(celery_app, authorization=is_staff)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Send ``/jobs...`` to the pages (with the prefix moved to SCRIPT_NAME), the rest to
    Django."""
    path = environ.get("PATH_INFO", "")
    if path == JOBS_PREFIX or path.startswith(JOBS_PREFIX + "/"):
        environ = {
            **environ,
            "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + JOBS_PREFIX,
            "PATH_INFO": path[len(JOBS_PREFIX) :] or "/",
        }
        return jobs_application(environ, start_response)
    return django_application(environ, start_response)
