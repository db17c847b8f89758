"""hfcelery's state-report pages: one core, and adapters for Tornado, Flower, ASGI and WSGI."""

from __future__ import annotations

from hfcelery.dashboard.core import (
    API_PREFIX,
    Authorization,
    Dashboard,
    DashboardOptions,
    Request,
    Response,
)
from hfcelery.dashboard.web import asgi_app, wsgi_app

__all__ = [
    "API_PREFIX",
    "Authorization",
    "Dashboard",
    "DashboardOptions",
    "Request",
    "Response",
    "asgi_app",
    "wsgi_app",
]
