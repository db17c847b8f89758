"""Bad input to the client gets a typed error from ``hfcelery.errors`` and writes nothing.

Run against both stores: what the store would refuse is refused before it is reached.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from hypothesis import given
from hypothesis import strategies as st

import hfcelery
from hfcelery import BackgroundJobClient, Cron, RecurringJobManager, call
from hfcelery.calls import resolve_function
from hfcelery.errors import (
    ArgumentSerializationError,
    ConfigurationError,
    ForbiddenFunctionError,
    FunctionNotFoundError,
    HfceleryError,
    InvalidArgumentError,
    InvalidCallError,
    InvalidCronError,
    InvalidScheduleError,
)
from hfcelery.extension import Extension
from hfcelery.validation import (
    MAX_ARGUMENT_DEPTH,
    nesting_depth_exceeds,
    storable_text,
    storable_value,
)
from tests import jobs


@pytest.fixture(params=["sqlite", "postgresql"])
def extension(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Extension]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        from hfcelery.store import Store
        from tests.conftest import truncate

        url = request.getfixturevalue("postgres_url")
        store = Store(url)
        truncate(store)
        store.dispose()
    app = Celery("validation-test", broker="memory://", set_as_current=False)
    ext = hfcelery.init_app(app, store_url=url, allowed_modules=["tests.jobs"])
    yield ext
    ext.store.dispose()


def nothing_written(extension: Extension) -> bool:
    store = extension.store
    return sum(store.state_counts().values()) == 0 and store.recurring_jobs() == []


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_CLIENT_CALLS = {
    "timedelta-max": lambda c: c.schedule(call(jobs.multiply, 1, 2), timedelta.max),
    "datetime-max-west": lambda c: c.schedule(
        call(jobs.multiply, 1, 2), datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))
    ),
    "datetime-past-9998": lambda c: c.schedule(
        call(jobs.multiply, 1, 2), datetime(9999, 6, 1, tzinfo=UTC)
    ),
    "nested-2000": lambda c: c.enqueue(call(jobs.echo, _nested(2000))),
    "nested-past-limit": lambda c: c.enqueue(call(jobs.echo, _nested(MAX_ARGUMENT_DEPTH + 1))),
    "cycle": lambda c: c.enqueue(call(jobs.echo, _cycle())),
    "type-marker": lambda c: c.enqueue(call(jobs.echo, {"__type__": "money", "__value__": "1"})),
    "type-marker-bytes-kwarg": lambda c: c.enqueue(
        call(jobs.echo, value=[{"__value__": "YQ==", "__type__": "bytes"}])
    ),
    "type-marker-scheduled": lambda c: c.schedule(
        call(jobs.echo, {"k": {"__type__": "x", "__value__": 1}}), timedelta(1)
    ),
    "type-marker-many": lambda c: c.enqueue_many(
        [call(jobs.echo, 1), call(jobs.echo, ({"__type__": "uuid", "__value__": "u"},))]
    ),
    "queue-int": lambda c: c.enqueue(call(jobs.multiply, 1, 2), queue=5),
    "queue-long": lambda c: c.enqueue(call(jobs.multiply, 1, 2), queue="q" * 256),
    "queue-nul": lambda c: c.enqueue(call(jobs.multiply, 1, 2), queue="q\x00"),
    "queue-space": lambda c: c.enqueue(call(jobs.multiply, 1, 2), queue="two words"),
    "queue-upper": lambda c: c.enqueue(call(jobs.multiply, 1, 2), queue="Reports"),
    "queue-dot": lambda c: c.schedule(call(jobs.multiply, 1, 2), timedelta(1), queue="a.b"),
    "queue-formatted": lambda c: c.enqueue(call(jobs.regional_report, "EU West")),
    "parent-long": lambda c: c.continue_job_with("p" * 65, call(jobs.multiply, 1, 2)),
    "parent-nul": lambda c: c.continue_job_with("p\x00", call(jobs.multiply, 1, 2)),
    "parent-int": lambda c: c.continue_when_all([1, 2], call(jobs.multiply, 1, 2)),
    "parents-none": lambda c: c.continue_when_all(iter(()), call(jobs.multiply, 1, 2)),
    "delete-nul": lambda c: c.delete("id\x00"),
    "requeue-long": lambda c: c.requeue("i" * 65),
    "reschedule-int": lambda c: c.reschedule(5, timedelta(1)),
}


def _cycle() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize("name", sorted(BAD_CLIENT_CALLS))
def test_bad_client_input_gets_a_typed_error_and_writes_nothing(
    extension: Extension, name: str
) -> None:
    client = BackgroundJobClient(extension.app)
    with pytest.raises(HfceleryError):
        BAD_CLIENT_CALLS[name](client)
    assert nothing_written(extension)


BAD_RECURRING = {
    "id-long": lambda m: m.add_or_update("r" * 101, call(jobs.multiply, 1, 2), Cron.daily()),
    "id-nul": lambda m: m.add_or_update("r\x00", call(jobs.multiply, 1, 2), Cron.daily()),
    "id-int": lambda m: m.add_or_update(7, call(jobs.multiply, 1, 2), Cron.daily()),
    "cron-long": lambda m: m.add_or_update("r", call(jobs.multiply, 1, 2), "0 " * 60),
    "cron-nul": lambda m: m.add_or_update("r", call(jobs.multiply, 1, 2), "0 0 * * *\x00"),
    "queue-nul": lambda m: m.add_or_update(
        "r", call(jobs.multiply, 1, 2), Cron.daily(), queue="a\x00"
    ),
    "call-type-marker": lambda m: m.add_or_update(
        "r", call(jobs.echo, {"__type__": "decimal", "__value__": "1.5"}), Cron.daily()
    ),
    "remove-nul": lambda m: m.remove_if_exists("r\x00"),
    "pause-long": lambda m: m.pause("r" * 101),
}


@pytest.mark.parametrize("name", sorted(BAD_RECURRING))
def test_bad_recurring_input_gets_a_typed_error_and_writes_nothing(
    extension: Extension, name: str
) -> None:
    manager = RecurringJobManager(extension.app)
    with pytest.raises(HfceleryError):
        BAD_RECURRING[name](manager)
    assert nothing_written(extension)


def test_a_dict_shaped_like_kombu_s_type_marker_is_refused_before_anything_is_written(
    extension: Extension,
) -> None:
    """kombu's JSON reads ``{"__type__": ..., "__value__": ...}`` back as a typed value (or
    refuses an unknown type): as an argument it would reach the function as another value,
    or leave a job whose message cannot be built. A continuation too is refused before it is
    stored; a dict with other keys beside them goes out and comes back as it is."""
    client = BackgroundJobClient(extension.app)
    parent = client.schedule(call(jobs.multiply, 1, 2), timedelta(hours=1))
    marker = {"__type__": "bytes", "__value__": "YQ=="}
    with pytest.raises(ArgumentSerializationError, match="'__type__' and '__value__'"):
        client.continue_job_with(parent, call(jobs.echo, marker))
    with pytest.raises(ArgumentSerializationError, match="keyword arguments"):
        client.enqueue(call(jobs.echo, value=marker))
    assert sum(extension.store.state_counts().values()) == 1  # the parent alone

    plain = {"__type__": "bytes", "__value__": "YQ==", "note": "a form's fields"}
    job_id = client.enqueue(call(jobs.echo, [plain]))
    details = extension.store.job(job_id)
    assert details is not None and details.args == [[plain]]


@pytest.mark.parametrize(
    ("argument", "shown"), [("a\x00b", "a\\x00b"), ("a\ud800b", "a\ufffdb"), ("é" * 300, "é" * 240)]
)
def test_a_display_name_filled_from_any_storable_argument_is_stored(
    extension: Extension, argument: str, shown: str
) -> None:
    """Arguments go as JSON, which holds NUL and lone surrogates; the display name filled from
    them is text, shown with NUL escaped and U+FFFD in place of a surrogate, and cut to the
    column's 255 characters."""
    job_id = BackgroundJobClient(extension.app).enqueue(call(jobs.critical_report, argument))
    details = extension.store.job(job_id)
    assert details is not None
    assert details.display_name == f"Critical report {shown}"[:255]
    assert details.args == [argument]


