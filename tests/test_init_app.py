"""Loading the extension into a Celery app: settings, defaults, registration, idempotence."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from celery import Celery

import hfcelery
from hfcelery import BackgroundJobClient, call
from hfcelery.calls import PERFORM_TASK_NAME
from hfcelery.client import BackgroundJob
from hfcelery.errors import ConfigurationError, InvalidCallError, NotInitializedError
from hfcelery.extension import extension_of
from hfcelery.worker.server import ServerStep
from tests import jobs


def make_app(**conf: object) -> Celery:
    app = Celery("init-test", broker="memory://", set_as_current=False)
    app.conf.update(conf)
    return app


def test_init_app_registers_task_step_and_reliable_defaults(tmp_path: Path) -> None:
    app = make_app()
    extension = hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    assert PERFORM_TASK_NAME in app.tasks
    assert ServerStep in app.steps["worker"]
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert list(app.conf.accept_content) == ["json"]  # Celery's own default, kept
    assert extension_of(app) is extension


def test_user_settings_win_over_hfcelery_defaults() -> None:
    app = make_app(task_acks_late=False, worker_prefetch_multiplier=4)
    hfcelery.init_app(app)
    app.conf.task_serializer = "pickle"  # set after init_app: also kept
    assert app.conf.task_acks_late is False
    assert app.conf.worker_prefetch_multiplier == 4
    assert app.conf.task_serializer == "pickle"
    assert app.conf.task_reject_on_worker_lost is True


def test_init_app_is_idempotent() -> None:
    app = make_app()
    first = hfcelery.init_app(app, store_url="sqlite:///x.db")
    assert hfcelery.init_app(app) is first
    assert hfcelery.init_app(app, store_url="sqlite:///x.db") is first
    assert [s for s in app.steps["worker"] if s is ServerStep] == [ServerStep]
    with pytest.raises(ConfigurationError, match="other options"):
        hfcelery.init_app(app, store_url="sqlite:///y.db")


def test_settings_come_from_app_conf_read_on_first_use() -> None:
    app = make_app()
    extension = hfcelery.init_app(app)
    app.conf.hfcelery_store_url = "sqlite:///later.db"
    app.conf.hfcelery_allowed_modules = "proj.jobs, proj.reports"
    assert extension.config.store_url == "sqlite:///later.db"
    assert extension.config.allowed_modules == ("proj.jobs", "proj.reports")
    assert extension.module_allowed("proj.reports.monthly")
    assert not extension.module_allowed("os")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"store_uri": "x"}, "unknown hfcelery option"),
        ({"server_timeout_seconds": 1, "heartbeat_interval_seconds": 2}, "must be longer"),
        ({"poll_interval_seconds": -1}, "must be a number > 0"),
        ({"poll_interval_seconds": 0}, "must be a number > 0"),  # the loop would spin
        ({"cleanup_interval_seconds": 0.0}, "must be a number > 0"),
        ({"succeeded_retention_seconds": float("nan")}, "must be a number >= 0"),
        ({"outcome_retry_seconds": float("inf")}, "must be a number >= 0"),
        ({"deleted_retention_seconds": "3600"}, "must be a number >= 0"),
        ({"failed_retention_seconds": "86400"}, "failed_retention_seconds must be >= 0 or None"),
        ({"track_celery_tasks": "false"}, "must be True or False"),
        ({"heartbeat_interval_seconds": True}, "must be a number > 0"),
        ({"allowed_modules": ["not a module"]}, "not a module name"),
        ({"store_url": "notaurl"}, "not a SQLAlchemy URL"),
        ({"store_url": "mysql://user@127.0.0.1/jobs"}, "'mysql': the store runs on SQLite or"),
        ({"store_url": "postgresql+psycopg2://127.0.0.1/jobs"}, "through psycopg"),
        ({"store_url": 5432}, "must be a SQLAlchemy URL string"),
    ],
)
def test_bad_options_are_rejected_at_init(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        hfcelery.init_app(make_app(), **options)


def test_settings_in_app_conf_are_checked_when_init_app_is_called() -> None:
    app = make_app()
    app.conf.hfcelery_heartbeat_interval = 1  # _seconds missing: would be ignored silently
    with pytest.raises(ConfigurationError, match="did you mean heartbeat_interval_seconds"):
        hfcelery.init_app(app)
    app = make_app()
    app.conf.hfcelery_poll_interval_seconds = 0
    with pytest.raises(ConfigurationError, match="poll_interval_seconds must be a number > 0"):
        hfcelery.init_app(app)


def test_init_app_leaves_the_app_s_configuration_to_load_when_celery_loads_it() -> None:
    """Celery's ``on_after_configure`` handlers (``setup_periodic_tasks``), connected after
    ``init_app``, still run: checking the settings does not load them early."""
    app = make_app(hfcelery_poll_interval_seconds=2)
    hfcelery.init_app(app, store_url="sqlite://")
    assert not app.configured
    ran: list[object] = []
    app.on_after_configure.connect(lambda sender, **_: ran.append(sender), weak=False)
    assert app.conf.hfcelery_poll_interval_seconds == 2
    assert ran == [app]


def test_a_misspelt_setting_in_a_django_namespace_is_named() -> None:
    app = Celery("init-test-django", broker="memory://", set_as_current=False)
    settings = type("Settings", (), {"CELERY_HFCELERY_POLL_INTERVAL": 5})
    app.config_from_object(settings, namespace="CELERY")
    extension = hfcelery.init_app(app, store_url="sqlite://")
    named = r"CELERY_HFCELERY_POLL_INTERVAL .did you mean poll_interval_seconds"
    with pytest.raises(ConfigurationError, match=named):
        extension.config  # noqa: B018 - the first use reads the settings


def test_settings_an_app_loads_after_init_app_are_checked_when_it_loads_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Django project's settings load when the app's configuration is first read (Celery's
    lazy ``config_from_object``), which may be after ``init_app``."""
    app = Celery("init-test-lazy", broker="memory://", set_as_current=False)
    app.config_from_object({"hfcelery_track_celery_tasks": "no"})
    assert not app.configured
    extension = hfcelery.init_app(app, store_url="sqlite://")
    with caplog.at_level(logging.ERROR):
        assert app.conf.task_default_queue == "celery"  # the first read loads the settings
    assert "track_celery_tasks must be True or False" in caplog.text
    with pytest.raises(ConfigurationError, match="track_celery_tasks must be True or False"):
        extension.config  # noqa: B018 - and the first use raises


