"""The worker path as an attacker with access to the broker sees it, against a real worker.

Every message here is forged: published raw (task protocol 2) to the real Redis broker, the way
anybody who can reach the broker could. What must hold: only functions defined in allowed
modules run, under exactly the name the message gives; messages the store cannot record settle
(recorded Failed, or dropped and counted) instead of being handed back forever; malformed
messages do not kill the worker; every outcome can be stored.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfcelery import BackgroundJob, State, call
from hfcelery.calls import PERFORM_TASK_NAME
from hfcelery.errors import InvalidCallError
from hfcelery.monitoring import Monitoring
from hfcelery.validation import MAX_ARGUMENT_DEPTH
from tests import jobs
from tests.conftest import FINAL, WorkerProcess, token, wait_for, wait_state
from tests.forge import MISSING, Forger

pytestmark = pytest.mark.acceptance

#: How often the same message may reach the worker before it counts as looping.
MAX_DELIVERIES = 3


@pytest.fixture(scope="module")
def forge(test_app: Any, test_env: dict[str, str]) -> Forger:
    return Forger(test_app, test_env["HF_TEST_QUEUE"])


def deliveries(worker: WorkerProcess, message_id: str) -> int:
    """How often the worker received the message with ``message_id`` (from its log)."""
    return worker.log().count(f"[{message_id}] received")


def canary_touched(side_effects: redis.Redis, tok: str) -> bool:
    return bool(side_effects.exists(f"hftests:canary:{tok}"))


def healthy(worker: WorkerProcess, api: Monitoring) -> None:
    """The worker is alive and still runs jobs."""
    assert worker.process.poll() is None, worker.log()[-3000:]
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.multiply, 6, 7)))
    assert job.state is State.SUCCEEDED


# -- 1. the allowlist guards the function finally called ---------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "tests.jobs:touch",  # imported into an allowed module, defined elsewhere
        "tests.jobs:canary.touch",  # through a module an allowed module imports
        "tests.canary:touch",  # a module that is not allowed
        "tests.jobs:hfcelery.worker.execution.os.system",
        "tests.jobs:os.system",
        "tests.jobs:time.sleep",
        "tests.jobs:redis.Redis",
        "tests.jobs:Reports.__init__",
        "tests.jobs:record.__globals__",
        "tests.jobs:Reports.build.__func__",
        "tests.jobs:Reports.instance_method",  # a method of instances
        "tests.jobs:Subreports.build",  # inherited: defined as Reports.build
        "tests.jobs:Reports",  # a class: calling it would run its constructor
        "tests.jobs:__builtins__.eval",
        "os:system",
        "builtins:eval",
    ],
)
def test_forged_paths_outside_the_allowlist_never_run(
    worker: WorkerProcess,
    api: Monitoring,
    forge: Forger,
    side_effects: redis.Redis,
    tmp_path: Path,
    path: str,
) -> None:
    tok = token()
    marker = tmp_path / "pwned"
    argument = f"touch {marker}" if path.endswith(("system", "eval")) else tok
    job = wait_state(api, forge.perform(path, argument))
    assert job.state is State.FAILED, job
    failed = job.history[-1]
    assert failed.data["exception_type"] == "hfcelery.errors.ForbiddenFunctionError", failed
    assert job.retry_count == 0  # refused for good: no automatic retry
    assert not canary_touched(side_effects, tok)
    assert not marker.exists()


def test_the_client_refuses_what_the_worker_would_refuse() -> None:
    for func in (jobs.Reports().instance_method, jobs.Reports.instance_method):
        with pytest.raises(InvalidCallError):
            BackgroundJob.enqueue(call(func, "x"))


@pytest.mark.parametrize(
    ("path", "args", "expected"),
    [
        ("tests.jobs:Reports.build", ["q4"], "report q4"),
        ("tests.jobs:Reports.static_build", ["q4"], "static q4"),
        ("tests.jobs:multiply", [6, 7], 42),
    ],
)
def test_functions_defined_in_allowed_modules_still_run(
    worker: WorkerProcess, api: Monitoring, forge: Forger, path: str, args: list[Any], expected: Any
) -> None:
    job = wait_state(api, forge.perform(path, *args))
    assert job.state is State.SUCCEEDED, job
    assert job.history[-1].data["result"] == expected


# -- 2. poison messages settle ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "why"),
    [
        ("x" * 65, "longer than 64"),
        ("job\x00id", "control character"),
        ("\udc80job", "lone surrogate"),
    ],
    ids=["too-long", "nul", "surrogate"],
)
def test_message_whose_id_no_job_can_have_is_dropped_once_and_counted(
    worker: WorkerProcess, api: Monitoring, forge: Forger, task_id: str, why: str
) -> None:
    before, _ = api.dropped_messages()
    forge.perform("tests.jobs:multiply", 2, 3, task_id=task_id)

    def dropped() -> Any:
        count, newest = api.dropped_messages()
        return count > before and newest[0]

    record = wait_for(dropped, what="the message to be noted as dropped")
    assert why in record.reason
    assert record.task_name == PERFORM_TASK_NAME
    wait_for(lambda: forge.queued() == 0, what="the queue to drain")
    time.sleep(1.5)  # a message handed back would be redelivered within this
    assert api.dropped_messages()[0] == before + 1
    healthy(worker, api)


def test_plain_celery_task_with_an_unstorable_id_runs_untracked(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    from tests.app import record

    tok = token()
    long_id = "custom-" + "y" * 80
    record.apply_async((tok,), task_id=long_id)
    wait_for(lambda: side_effects.llen(f"hftests:{tok}") == 1, what="the task to run")
    time.sleep(1.5)
    assert side_effects.llen(f"hftests:{tok}") == 1  # once, not again and again
    assert api.find_job(long_id) is None
    assert deliveries(worker, long_id) == 1


@pytest.mark.parametrize(
    ("headers", "function", "why"),
    [
        ({}, "tests.jobs:multi\x00ply", "control character"),
        ({"retries": 2**40}, "tests.jobs:multiply", "out of range"),
        ({"retries": "many"}, "tests.jobs:multiply", "whole number"),
        ({}, "x" * 300, "longer than 255"),
        ({}, 42, "name its function first"),
    ],
    ids=["nul-function", "huge-retries", "text-retries", "long-function", "int-function"],
)
def test_message_with_a_storable_id_but_bad_fields_is_recorded_failed(
    worker: WorkerProcess,
    api: Monitoring,
    forge: Forger,
    headers: dict[str, Any],
    function: Any,
    why: str,
) -> None:
    message_id = forge.perform(function, 2, 3, **headers)
    job = wait_state(api, message_id)
    assert job.state is State.FAILED
    assert job.history[-1].reason is not None and why in job.history[-1].reason
    assert "\x00" not in job.function
    wait_for(lambda: forge.queued() == 0, what="the queue to drain")
    time.sleep(1.5)
    assert deliveries(worker, message_id) == 1
    assert [h.state for h in api.job(message_id).history] == [State.FAILED]
    healthy(worker, api)


def test_forged_bad_message_does_not_fail_a_job_that_already_finished(
    worker: WorkerProcess, api: Monitoring, forge: Forger
) -> None:
    job_id = BackgroundJob.enqueue(call(jobs.multiply, 2, 2))
    assert wait_state(api, job_id).state is State.SUCCEEDED
    forge.perform("tests.jobs:multiply", 2, 3, task_id=job_id, retries=2**40)
    wait_for(lambda: forge.queued() == 0, what="the queue to drain")
    time.sleep(1)
    assert api.job(job_id).state is State.SUCCEEDED


# -- 3. every outcome can be stored ----------------------------------------------------------


@pytest.mark.parametrize(
    "message", ["disk\x00on fire", "bad \udc80 text", "long " + "z" * 200_000], ids=str.split
)
def test_exceptions_with_odd_texts_are_recorded_failed_once(
    worker: WorkerProcess, api: Monitoring, message: str
) -> None:
    job_id = BackgroundJob.enqueue(call(jobs.raise_with, message))
    job = wait_state(api, job_id)
    assert job.state is State.FAILED
    failed = job.history[-1]
    text = failed.data["exception_message"]
    assert "\x00" not in text and "\x00" not in (failed.reason or "")
    assert not re.search("[\ud800-\udfff]", text + (failed.reason or ""))
    assert len(text) < 70_000
    if "\x00" in message:
        assert text == "disk\\x00on fire"
    if len(message) > 100_000:
        assert "[truncated" in text
    time.sleep(1)
    assert len(api.job(job_id).history) == 3  # Enqueued, Processing, Failed: no re-run


def test_results_that_do_not_read_back_are_kept_as_their_repr(
    worker: WorkerProcess, api: Monitoring
) -> None:
    parent = BackgroundJob.enqueue(call(jobs.untyped_dict))
    child = BackgroundJob.continue_job_with(parent, call(jobs.echo), pass_result=True)
    job = wait_state(api, parent)
    assert job.state is State.SUCCEEDED
    data = job.history[-1].data
    assert data["result"] == repr({"__type__": "nope", "__value__": 1})
    assert "repr" in data["result_note"]
    continuation = wait_state(api, child)  # released and run, not waiting forever
    assert continuation.state is State.SUCCEEDED
    assert continuation.history[-1].data["result"] == data["result"]


@pytest.mark.parametrize(
    ("the_call", "check"),
    [
        (lambda: call(jobs.echo, "a\x00b"), lambda d: d["result"] == "a\\x00b"),
        (lambda: call(jobs.huge_text, 300_000), lambda d: "cut" in d["result_note"]),
    ],
    ids=["nul", "huge"],
)
def test_odd_results_are_stored(
    worker: WorkerProcess, api: Monitoring, the_call: Any, check: Any
) -> None:
    job = wait_state(api, BackgroundJob.enqueue(the_call()))
    assert job.state is State.SUCCEEDED
    assert check(job.history[-1].data)


# -- 8. malformed messages do not kill the worker ------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "message",
    [
        {"body": {}},
        {"body": []},
        {"task_id": [1, 2]},
        {"task_id": 12345},
        {"task_id": MISSING},
        {"args": [_nested(900)]},
        {"args": [_nested(MAX_ARGUMENT_DEPTH + 5)]},
        {"body": [[], [], {}]},
        {"body": "just text"},
        {"task": ["tests.add"]},
        {"task": {"name": "tests.add"}},
        {"timelimit": 5},
        {"timelimit": [1]},
        {"timelimit": ["a", "b"]},
        {"timelimit": [None, "10"]},
        {"timelimit": [float("inf"), None]},
        {"stamped_headers": 5},
        {"stamped_headers": [["a"]]},
        {"stamped_headers": ["a"], "stamps": "a"},
    ],
    ids=[
        "body-dict",
        "body-list",
        "id-list",
        "id-int",
        "no-id",
        "nested-900",
        "nested-past-limit",
        "kwargs-list",
        "body-text",
        "task-list",
        "task-dict",
        "timelimit-int",
        "timelimit-one",
        "timelimit-text",
        "timelimit-text-soft",
        "timelimit-infinite",
        "stamped-int",
        "stamped-nested",
        "stamps-text",
    ],
)
def test_malformed_messages_are_rejected_and_the_worker_lives(
    worker: WorkerProcess, api: Monitoring, forge: Forger, message: dict[str, Any]
) -> None:
    before, _ = api.dropped_messages()
    task = message.pop("task", "tests.add")
    forge.send(task, **{"args": [1, 2], **message})
    wait_for(lambda: forge.queued() == 0, what="the queue to drain")
    wait_for(lambda: api.dropped_messages()[0] > before, what="the message to be counted")
    healthy(worker, api)


# -- properties over forged paths, ids and headers -----------------------------------------------

_NAMES = st.sampled_from(
    [
        "tests",
        "jobs",
        "canary",
        "touch",
        "os",
        "system",
        "hfcelery",
        "Reports",
        "build",
        "record",
        "__class__",
        "__globals__",
        "__init__",
        "multiply",
        "redis",
    ]
)
_PATHS = st.one_of(
    st.builds(
        lambda module, parts: f"{module}:{'.'.join(parts)}",
        st.sampled_from(["tests.jobs", "tests.canary", "os", "tests", "builtins"]),
        st.lists(_NAMES, min_size=1, max_size=4),
    ),
    st.text(max_size=40),
)
_IDS = st.one_of(
    st.uuids().map(str),
    st.text(max_size=80),
    st.integers(),
)
_RETRIES = st.one_of(st.just(0), st.integers(min_value=-5, max_value=2**41), st.text(max_size=3))


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(st.tuples(_PATHS, _IDS, _RETRIES), min_size=8, max_size=8))
def test_forged_messages_never_run_outside_the_allowlist_and_always_settle(
    worker: WorkerProcess,
    api: Monitoring,
    forge: Forger,
    side_effects: redis.Redis,
    messages: list[tuple[str, Any, Any]],
) -> None:
    tok = token()
    sent = []
    for path, message_id, retries in messages:
        if isinstance(message_id, str) and api.find_job(message_id) is not None:
            continue  # hypothesis repeats small ids; a job of an earlier example holds it
        sent.append(forge.perform(path, tok, task_id=message_id, retries=retries))
    wait_for(lambda: forge.queued() == 0, timeout=60, what="every forged message to be taken")

    def settled() -> bool:
        for message_id in sent:
            job = api.find_job(message_id) if isinstance(message_id, str) else None
            if job is not None and job.state not in (*FINAL, State.SCHEDULED):
                return False
        return True

    wait_for(settled, timeout=60, what="every forged job to reach a final or retry state")
    assert not canary_touched(side_effects, tok)
    for message_id in sent:
        if isinstance(message_id, str) and message_id.isprintable() and message_id:
            assert deliveries(worker, message_id) <= MAX_DELIVERIES, message_id
    assert worker.process.poll() is None


def test_a_function_missing_on_the_worker_is_retried_not_failed_for_good(
    worker: WorkerProcess, api: Monitoring, forge: Forger
) -> None:
    # An older worker receiving a newer job during a deploy, as Hangfire treats it.
    job_id = forge.perform("tests.jobs:deployed_tomorrow", 1)
    job = wait_state(api, job_id, (State.SCHEDULED, State.FAILED))
    assert job.state is State.SCHEDULED, job
    failed, scheduled = job.history[-2:]
    assert failed.data["exception_type"] == "hfcelery.errors.FunctionNotFoundError"
    assert scheduled.reason is not None and scheduled.reason.startswith("Retry attempt 1 of")
    assert BackgroundJob.delete(job_id)


# -- 7. forged messages cannot bend job states ---------------------------------------------------


def test_forged_retry_message_does_not_start_a_second_run_of_a_running_job(
    worker: WorkerProcess, api: Monitoring, forge: Forger, side_effects: redis.Redis
) -> None:
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.sleep_then_record, tok, 3))
    wait_for(lambda: side_effects.lrange(f"hftests:{tok}", 0, -1) == ["started"], what="start")
    forge.perform("tests.jobs:sleep_then_record", tok, 3, task_id=job_id, retries=5)
    wait_for(lambda: forge.queued() == 0, what="the forged message to be taken")
    time.sleep(1)
    assert side_effects.lrange(f"hftests:{tok}", 0, -1) == ["started"]  # no second run
    job = wait_state(api, job_id)
    assert job.state is State.SUCCEEDED
    assert [h.state for h in job.history].count(State.PROCESSING) == 1
    assert side_effects.lrange(f"hftests:{tok}", 0, -1) == ["started", "finished"]


@pytest.mark.parametrize("retries", [0, 1, 7])
def test_forged_message_does_not_run_a_scheduled_job_before_it_is_due(
    worker: WorkerProcess, api: Monitoring, forge: Forger, side_effects: redis.Redis, retries: int
) -> None:
    tok = token()
    job_id = BackgroundJob.schedule(call(jobs.record, tok), timedelta(hours=1))
    forge.perform("tests.jobs:record", tok, task_id=job_id, retries=retries)
    wait_for(lambda: forge.queued() == 0, what="the forged message to be taken")
    time.sleep(1.5)
    assert side_effects.llen(f"hftests:{tok}") == 0
    assert api.job(job_id).state is State.SCHEDULED
    assert BackgroundJob.delete(job_id)


def test_forged_recurring_fire_creates_jobs_only_for_real_past_occurrences(
    worker: WorkerProcess, api: Monitoring, forge: Forger
) -> None:
    from hfcelery import Cron, RecurringJob
    from hfcelery.recurring.fire import FIRE_TASK_NAME

    recurring_id = f"security-{token()[:8]}"
    RecurringJob.add_or_update(recurring_id, call(jobs.multiply, 2, 21), Cron.daily(3, 0))
    try:
        now = datetime.now(UTC)
        today_0300 = now.replace(hour=3, minute=0, second=0, microsecond=0)
        past = today_0300 if today_0300 < now else today_0300 - timedelta(days=1)
        refused = [
            [recurring_id, past.replace(minute=17).isoformat()],  # not an occurrence
            [recurring_id, (past + timedelta(days=2)).isoformat()],  # a future occurrence
            [recurring_id, "not a time"],
            [recurring_id, past.replace(tzinfo=None).isoformat()],
            [12345, past.isoformat()],
            ["no-such-recurring-job", past.isoformat()],
        ]
        for args in refused:
            forge.send(FIRE_TASK_NAME, args)
        wait_for(lambda: forge.queued() == 0, what="the forged fires to be taken")
        time.sleep(1.5)
        assert api.recurring_job(recurring_id).last_job_id is None
        forge.send(FIRE_TASK_NAME, [recurring_id, past.isoformat()])  # a real past occurrence

        def created() -> str | None:
            return api.recurring_job(recurring_id).last_job_id

        job_id = wait_for(created, what="the real occurrence's job")
        assert wait_state(api, job_id).state is State.SUCCEEDED
        assert api.job(job_id).scheduled_for == past
    finally:
        RecurringJob.remove_if_exists(recurring_id)
