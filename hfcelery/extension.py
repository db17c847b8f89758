"""``init_app``: loading hfcelery into a Celery app, and the per-app state it keeps."""

from __future__ import annotations

import functools
import logging
import threading
from datetime import timedelta
from functools import cached_property
from typing import Any

from celery import Celery
from celery.utils.functional import maybe_list

from hfcelery.calls import module_allowed
from hfcelery.config import RELIABLE_CELERY_DEFAULTS, HfConfig
from hfcelery.errors import NotInitializedError
from hfcelery.publishing import publish
from hfcelery.store import Store
from hfcelery.store.base import StateFilters

logger = logging.getLogger(__name__)

_ATTRIBUTE = "_hfcelery_extension"


class Extension:
    """What hfcelery keeps for one Celery app: its config, store and client.

    Settings are read on first use, so ``app.config_from_object`` may come after ``init_app``.
    """

    def __init__(self, app: Celery, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options
        #: Set in a worker (before its pool forks) to the id under which it heartbeats.
        self.server_id: str | None = None
        #: The worker's hooks for this app (``hfcelery.worker.hooks.WorkerHooks``, set by
        #: ``init_app``).
        self.worker_hooks: Any = None
        #: The filters of the changes the store makes by itself (set by ``init_app``).
        self.state_filters: StateFilters | None = None

    @cached_property
    def config(self) -> HfConfig:
        return HfConfig.from_app(self.app.conf, self.options, self.app.namespace)

    @cached_property
    def store(self) -> Store:
        store = Store(
            self.config.store_url,
            publisher=functools.partial(publish, self.app),
            deleted_retention=timedelta(seconds=self.config.deleted_retention_seconds),
        )
        store.state_filters = self.state_filters
        return store

    @cached_property
    def _own_task_modules(self) -> frozenset[str]:
        modules = {type(task).__module__ for task in self.app.tasks.values()}
        # As Celery's loader reads them: one module name may be given as a string.
        modules.update(maybe_list(self.app.conf.include) or ())
        modules.update(maybe_list(self.app.conf.imports) or ())
        return frozenset(m for m in modules if not m.startswith(("celery.", "hfcelery.")))

    def module_allowed(self, module: str) -> bool:
        """Whether a worker may perform functions of ``module``: a module where this app's
        tasks are defined, or one listed in ``hfcelery_allowed_modules``."""
        if module_allowed(module, self._own_task_modules, self.config.allowed_modules):
            return True
        # Task modules imported since the first look (autodiscovery, lazy imports) count too.
        self.__dict__.pop("_own_task_modules", None)
        return module_allowed(module, self._own_task_modules, self.config.allowed_modules)


#: The apps ``init_app`` was called on, oldest first; the facades use the default one.
_initialised: list[Celery] = []
_default: list[Celery] = []
_registry_lock = threading.Lock()


def register(app: Celery, extension: Extension) -> None:
    """Attach ``extension`` to ``app`` and remember the app for the facades (see
    ``hfcelery.assembly.init_app``)."""
    setattr(app, _ATTRIBUTE, extension)
    app.on_after_configure.connect(_add_reliable_defaults, weak=False)
    if app.configured:
        _add_reliable_defaults(app, app.conf)
    with _registry_lock:
        _initialised.append(app)


def _add_reliable_defaults(sender: Celery, source: Any = None, **_: Any) -> None:
    """Put :data:`RELIABLE_CELERY_DEFAULTS` just above Celery's own defaults in the app's
    settings, below every layer the project configured (``on_after_configure``: again each time
    the configuration is loaded)."""
    conf = source if source is not None else sender.conf
    extension = find_extension(sender)
    enabled = conf.get("hfcelery_celery_defaults", True)
    if extension is not None and "celery_defaults" in extension.options:
        enabled = extension.options["celery_defaults"]
    if not enabled or any(getattr(d, "hfcelery_layer", False) for d in conf.defaults):
        return
    layer = _Layer(RELIABLE_CELERY_DEFAULTS)
    conf.defaults.insert(len(conf.defaults) - 1, layer)
    conf.maps.insert(len(conf.maps) - 1, layer)


class _Layer(dict[str, Any]):
    """hfcelery's layer of Celery settings, recognisable so it is added once."""

    hfcelery_layer = True


def set_default(app: Celery) -> None:
    with _registry_lock:
        _default[:] = [app]


def default_app() -> Celery:
    """The app the static facades use: the one marked ``default=True``, else the first one
    ``init_app`` was called on. Raises :class:`NotInitializedError` when there is none."""
    with _registry_lock:
        if _default:
            return _default[0]
        if _initialised:
            return _initialised[0]
    raise NotInitializedError(None)


def extension_for_task(task_name: str) -> Extension | None:
    """The extension of the app that publishes ``task_name`` in a thread with no current app of
    its own: the default app's, if it has that task registered, else the first one that has."""
    with _registry_lock:
        apps = _default + [app for app in _initialised if app not in _default]
    for app in apps:
        if task_name in app.tasks:
            return extension_of(app)
    return None


def extension_of(app: Celery) -> Extension:
    """The extension of ``app``; raises :class:`NotInitializedError` if there is none."""
    extension: Extension | None = getattr(app, _ATTRIBUTE, None)
    if extension is None:
        raise NotInitializedError(str(app.main))
    return extension


def find_extension(app: Celery | None) -> Extension | None:
    """The extension of ``app``, or None (for signal handlers that see every app)."""
    return getattr(app, _ATTRIBUTE, None) if app is not None else None
