"""Tornado adapters: the standalone server, and the pages mounted in Flower under ``/hf/``."""

from __future__ import annotations

import os
from typing import Any

import tornado.ioloop
import tornado.web
from celery import Celery
from tornado.routing import PathMatches, Rule

from hfcelery.dashboard.core import Dashboard, Request

#: Where the pages live inside Flower (after Flower's own ``--url_prefix``).
FLOWER_MOUNT = "/hf"


def to_request(handler: tornado.web.RequestHandler, root: str, authenticated: bool) -> Request:
    r = handler.request
    return Request(
        method=r.method or "GET",
        path=handler.path_args[0] if handler.path_args else "/",
        query_string=r.query,
        headers={k.lower(): v for k, v in r.headers.get_all()},
        body=r.body or b"",
        client=r.remote_ip,
        root=root,
        authenticated=authenticated,
    )


class PagesHandler(tornado.web.RequestHandler):
    """Hands every request under the pages' root to the core (run in a thread: the store
    blocks)."""

    def initialize(self, dashboard: Dashboard, root: str = "") -> None:
        self.dashboard = dashboard
        self.root = root

    def check_xsrf_cookie(self) -> None:
        """The core checks its own XSRF token."""

    async def _serve(self, *_: Any) -> None:
        request = to_request(self, self.root, authenticated=False)
        response = await tornado.ioloop.IOLoop.current().run_in_executor(
            None, self.dashboard.handle, request
        )
        self.clear()
        self.set_status(response.status)
        for name, value in response.headers:
            if name.lower() == "set-cookie":
                self.add_header(name, value)
            else:
                self.set_header(name, value)
        self.finish(response.body)

    get = post = head = _serve


def make_app(dashboard: Dashboard, root: str = "") -> tornado.web.Application:
    """A Tornado application serving the pages at ``root`` (``""``: the site's root)."""
    return tornado.web.Application(
        [(root + r"(/.*)?", PagesHandler, {"dashboard": dashboard, "root": root})]
    )


def mount_in_flower(flower_app: Any, app: Celery, **options: Any) -> None:
    """Add the pages to a Flower application under ``[url_prefix]/hf/``.

    The handler derives from Flower's own ``BaseHandler``, so Flower's basic auth and OAuth
    decide who may see the pages; without either, only loopback clients are served.
    """
    from flower.views import BaseHandler

    from hfcelery.dashboard.core import DashboardOptions

    prefix = "/" + flower_app.options.url_prefix.strip("/") if flower_app.options.url_prefix else ""
    root = prefix + FLOWER_MOUNT
    dashboard = Dashboard(
        app,
        DashboardOptions(flower_task_url=prefix + "/task/", flower_url=prefix + "/", **options),
    )
    secured = bool(flower_app.options.basic_auth or flower_app.options.auth)

    class FlowerPagesHandler(BaseHandler):  # type: ignore[misc]
        def check_xsrf_cookie(self) -> None:
            """The core checks its own XSRF token."""

        @tornado.web.authenticated
        async def _serve(self, *_: Any) -> None:
            request = to_request(self, root, authenticated=secured)
            response = await tornado.ioloop.IOLoop.current().run_in_executor(
                None, dashboard.handle, request
            )
            self.clear()
            self.set_status(response.status)
            for name, value in response.headers:
                if name.lower() == "set-cookie":
                    self.add_header(name, value)
                else:
                    self.set_header(name, value)
            self.finish(response.body)

        get = post = head = _serve

    add_flower_links(flower_app, root)
    # First, before Flower's catch-all "not found" rule.
    router = flower_app.wildcard_router
    router.rules.insert(
        0, router.process_rule(Rule(PathMatches(root + r"(/.*)?"), FlowerPagesHandler))
    )


def add_flower_links(flower_app: Any, root: str) -> None:
    """Add a "Jobs" link to Flower's navigation and a link from its task page to the job's.

    Flower's templates are read through a loader that inserts the links; Flower's own files
    are left as they are. Should a Flower version change the markup, the links are just absent.
    """
    import tornado.template

    path = flower_app.settings.get("template_path")
    if not path:
        return
    nav_anchor = '<ul class="app-nav app-nav-secondary'
    nav_link = (
        f'<ul class="app-nav navbar-nav"><li class="nav-item">'
        f'<a class="nav-link" href="{root}/">Jobs (hfcelery)</a></li></ul>\n      '
    )
    task_anchor = '<div class="detail-actions">'
    task_link = (
        f'{task_anchor}<a class="btn btn-outline-secondary" '
        f'href="{root}/job/{{{{ url_escape(task.uuid) }}}}">Job in hfcelery</a>'
    )

    class Loader(tornado.template.Loader):
        def _create_template(self, name: str) -> tornado.template.Template:
            with open(os.path.join(self.root, name), "rb") as f:
                text = f.read().decode()
            if name == "navbar.html":
                text = text.replace(nav_anchor, nav_link + nav_anchor, 1)
            elif name == "task.html":
                text = text.replace(task_anchor, task_link, 1)
            return tornado.template.Template(text, name=name, loader=self)

    flower_app.settings["template_loader"] = Loader(path)
