"""hfcelery's settings, read once from ``app.conf.hfcelery_*`` and ``init_app`` keyword options."""

from __future__ import annotations

import difflib
import importlib.util
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from hfcelery.errors import ConfigurationError
from hfcelery.validation import DEFAULT_MAX_TEXT_CHARS

DEFAULT_STORE_URL = "sqlite:///hfcelery.db"
DEFAULT_SUCCEEDED_RETENTION_SECONDS = 24 * 60 * 60
DEFAULT_DELETED_RETENTION_SECONDS = 24 * 60 * 60
DEFAULT_HEARTBEAT_INTERVAL_SECONDS = 2.0
DEFAULT_SERVER_TIMEOUT_SECONDS = 10.0
DEFAULT_POLL_INTERVAL_SECONDS = 1.0
DEFAULT_PUBLISH_GRACE_SECONDS = 5.0
DEFAULT_MAINTENANCE_BATCH_SIZE = 500
DEFAULT_SCHEDULE_POLL_INTERVAL_SECONDS = 1.0
DEFAULT_CLEANUP_INTERVAL_SECONDS = 30.0
DEFAULT_MAX_LOST_WORKER_PROCESSES = 5
DEFAULT_OUTCOME_RETRY_SECONDS = 300.0
DEFAULT_REPUBLISH_AFTER_SECONDS = 60.0

#: Celery settings hfcelery wants for reliable processing. They sit just above Celery's own
#: defaults, so a setting the project made by any route (``conf.update``, ``Celery(...)``,
#: ``config_from_object``, Django settings) wins; ``hfcelery_celery_defaults = False`` leaves
#: them out. hfcelery's own tasks always run acks-late with rejection on a lost worker.
RELIABLE_CELERY_DEFAULTS: Mapping[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    # Beat (hfcelery.beat:RecurringScheduler): a loop of at most 5 s, and a RedBeat lock that
    # a standby takes over within about 35 s of the active beat's death.
    "beat_max_loop_interval": 5,
    "redbeat_lock_timeout": 30,
    "redbeat_key_prefix": "hfcelery:",
}