def test_a_function_this_app_does_not_allow_is_enqueued_with_one_warning(
    extension: Extension, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' settings decide (a client's app may be configured apart from theirs), but
    one whose own settings would refuse the function says so, once per module."""
    from hfcelery import client as client_module

    monkeypatch.setattr(client_module, "_WARNED_MODULES", set())
    client = BackgroundJobClient(extension.app)
    with caplog.at_level(logging.WARNING, logger="hfcelery.client"):
        first = client.enqueue(call(print, "a"))
        client.enqueue(call(print, "b"))
        client.enqueue(call(jobs.multiply, 1, 2))  # allowed: nothing said
    assert extension.store.job(first) is not None
    warnings = [r.getMessage() for r in caplog.records if r.name == "hfcelery.client"]
    assert len(warnings) == 1, warnings
    assert "builtins:print" in warnings[0] and "ForbiddenFunctionError" in warnings[0]


def test_specific_error_types(extension: Extension) -> None:
    client = BackgroundJobClient(extension.app)
    with pytest.raises(InvalidScheduleError):
        BAD_CLIENT_CALLS["timedelta-max"](client)
    with pytest.raises(InvalidCallError, match="nest deeper"):
        BAD_CLIENT_CALLS["nested-2000"](client)
    with pytest.raises(InvalidArgumentError, match="queue name must be a string"):
        BAD_CLIENT_CALLS["queue-int"](client)
    with pytest.raises(InvalidCronError, match="longer than 100"):
        BAD_RECURRING["cron-long"](RecurringJobManager(extension.app))


def test_queue_names_given_to_hfcelery_follow_hangfire_s_rule(extension: Extension) -> None:
    """Lower-case letters, digits, '_' and '-', as Hangfire's; the project's own Celery routing
    (its default queue, a signature's queue) is left as the project has it."""
    client = BackgroundJobClient(extension.app)
    with pytest.raises(InvalidArgumentError, match="lower-case letters, digits"):
        client.enqueue(call(jobs.multiply, 1, 2), queue="Critical")
    assert extension.store.job(client.enqueue(call(jobs.multiply, 1, 2), queue="a_b-9"))
    with pytest.raises(ConfigurationError, match="lower-case letters, digits"):
        hfcelery.queue("Reports.EU")
    extension.app.conf.task_default_queue = "Project.Default"
    job_id = client.enqueue(call(jobs.multiply, 1, 2))
    details = extension.store.job(job_id)
    assert details is not None and details.queue == "Project.Default"


def test_create_and_change_state_as_hangfire_s_client(extension: Extension) -> None:
    from hfcelery import State

    client = BackgroundJobClient(extension.app)
    scheduled = client.create(call(jobs.multiply, 1, 2), "Scheduled", delay=timedelta(hours=1))
    enqueued = client.create(call(jobs.multiply, 1, 2), queue="other")
    for job_id, state in ((scheduled, State.SCHEDULED), (enqueued, State.ENQUEUED)):
        details = extension.store.job(job_id)
        assert details is not None and details.state is state
    for bad in (
        lambda: client.create(call(jobs.multiply, 1, 2), "processing"),
        lambda: client.create(call(jobs.multiply, 1, 2), State.SCHEDULED),  # no delay
        lambda: client.create(call(jobs.multiply, 1, 2), "enqueued", delay=timedelta(1)),
        lambda: client.create(call(jobs.multiply, 1, 2), "nonsense"),
    ):
        with pytest.raises(InvalidArgumentError):
            bad()
    assert sum(extension.store.state_counts().values()) == 2  # nothing half-written

    assert not client.change_state(scheduled, "deleted", expected_state="ENQUEUED")
    assert client.change_state(scheduled, "enqueued", expected_state="SCHEDULED")
    assert client.change_state(scheduled, "scheduled", delay=timedelta(minutes=5))
    assert client.change_state(scheduled, State.DELETED, expected_state="scheduled")
    details = extension.store.job(scheduled)
    assert details is not None
    assert [h.state for h in details.history] == [
        State.SCHEDULED, State.ENQUEUED, State.SCHEDULED, State.DELETED,
    ]  # fmt: skip
    with pytest.raises(InvalidArgumentError):
        client.change_state(enqueued, "succeeded")
    with pytest.raises(InvalidArgumentError):
        client.change_state(enqueued, "scheduled")  # no delay
    with pytest.raises(InvalidArgumentError):
        client.change_state(enqueued, "deleted", delay=timedelta(1))


def test_continue_when_all_takes_a_generator(extension: Extension) -> None:
    client = BackgroundJobClient(extension.app)
    parents = [client.schedule(call(jobs.multiply, i, 2), timedelta(hours=1)) for i in range(3)]
    child = client.continue_when_all((p for p in parents), call(jobs.multiply, 1, 2))
    details = extension.store.job(child)
    assert details is not None and details.parent_ids == parents  # in the order given


def test_valid_input_at_the_limits_is_accepted(extension: Extension) -> None:
    client = BackgroundJobClient(extension.app)
    job_id = client.enqueue(call(jobs.echo, _nested(MAX_ARGUMENT_DEPTH - 1)), queue="q" * 255)
    assert extension.store.job(job_id) is not None
    due = client.schedule(call(jobs.multiply, 1, 2), datetime(9998, 1, 1, tzinfo=UTC))
    assert extension.store.job(due) is not None


# -- resolving function paths --------------------------------------------------------------------


@pytest.mark.parametrize(
    "qualname",
    [
        "touch",
        "canary.touch",
        "os.system",
        "hfcelery.worker.execution.os.system",
        "Reports.__init__",
        "record.__globals__",
        "Reports.instance_method",
        "Subreports.build",
        "Reports",
        "__builtins__",
        "redis.Redis",
    ],
)
def test_only_functions_defined_under_the_given_name_resolve(qualname: str) -> None:
    with pytest.raises(ForbiddenFunctionError):
        resolve_function("tests.jobs", qualname)


def test_missing_names_are_not_found() -> None:
    with pytest.raises(FunctionNotFoundError):
        resolve_function("tests.jobs", "no_such_function")
    with pytest.raises(FunctionNotFoundError):
        resolve_function("tests.no_such_module", "f")


def test_allowed_forms_resolve_to_the_function() -> None:
    assert resolve_function("tests.jobs", "multiply") is jobs.multiply
    assert resolve_function("tests.jobs", "Reports.build")("x") == "report x"
    assert resolve_function("tests.jobs", "Reports.static_build")("x") == "static x"


def test_a_job_module_in_the_worker_s_working_directory_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Celery finds a task module beside the app's (``celery -A app`` run there), and
    leaves ``sys.path`` as it was."""
    import sys

    name = f"hf_cwd_jobs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def greet(who):\n    return 'hello ' + who\n")
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    try:
        assert resolve_function(name, "greet")("you") == "hello you"
        assert sys.path == path_before
    finally:
        sys.modules.pop(name, None)


@given(st.text(max_size=30), st.text(max_size=30))
def test_resolving_arbitrary_names_raises_only_typed_errors(module: str, qualname: str) -> None:
    try:
        func = resolve_function(module, qualname)
    except (ForbiddenFunctionError, FunctionNotFoundError):
        return
    assert func.__module__ == module  # only something really defined there resolves


# -- storable texts ------------------------------------------------------------------------------


def test_storable_text_escapes_nul_replaces_surrogates_and_cuts() -> None:
    assert storable_text("a\x00b") == "a\\x00b"
    assert storable_text("a\udc80b") == "a\ufffdb"
    cut = storable_text("x" * 1000, 100)
    assert cut.startswith("x" * 100) and cut.endswith("[truncated 900 characters]")
    assert storable_value({"k\x00": ["v\x00", 1]}) == {"k\\x00": ["v\\x00", 1]}


def test_nesting_depth_is_measured_without_recursion() -> None:
    assert nesting_depth_exceeds(_nested(50_000), 100)
    assert not nesting_depth_exceeds(_nested(99), 100)


# -- the maintenance loop and ids no job can have -------------------------------------------------


def test_maintenance_goes_on_while_a_message_with_a_nul_id_runs(
    extension: Extension, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from celery.worker import state as worker_state

    from hfcelery.worker.server import Server

    extension.server_id = "validation-test:1"
    worker = SimpleNamespace(hostname="validation-test", concurrency=1, app=extension.app)
    server = Server(extension, worker, ["celery"])
    extension.store.register_server(server.record)
    monkeypatch.setattr(
        worker_state, "active_requests", [SimpleNamespace(id="bad\x00id"), SimpleNamespace(id=7)]
    )
    published: list[str] = []
    monkeypatch.setattr(server, "_publish", lambda dispatch: published.append(dispatch.id))
    client = BackgroundJobClient(extension.app)
    job_id = client.schedule(call(jobs.multiply, 1, 2), timedelta(hours=1))
    assert client.requeue(job_id)  # its message goes to the memory broker ...
    extension.store.change_state(  # ... and is lost: only the maintenance loop sends it again
        job_id, hfcelery.State.ENQUEUED, reason="test", from_states=[hfcelery.State.ENQUEUED]
    )
    config = dataclasses.replace(extension.config, publish_grace_seconds=0)
    monkeypatch.setitem(extension.__dict__, "config", config)
    server.maintain()  # raised on every pass before, leaving the rest undone
    assert published == [job_id]


def test_states_are_named_in_any_case(extension: Extension) -> None:
    client = BackgroundJobClient(extension.app)
    job_id = client.schedule(call(jobs.multiply, 1, 2), timedelta(hours=1))
    assert not client.delete(job_id, expected_state="enqueued")
    assert client.delete(job_id, expected_state="SCHEDULED")
    assert extension.store.job(job_id).state is hfcelery.State.DELETED  # type: ignore[union-attr]
    with pytest.raises(InvalidArgumentError, match="unknown state"):
        client.requeue(job_id, expected_state="gone")
    with pytest.raises(InvalidArgumentError):
        client.requeue(job_id, expected_state=3)  # type: ignore[arg-type]