@pytest.mark.parametrize(
    "url", ["postgres://127.0.0.1/jobs", "postgresql+psycopg://u:p@db/jobs", "sqlite://"]
)
def test_store_urls_of_the_stores_are_accepted(url: str) -> None:
    assert hfcelery.init_app(make_app(), store_url=url).config.store_url == url


def test_a_postgresql_store_without_its_driver_is_refused_at_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else find_spec(name)
    )
    with pytest.raises(ConfigurationError, match=r"hfcelery\[postgres\]"):
        hfcelery.init_app(make_app(), store_url="postgresql://127.0.0.1/jobs")


@pytest.mark.parametrize("setting", ["imports", "include"])
def test_a_module_named_by_a_string_in_imports_or_include_is_allowed_and_no_other(
    tmp_path: Path, setting: str
) -> None:
    """Celery reads ``imports = "proj.tasks"`` as one module: so does the allowlist (it once
    allowed each of its characters as a module)."""
    app = make_app()
    app.conf[setting] = "proj.tasks"
    extension = hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    assert extension.module_allowed("proj.tasks")
    assert not any(extension.module_allowed(name) for name in ("p", "r", "o", "j", "."))


def test_app_task_modules_are_allowed(tmp_path: Path) -> None:
    app = make_app()
    hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}")

    @app.task(name="init-test.t")
    def t() -> None:
        pass

    assert extension_of(app).module_allowed(__name__)
    assert not extension_of(app).module_allowed("celery.app.builtins")


def test_client_needs_init_app() -> None:
    with pytest.raises(NotInitializedError, match="init_app"):
        BackgroundJobClient(make_app())


@pytest.fixture
def empty_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The facades' registry of initialised apps, empty for one test."""
    from hfcelery import extension

    monkeypatch.setattr(extension, "_initialised", [])
    monkeypatch.setattr(extension, "_default", [])


def test_facade_uses_the_app_init_app_was_called_on_from_any_thread(
    tmp_path: Path, empty_registry: None
) -> None:
    app = make_app()
    hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    Celery("created-later", broker="memory://")  # becomes Celery's current app, in this thread
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(BackgroundJob.client().app))
    thread.start()
    thread.join()
    assert seen == [app]  # a thread where Celery's current app is its fallback "default" app
    assert BackgroundJob.client().app is app
    assert hfcelery.RecurringJob.manager().app is app