@dataclass(frozen=True, slots=True)
class HfConfig:
    """hfcelery's settings for one Celery app.

    Each field is read from ``app.conf.hfcelery_<field>`` unless given to ``init_app``.
    """

    #: SQLAlchemy URL of the job store; SQLite is the embedded default.
    store_url: str = DEFAULT_STORE_URL
    #: Extra modules (or packages, matched with their submodules) whose functions workers may run.
    allowed_modules: tuple[str, ...] = ()
    #: How long Succeeded jobs are kept.
    succeeded_retention_seconds: float = DEFAULT_SUCCEEDED_RETENTION_SECONDS
    #: How long Deleted jobs are kept.
    deleted_retention_seconds: float = DEFAULT_DELETED_RETENTION_SECONDS
    #: How often a worker writes its heartbeat into the store.
    heartbeat_interval_seconds: float = DEFAULT_HEARTBEAT_INTERVAL_SECONDS
    #: A server without a heartbeat for this long is dead; its jobs are requeued.
    server_timeout_seconds: float = DEFAULT_SERVER_TIMEOUT_SECONDS
    #: How often the worker's maintenance loop runs (publishing, recovery).
    poll_interval_seconds: float = DEFAULT_POLL_INTERVAL_SECONDS
    #: An Enqueued job not published after this long is published by the maintenance loop.
    publish_grace_seconds: float = DEFAULT_PUBLISH_GRACE_SECONDS
    #: An Enqueued job whose message was sent this long ago and that no worker has claimed is
    #: sent again when its queue is empty at the broker: the broker lost the message (a Redis
    #: restart without persistence, a RabbitMQ restart with non-durable queues). A duplicate
    #: is harmless: the claim decides which copy runs. Only hfcelery's own jobs: a plain
    #: Celery task's message is Celery's to deliver, as without hfcelery. None turns it off.
    republish_after_seconds: float | None = DEFAULT_REPUBLISH_AFTER_SECONDS
    #: Rows handled per maintenance step.
    maintenance_batch_size: int = DEFAULT_MAINTENANCE_BATCH_SIZE
    #: Track tasks sent the plain Celery way (``delay``, ``apply_async``) as jobs.
    track_celery_tasks: bool = True
    #: Make acks-late delivery, rejection on a lost worker and a prefetch of one the defaults
    #: where the project set nothing; False leaves every Celery setting as the project has it.
    celery_defaults: bool = True
    #: How often workers look for due Scheduled jobs (Hangfire polls every 15 s).
    schedule_poll_interval_seconds: float = DEFAULT_SCHEDULE_POLL_INTERVAL_SECONDS
    #: Automatic retries of jobs created through hfcelery without ``@automatic_retry``.
    default_retry_attempts: int = 10
    #: Whether the global automatic retry also retries plain Celery tasks (sent with
    #: ``delay``/``apply_async``); they keep Celery's own retry semantics by default.
    retry_celery_tasks: bool = False
    #: How often expired jobs are removed.
    cleanup_interval_seconds: float = DEFAULT_CLEANUP_INTERVAL_SECONDS
    #: Failed jobs older than this are removed (None keeps them until someone acts).
    failed_retention_seconds: float | None = None
    #: At most this many Failed jobs are kept, the newest (None: no limit).
    max_failed_jobs: int | None = None
    #: A job whose worker process is lost this many times (a job that kills its own process)
    #: ends Failed instead of being delivered again.
    max_lost_worker_processes: int = DEFAULT_MAX_LOST_WORKER_PROCESSES
    #: How long a worker process keeps trying to record a job's outcome while the store is
    #: unreachable (a database restart), with the job's message still unacknowledged. After
    #: that it gives up: the job stays Processing, is requeued once the store is back (the
    #: history says the outcome was lost) and runs again.
    outcome_retry_seconds: float = DEFAULT_OUTCOME_RETRY_SECONDS
    #: Longest exception message, traceback or result text stored with a state; longer ones
    #: are cut, with a mark saying how much.
    max_stored_text_chars: int = DEFAULT_MAX_TEXT_CHARS

    @classmethod
    def from_app(
        cls, conf: Mapping[str, Any], options: Mapping[str, Any], namespace: str | None = None
    ) -> HfConfig:
        """Build the config from ``app.conf`` with ``options`` taking precedence; the app's
        settings ``namespace`` (Django's ``CELERY``) prefixes the names in ``conf``."""
        names = {f.name for f in fields(cls)}
        unknown = set(options) - names
        if unknown:
            raise ConfigurationError(f"unknown hfcelery option(s): {', '.join(sorted(unknown))}")
        # A misspelt setting (or a Django one without its _SECONDS) would be ignored silently.
        prefix = f"{namespace.lower()}_" if namespace else ""
        misspelt: dict[str, str] = {}
        for key in conf:
            name = key.lower() if isinstance(key, str) else ""
            name = name[len(prefix) :] if prefix and name.startswith(prefix) else name
            if name.startswith("hfcelery_") and name[9:] not in names:
                misspelt[key] = name[9:]
        if misspelt:
            hints = [
                f"{key} (did you mean {close[0]}?)" if close else key
                for key, name in sorted(misspelt.items())
                for close in [difflib.get_close_matches(name, names, n=1)]
            ]
            raise ConfigurationError(f"unknown hfcelery setting(s): {', '.join(hints)}")
        values: dict[str, Any] = {}
        for name in names:
            if name in options:
                values[name] = options[name]
            else:
                value = conf.get(f"hfcelery_{name}")
                if value is not None:
                    values[name] = value
        if "allowed_modules" in values:
            values["allowed_modules"] = _module_tuple(values["allowed_modules"])
        config = cls(**values)
        config._validate()
        return config

    def _validate(self) -> None:
        for name in (
            "succeeded_retention_seconds",
            "deleted_retention_seconds",
            "server_timeout_seconds",
            "publish_grace_seconds",
            "outcome_retry_seconds",
        ):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ConfigurationError(f"hfcelery_{name} must be a number >= 0, got {value!r}")
        for name in (  # how often a loop runs: 0 would spin
            "heartbeat_interval_seconds",
            "poll_interval_seconds",
            "schedule_poll_interval_seconds",
            "cleanup_interval_seconds",
        ):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ConfigurationError(f"hfcelery_{name} must be a number > 0, got {value!r}")
        for name in ("track_celery_tasks", "celery_defaults", "retry_celery_tasks"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigurationError(f"hfcelery_{name} must be True or False, got {value!r}")
        if self.server_timeout_seconds <= self.heartbeat_interval_seconds:
            raise ConfigurationError(
                "hfcelery_server_timeout_seconds must be longer than "
                "hfcelery_heartbeat_interval_seconds"
            )
        if self.republish_after_seconds is not None and (
            not _is_number(self.republish_after_seconds) or self.republish_after_seconds <= 0
        ):
            raise ConfigurationError("hfcelery_republish_after_seconds must be > 0 or None")
        if self.failed_retention_seconds is not None and (
            not _is_number(self.failed_retention_seconds) or self.failed_retention_seconds < 0
        ):
            raise ConfigurationError("hfcelery_failed_retention_seconds must be >= 0 or None")
        if (
            not isinstance(self.max_lost_worker_processes, int)
            or self.max_lost_worker_processes < 1
        ):
            raise ConfigurationError("hfcelery_max_lost_worker_processes must be an integer >= 1")
        for name in ("max_failed_jobs", "default_retry_attempts"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigurationError(f"hfcelery_{name} must be an integer >= 0")
        if not isinstance(self.max_stored_text_chars, int) or self.max_stored_text_chars < 100:
            raise ConfigurationError("hfcelery_max_stored_text_chars must be an integer >= 100")
        if not isinstance(self.maintenance_batch_size, int) or self.maintenance_batch_size < 1:
            raise ConfigurationError("hfcelery_maintenance_batch_size must be an integer >= 1")
        if not isinstance(self.store_url, str) or not self.store_url:
            raise ConfigurationError("hfcelery_store_url must be a SQLAlchemy URL string")
        _check_store_url(self.store_url)


def _is_number(value: object) -> bool:
    """A finite int or float (not a bool, a string, NaN or infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: The databases the store runs on, and the driver each needs beside SQLAlchemy.
STORE_BACKENDS = {"sqlite": None, "postgresql": "psycopg"}


def _check_store_url(text: str) -> None:
    """Refuse a store URL the store could not open, before anything uses it."""
    from sqlalchemy.exc import ArgumentError

    from hfcelery.store.base import normalise_url

    try:
        url = normalise_url(text)
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"hfcelery_store_url is not a SQLAlchemy URL: {exc}") from exc
    backend = url.get_backend_name()
    if backend not in STORE_BACKENDS:
        raise ConfigurationError(
            f"hfcelery_store_url names {backend!r}: the store runs on SQLite or PostgreSQL"
        )
    driver = STORE_BACKENDS[backend]
    if driver is not None and url.get_driver_name() != driver:
        raise ConfigurationError(
            f"hfcelery_store_url: the store talks to PostgreSQL through {driver} (version 3), "
            f"not {url.get_driver_name()}: use postgresql://... or postgresql+{driver}://..."
        )
    if driver is not None and importlib.util.find_spec(driver) is None:
        raise ConfigurationError(
            f"hfcelery_store_url names PostgreSQL, whose driver {driver} is not installed: "
            "pip install 'hfcelery[postgres]'"
        )


def _module_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    modules = tuple(v for v in value if v)
    for module in modules:
        if not all(part.isidentifier() for part in module.split(".")):
            raise ConfigurationError(f"hfcelery_allowed_modules: {module!r} is not a module name")
    return modules
