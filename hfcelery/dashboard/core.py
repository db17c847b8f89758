"""The pages' core: requests in, responses out, knowing nothing of any web framework.

An adapter (Tornado, Flower, ASGI, WSGI) turns its request into a :class:`Request`, calls
:meth:`Dashboard.handle` and writes the :class:`Response` back. The core decides access, checks
the XSRF token of every POST, sets the security headers, and routes to the HTML pages
(:mod:`hfcelery.dashboard.pages`) or the JSON API (:mod:`hfcelery.dashboard.api`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import mimetypes
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from celery import Celery
from tornado.httputil import parse_cookie

from hfcelery.client import BackgroundJobClient
from hfcelery.errors import ConfigurationError, InvalidArgumentError
from hfcelery.monitoring import Monitoring, monitoring
from hfcelery.records import JobFilter
from hfcelery.recurring import RecurringJobManager
from hfcelery.states import State
from hfcelery.validation import without_surrogates

#: The double-submit cookie and the form field / header that must repeat it on a POST.
XSRF_COOKIE = "hf_xsrf"
XSRF_FIELD = "_xsrf"
XSRF_HEADER = "x-hf-xsrf"
API_PREFIX = "/api/v1"
#: States the pages count (Succeeded and Deleted show cumulative counters instead).
COUNTED_STATES = (State.ENQUEUED, State.SCHEDULED, State.AWAITING, State.PROCESSING, State.FAILED)
#: How long counts per state are shared between requests.
COUNTS_TTL_SECONDS = 1.0

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_STATIC_FILES = frozenset(
    {"app.css", "app.js", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"}
)


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request as the core needs it.

    ``path`` is relative to where the pages are mounted (``/`` is the overview) and ``root`` is
    that mount point as the browser sees it (``/hf`` inside Flower), for links. Both are decoded
    (percent-escapes and UTF-8) by the adapter, once: the core never decodes them again, so an id
    such as ``job%41x`` (``/job/job%2541x`` in a URL) stays itself. ``headers`` have
    lower-case names. ``authenticated`` is set by an adapter whose own access control (Flower's
    basic auth or OAuth) has admitted the request.
    """

    method: str
    path: str
    query_string: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str | None = None
    root: str = ""
    authenticated: bool = False
    _form: dict[str, list[str]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.query_string, keep_blank_values=True)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    @property
    def cookies(self) -> dict[str, str]:
        # Leniently, as browsers send them: http.cookies.SimpleCookie stops at the first cookie
        # it cannot read (``prefs={"a":1}``, ``flag``, a space in a value), and the XSRF cookie
        # after it, set by these pages but sharing the header with other apps' cookies, was lost.
        return parse_cookie(self.headers.get("cookie", ""))

    @property
    def form(self) -> dict[str, list[str]]:
        """The body's fields: ``application/x-www-form-urlencoded`` or a JSON object.

        Parsed once. A JSON body that is not an object (or not JSON, or nested too deeply to
        read) raises :class:`~hfcelery.errors.InvalidArgumentError`.
        """
        form = self._form
        if form is None:
            form = self._parse_form()
            object.__setattr__(self, "_form", form)  # a frozen dataclass: its cache, set once
        return form

    def _parse_form(self) -> dict[str, list[str]]:
        content_type = self.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        try:
            data = json.loads(self.body or b"{}")
        except RecursionError as exc:
            raise InvalidArgumentError("the body is not a JSON object: nested too deeply") from exc
        except ValueError as exc:  # not JSON, or not UTF-8
            raise InvalidArgumentError(f"the body is not a JSON object: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidArgumentError("the body is not a JSON object")
        return {
            k: [str(x) for x in v] if isinstance(v, list) else [str(v)]
            for k, v in data.items()
            if v is not None
        }

    def field(self, name: str, default: str | None = None) -> str | None:
        values = self.form.get(name)
        return values[-1] if values else default


@dataclass(slots=True)
class Response:
    """What the adapter writes back."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


#: Decides whether a request may see the pages (and act, unless read-only).
Authorization = Callable[[Request], bool]


@dataclass(frozen=True, slots=True)
class DashboardOptions:
    """Who may use the pages, and how.

    With none of ``authorization``, ``basic_auth`` or an adapter's own authentication, only
    loopback clients are served (as Hangfire's ``LocalRequestsOnlyAuthorizationFilter``).
    """

    #: A callable ``(Request) -> bool``; False answers 403.
    authorization: Authorization | None = None
    #: ``"user:password"`` pairs for HTTP basic auth; a request without them gets 401.
    basic_auth: Sequence[str] = ()
    #: Hide every button and refuse every POST.
    read_only: bool = False
    #: Where Flower's task pages are (``/task/`` or ``/prefix/task/``), to link a job to its task.
    flower_task_url: str | None = None
    #: Where "back to Flower" points, when the pages run inside Flower.
    flower_url: str | None = None
    title: str = "hfcelery"

    def __post_init__(self) -> None:
        if isinstance(self.basic_auth, str):
            raise ConfigurationError("basic_auth is a list of 'user:password' pairs, not one")
        for pair in self.basic_auth:
            if not isinstance(pair, str) or ":" not in pair:
                # A browser always sends user:password: a pair without a colon lets nobody in.
                raise ConfigurationError(
                    "each basic_auth entry is 'user:password'; one has no colon"
                )
        if self.authorization is not None and not callable(self.authorization):
            raise ConfigurationError("authorization must be a callable (request) -> bool")


class Dashboard:
    """The state-report pages and the JSON API of one Celery app."""

    def __init__(
        self,
        app: Celery,
        options: DashboardOptions | None = None,
        *,
        api: Monitoring | None = None,
    ) -> None:
        self.app = app
        self.options = options or DashboardOptions()
        self.monitoring = api or monitoring(app)
        self.client = BackgroundJobClient(app)
        self.recurring = RecurringJobManager(app)
        self._counts: tuple[float, dict[State, int], int] | None = None
        self._counts_lock = threading.Lock()

    def counts(self) -> tuple[dict[State, int], int]:
        """Jobs per state and retries, shared by every page for ``COUNTS_TTL_SECONDS``.

        As in Hangfire's Dashboard, Succeeded and Deleted show the cumulative counters (the
        bulk of a store: counting them would take most of a second at a million jobs); the
        other states are counted. Every open overview polls every 2 s and every list shows the
        counts, so one count serves them all; an action clears it, so its outcome shows at once.
        """
        with self._counts_lock:
            now = time.monotonic()
            if self._counts is None or now - self._counts[0] > COUNTS_TTL_SECONDS:
                counts = self.monitoring.state_counts(COUNTED_STATES)
                totals = self.monitoring.statistics()
                counts[State.SUCCEEDED] = totals["succeeded"]
                counts[State.DELETED] = totals["deleted"]
                retries = self.monitoring.count(JobFilter(retries=True))
                self._counts = (now, counts, retries)
            return self._counts[1], self._counts[2]

    # -- entry point ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request (never raises for a bad request; 500 only on a real fault)."""
        from hfcelery.dashboard import api, pages

        refused = self._refusal(request)
        if refused is not None:
            return _secure(refused)
        path = request.path or "/"
        if path.startswith("/static/"):
            return _secure(_static(path[len("/static/") :]), cache=True)
        if request.method not in ("GET", "HEAD", "POST"):
            return _secure(text_response(405, "method not allowed"))
        if request.method == "POST":
            problem = self._post_problem(request)
            if problem is not None:
                return _secure(problem)
            self._counts = None
        token = request.cookies.get(XSRF_COOKIE) or secrets.token_urlsafe(24)
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            response = api.handle(self, request, path[len(API_PREFIX) :] or "/")
        else:
            response = pages.handle(self, request, path, token)
        if XSRF_COOKIE not in request.cookies:
            cookie_path = (request.root or "") + "/"
            response.headers.append(
                (
                    "Set-Cookie",
                    f"{XSRF_COOKIE}={token}; Path={cookie_path}; SameSite=Strict; HttpOnly",
                )
            )
        return _secure(response)

    # -- access -----------------------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        options = self.options
        if options.basic_auth and not _basic_auth_ok(request, options.basic_auth):
            response = text_response(401, "authentication required")
            response.headers.append(("WWW-Authenticate", 'Basic realm="hfcelery"'))
            return response
        if options.authorization is not None:
            if not options.authorization(request):
                return text_response(403, "forbidden")
            return None
        if options.basic_auth or request.authenticated:
            return None
        if not is_loopback(request.client):
            return text_response(
                403, "forbidden: the pages serve local clients only until access is configured"
            )
        return None

    def _post_problem(self, request: Request) -> Response | None:
        if self.options.read_only:
            return text_response(403, "forbidden: the pages are read-only")
        site = request.headers.get("sec-fetch-site")
        if site and site not in ("same-origin", "none"):
            return text_response(403, "forbidden: cross-site request")
        try:
            request.form  # noqa: B018 (read once here, so a malformed body is refused alike)
        except InvalidArgumentError as exc:
            return text_response(400, f"bad request: {exc}")
        cookie = request.cookies.get(XSRF_COOKIE, "")
        sent = request.headers.get(XSRF_HEADER) or request.field(XSRF_FIELD) or ""
        if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
            return text_response(403, "forbidden: missing or wrong XSRF token")
        return None


def is_loopback(client: str | None) -> bool:
    """Whether a client address is this machine's (127.0.0.0/8, ::1, and 127.0.0.0/8 as a
    dual-stack server sees it: ``::ffff:127.0.0.1``)."""
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _basic_auth_ok(request: Request, credentials: Sequence[str]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Compare with every pair, so the time taken does not tell which one matched.
    matched = False
    for pair in credentials:
        matched |= hmac.compare_digest(pair.encode(), given.encode())
    return matched


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (a job's arguments may hold one) shown as U+FFFD."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return without_surrogates(text).encode()


def text_response(status: int, text: str) -> Response:
    return Response(status, _utf8(text), [("Content-Type", "text/plain; charset=utf-8")])


def json_response(data: Any, status: int = 200) -> Response:
    text = json.dumps(data, default=str, ensure_ascii=False)
    try:
        body = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped (\udXXX), as JSON can carry it
        body = json.dumps(data, default=str).encode()
    return Response(status, body, [("Content-Type", "application/json; charset=utf-8")])


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, _utf8(text), [("Content-Type", "text/html; charset=utf-8")])


def redirect(location: str) -> Response:
    return Response(303, b"", [("Location", location)])


def _static(name: str) -> Response:
    if name not in _STATIC_FILES:
        return text_response(404, "not found")
    data = resources.files("hfcelery.dashboard").joinpath("static", name).read_bytes()
    kind = mimetypes.guess_type(name)[0] or "text/plain"
    if kind.startswith("text/") or kind.endswith("javascript"):
        kind += "; charset=utf-8"
    return Response(200, data, [("Content-Type", kind)])


def _secure(response: Response, *, cache: bool = False) -> Response:
    """Security headers on every response; nothing but static files may be cached."""
    response.headers += [
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "same-origin"),
        ("Cache-Control", "private, max-age=3600" if cache else "no-store"),
    ]
    return response
