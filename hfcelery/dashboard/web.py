"""Adapters for web apps: ASGI (FastAPI, Starlette) and WSGI (Django, Flask).

Mount the returned application under a path of your app; the pages find their root from
ASGI's ``root_path`` or WSGI's ``SCRIPT_NAME``. The store is blocking, so the ASGI adapter runs
each request in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

from celery import Celery

from hfcelery.dashboard.core import (
    Authorization,
    Dashboard,
    DashboardOptions,
    Request,
    Response,
    text_response,
)

ASGIApp = Callable[
    [
        dict[str, Any],
        Callable[[], Awaitable[dict[str, Any]]],
        Callable[[dict[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
MAX_BODY_BYTES = 1 << 20


def _dashboard(
    app: Celery,
    authorization: Authorization | None,
    options: DashboardOptions | None,
    read_only: bool,
) -> Dashboard:
    options = options or DashboardOptions(authorization=authorization, read_only=read_only)
    return Dashboard(app, options)


def asgi_app(
    app: Celery,
    *,
    authorization: Authorization | None = None,
    read_only: bool = False,
    options: DashboardOptions | None = None,
) -> ASGIApp:
    """An ASGI application serving the pages (loopback clients only unless ``authorization``)."""
    dashboard = _dashboard(app, authorization, options, read_only)

    async def application(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES or not message.get("more_body"):
                break
        if len(body) > MAX_BODY_BYTES:  # refused whole: never acted on in part
            await _send(send, _too_large())
            return
        root = scope.get("root_path", "")
        path = scope["path"]
        if root and path.startswith(root):  # some servers keep the mount in ``path``
            path = path[len(root) :]
        request = Request(
            method=scope["method"],
            path=path or "/",
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
            client=(scope.get("client") or (None,))[0],
            root=root,
        )
        response = await asyncio.to_thread(dashboard.handle, request)
        await _send(send, response)

    return application


def _too_large() -> Response:
    return text_response(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")


async def _send(send: Callable[[dict[str, Any]], Awaitable[None]], response: Response) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in response.headers],
        }
    )
    await send({"type": "http.response.body", "body": response.body})


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_app(
    app: Celery,
    *,
    authorization: Authorization | None = None,
    read_only: bool = False,
    options: DashboardOptions | None = None,
) -> WSGIApp:
    """A WSGI application serving the pages (loopback clients only unless ``authorization``)."""
    dashboard = _dashboard(app, authorization, options, read_only)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:  # refused whole: never acted on in part
            return _wsgi_answer(start_response, _too_large())
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        request = Request(
            method=environ["REQUEST_METHOD"],
            path=_wsgi_text(environ.get("PATH_INFO") or "/"),
            query_string=environ.get("QUERY_STRING", ""),
            headers=headers,
            body=body,
            client=environ.get("REMOTE_ADDR"),
            root=_wsgi_text(environ.get("SCRIPT_NAME", "")),
        )
        return _wsgi_answer(start_response, dashboard.handle(request))

    return application


def _wsgi_answer(start_response: Callable[..., Any], response: Response) -> Iterable[bytes]:
    start_response(f"{response.status} {HTTPStatus(response.status).phrase}", response.headers)
    return [response.body]


def _wsgi_text(value: str) -> str:
    """A decoded path from WSGI: PEP 3333 gives its bytes as Latin-1 characters; read them as
    UTF-8, as the other adapters hand paths over. (Left as it is when it is not such a string,
    as from a server that already decoded it as UTF-8.)"""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value
