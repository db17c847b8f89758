"""``init_app``: assembling hfcelery's parts (the per-app extension, the worker's task, bootsteps
and signal handlers) onto a Celery app. It sits above the parts, which never import it."""

from __future__ import annotations

from typing import Any

from celery import Celery

from hfcelery.config import HfConfig
from hfcelery.elections import StoredJobFilters
from hfcelery.errors import ConfigurationError
from hfcelery.extension import Extension, find_extension, register, set_default
from hfcelery.worker import install


def init_app(app: Celery, *, default: bool = False, **options: Any) -> Extension:
    """Load hfcelery into a Celery app.

    Registers the task that performs plain functions, the worker bootstep and the signal
    handlers that move jobs through their states, and makes acks-late delivery, rejection on a
    lost worker, a prefetch of one and JSON-only messages the defaults where the app sets
    nothing else. Options are the ``hfcelery_*`` settings without the prefix (``store_url``,
    ``allowed_modules``, ...) and win over ``app.conf``. Calling it again returns the same
    extension; calling it again with other options is an error.

    The static facades (``BackgroundJob``, ``RecurringJob``) use the first app initialised in
    the process, from any thread, unless another is initialised with ``default=True``.
    """
    existing = find_extension(app)
    if existing is not None:
        if options and options != existing.options:
            raise ConfigurationError(
                f"hfcelery is already initialised for app {app.main!r} with other options"
            )
        if default:
            set_default(app)
        return existing
    # Reject unknown or invalid settings now, not at first use, without making Celery load
    # the app's configuration early (its ``on_after_configure`` handlers would miss it): the
    # settings given so far now, the loaded ones as Celery loads them (an error is logged
    # then, and raised at hfcelery's first use).
    if app.configured:
        HfConfig.from_app(app.conf, options, app.namespace)
    else:
        HfConfig.from_app(getattr(app, "_preconf", None) or {}, options)
        app.on_after_configure.connect(
            lambda sender, source, **_: HfConfig.from_app(source, options, sender.namespace),
            weak=False,
        )
    extension = Extension(app, dict(options))
    extension.state_filters = StoredJobFilters(extension)
    register(app, extension)
    install(app)
    from hfcelery.beat import run_recurring_jobs_under_plain_redbeat

    run_recurring_jobs_under_plain_redbeat()
    if default:
        set_default(app)
    return extension