def test_facade_uses_the_first_app_unless_another_is_the_default(
    tmp_path: Path, empty_registry: None
) -> None:
    first, second, third = make_app(), make_app(), make_app()
    hfcelery.init_app(first, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    hfcelery.init_app(second, store_url=f"sqlite:///{tmp_path / 'b.db'}")
    assert BackgroundJob.client().app is first
    hfcelery.init_app(third, store_url=f"sqlite:///{tmp_path / 'c.db'}", default=True)
    assert BackgroundJob.client().app is third
    hfcelery.init_app(second, default=True)  # again, now marked the default
    assert BackgroundJob.client().app is second


def test_facade_without_any_initialised_app_says_so(empty_registry: None) -> None:
    make_app()
    with pytest.raises(NotInitializedError, match="init_app"):
        BackgroundJob.enqueue(call(jobs.multiply, 1, 2))


def test_invalid_call_writes_nothing(tmp_path: Path) -> None:
    app = make_app()
    extension = hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    client = BackgroundJobClient(app)
    with pytest.raises(InvalidCallError):
        client.enqueue(lambda: None)
    with pytest.raises(InvalidCallError):
        client.enqueue(call(jobs.record, object()))
    assert sum(extension.store.state_counts().values()) == 0
    extension.store.dispose()


class _ProjectSettings:
    """A project's celeryconfig: what it sets must win, whenever init_app is called."""

    task_acks_late = False
    worker_prefetch_multiplier = 4
    task_serializer = "pickle"
    accept_content = ["pickle", "json"]


@pytest.mark.parametrize("init_first", [True, False])
def test_settings_loaded_with_config_from_object_win(tmp_path: Path, init_first: bool) -> None:
    app = make_app()
    if init_first:
        hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    app.config_from_object(_ProjectSettings)
    if not init_first:
        hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    assert app.conf.task_acks_late is False
    assert app.conf.worker_prefetch_multiplier == 4
    assert app.conf.task_serializer == "pickle"
    assert app.conf.accept_content == ["pickle", "json"]
    assert app.conf.task_reject_on_worker_lost is True  # the project set nothing here
    perform = app.tasks[PERFORM_TASK_NAME]
    assert perform.acks_late is True and perform.reject_on_worker_lost is True


def test_django_style_namespaced_settings_win(tmp_path: Path) -> None:
    class DjangoSettings:
        CELERY_TASK_ACKS_LATE = False
        CELERY_WORKER_PREFETCH_MULTIPLIER = 8

    app = make_app()
    hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    app.config_from_object(DjangoSettings, namespace="CELERY")
    assert app.conf.task_acks_late is False
    assert app.conf.worker_prefetch_multiplier == 8


def test_celery_defaults_off_leaves_every_celery_setting_alone(tmp_path: Path) -> None:
    app = make_app()
    hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'a.db'}", celery_defaults=False)
    assert app.conf.task_acks_late is False  # Celery's own default
    assert app.conf.worker_prefetch_multiplier == 4
    assert app.conf.task_reject_on_worker_lost is None


def test_each_app_has_its_own_worker_hooks_answering_for_its_own_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery import signals

    from hfcelery.worker import execution
    from hfcelery.worker.compose import compose_task

    seen: list[object] = []
    monkeypatch.setattr(
        execution, "on_task_success", lambda extension, sender, result: seen.append(extension)
    )
    apps = [Celery(f"app{i}", broker="memory://", set_as_current=False) for i in range(2)]
    extensions = [
        hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / f'{i}.db'}")
        for i, app in enumerate(apps)
    ]
    hooks = [extension.worker_hooks for extension in extensions]
    assert hooks[0] is not hooks[1] and {h.extension for h in hooks} == set(extensions)

    def noop() -> None:
        """A task of each app."""

    for app in apps:
        app.task(name="tests.hooks.noop", shared=False)(noop)
    tasks = [app.tasks["tests.hooks.noop"] for app in apps]
    signals.task_success.send(sender=tasks[1], result=1)
    assert seen == [extensions[1]]  # only the hooks of the task's own app answered
    # A worker's task class claims through the hooks of its own app.
    compose_task(tasks[0], hooks[0])
    assert type(tasks[0]).hfcelery_hooks is hooks[0]
    for h in hooks:
        h.disconnect()
    signals.task_success.send(sender=tasks[0], result=1)
    assert seen == [extensions[1]]
