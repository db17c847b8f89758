"""``BackgroundJob.enqueue_many``: many jobs in one statement and one broker round trip, with
the validation and outbox guarantees of single enqueues (whose insert, too, goes out ahead of
its message on PostgreSQL). Store tests on SQLite and PostgreSQL, client tests on the
machine's Redis, and a real worker running a batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from kombu.transport.redis import PublishBatch

import hfcelery
from hfcelery import BackgroundJob, JobFilter, State, call, global_filters
from hfcelery.errors import InvalidCallError, JobCreationCanceledError
from hfcelery.extension import extension_of
from hfcelery.filters import CreatingContext
from hfcelery.monitoring import Monitoring
from hfcelery.records import Dispatch
from hfcelery.store import Store, count_statements
from tests import jobs
from tests.conftest import WorkerProcess, new_postgres_database, wait_for
from tests.test_store import new_job, states_of


def test_create_jobs_writes_jobs_and_history_in_one_statement(store: Store) -> None:
    batch = [new_job() for _ in range(1500)]
    sent: list[list[Dispatch]] = []
    with count_statements(store.engine) as statements:
        assert store.create_jobs(batch, lambda dispatches, **_: sent.append(list(dispatches)))
    inserts = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "WITH"))]
    # PostgreSQL: one statement per 1,000 jobs (jobs and history together); SQLite: two.
    assert len(inserts) == (2 if store.dialect == "postgresql" else 4)
    assert [d.id for d in sent[0]] == [job.id for job in batch]  # one publish call, in order
    details = store.job(batch[-1].id)
    assert details is not None and details.state is State.ENQUEUED
    assert [h.state for h in details.history] == [State.ENQUEUED]
    assert details.history[0].data["queue"] == "default"
    assert store.unpublished_jobs(timedelta(0), 10) == []


def test_create_jobs_keeps_the_jobs_when_the_broker_is_away(store: Store) -> None:
    from kombu.exceptions import OperationalError

    def unreachable(_: Any, **__: Any) -> None:
        raise OperationalError("connection refused")

    batch = [new_job() for _ in range(3)]
    assert store.create_jobs(batch, unreachable) is False
    pending = {d.id for d in store.unpublished_jobs(timedelta(0), 10)}
    assert pending == {job.id for job in batch}  # a worker publishes them later


@pytest.fixture
def redis_app(redis_url: str, postgres_url: str) -> Iterator[Celery]:
    """An app with a database of its own: the jobs it leaves Enqueued (their queue is deleted
    afterwards) must not reach the acceptance tests' workers, which would send them again."""
    with new_postgres_database("hfcelery_batch") as store_url:
        app = Celery("batch", broker=redis_url, set_as_current=False)
        app.conf.task_default_queue = f"hftests-batch-{id(app)}"
        hfcelery.init_app(app, store_url=store_url, allowed_modules=["tests.jobs"])
        extension_of(app).store.migrate()
        yield app
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(app.conf.task_default_queue)
        extension_of(app).store.dispose()


def queued(app: Celery) -> int:
    with app.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(app.conf.task_default_queue))


def test_enqueue_many_publishes_through_one_redis_pipeline(
    redis_app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes: list[int] = []
    real_flush = PublishBatch.flush

    def counting_flush(self: PublishBatch) -> Any:
        flushes.append(1)
        return real_flush(self)

    monkeypatch.setattr(PublishBatch, "flush", counting_flush)
    client = hfcelery.BackgroundJobClient(redis_app)
    ids = client.enqueue_many(call(jobs.multiply, i, 2) for i in range(500))
    assert len(ids) == len(set(ids)) == 500
    assert queued(redis_app) == 500
    assert len(flushes) == 1  # one pipeline for 500 messages
    api = hfcelery.monitoring(redis_app)
    job = api.job(ids[7])
    assert job.args == [7, 2] and job.state is State.ENQUEUED
    assert client.enqueue_many([]) == []


def test_one_bad_call_or_a_veto_writes_nothing(redis_app: Celery) -> None:
    client = hfcelery.BackgroundJobClient(redis_app)
    api = hfcelery.monitoring(redis_app)
    before = sum(api.state_counts().values())
    with pytest.raises(InvalidCallError):
        client.enqueue_many([call(jobs.multiply, 1, 2), call(jobs.multiply, 1, 2, 3)])
    with pytest.raises(InvalidCallError):
        client.enqueue_many(call(jobs.multiply, 1, 2))  # type: ignore[arg-type]

    class VetoSeven(JobFilter):
        def on_creating(self, context: CreatingContext) -> None:
            context.canceled = context.args[0] == 7

    veto = VetoSeven()
    global_filters.add(veto)
    try:
        with pytest.raises(JobCreationCanceledError):
            client.enqueue_many(call(jobs.multiply, i, 1) for i in range(10))
    finally:
        global_filters.remove(veto)
    assert sum(api.state_counts().values()) == before
    assert queued(redis_app) == 0


def test_no_message_leaves_before_its_jobs_are_written(redis_app: Celery) -> None:
    """On PostgreSQL the batch's insert goes out ahead of the messages, which are built
    meanwhile: none leaves before the insert is done, and one the store refuses sends none."""
    from functools import partial

    from hfcelery.errors import StoreDataError
    from hfcelery.publishing import publish_many

    store = extension_of(redis_app).store
    send = partial(publish_many, redis_app)
    queue = redis_app.conf.task_default_queue
    taken = new_job(queue=queue)
    assert store.create_jobs([taken], send) is True
    assert queued(redis_app) == 1
    # An id already taken: the insert fails, nothing of the batch is written or sent.
    batch = [new_job(queue=queue) for _ in range(20)] + [replace(taken, state=State.ENQUEUED)]
    with pytest.raises(StoreDataError):
        store.create_jobs(batch, send)
    assert queued(redis_app) == 1
    assert all(store.job(job.id) is None for job in batch[:-1])
    # Text PostgreSQL cannot hold: refused the same way.
    with pytest.raises(StoreDataError):
        store.create_jobs([new_job(queue=queue, function="f\x00")], send)
    assert queued(redis_app) == 1
    # The connection is clean for the next batch, whose messages are sent in order.
    ok = [new_job(queue=queue) for _ in range(5)]
    seen: list[int] = []

    def watching(dispatches: Any, *, before_flush: Any = None) -> None:
        def inserted() -> object:
            seen.append(queued(redis_app))  # nothing of this batch has left yet
            return before_flush()

        send(dispatches, before_flush=inserted)

    assert store.create_jobs(ok, watching) is True
    assert seen == [1] and queued(redis_app) == 6
    assert all(states_of(store, job.id) == [State.ENQUEUED] for job in ok)


def test_a_single_enqueue_sends_its_message_only_after_its_insert(redis_app: Celery) -> None:
    """A single enqueue on PostgreSQL sends its insert ahead too: the message is built
    meanwhile by Celery's own ``send_task`` and leaves once the insert is done, so an insert
    the store refuses sends nothing, and the message keeps what ``send_task`` gives it."""
    import json
    from functools import partial

    from celery import Task
    from celery._state import _task_stack

    from hfcelery.errors import StoreDataError
    from hfcelery.publishing import publish

    store = extension_of(redis_app).store
    send = partial(publish, redis_app)
    queue = redis_app.conf.task_default_queue
    taken = new_job(queue=queue)
    assert store.create_job(taken, send) is True
    assert queued(redis_app) == 1
    with pytest.raises(StoreDataError):  # an id already taken
        store.create_job(replace(taken, function="tests.jobs:multiply"), send)
    with pytest.raises(StoreDataError):  # text PostgreSQL cannot hold
        store.create_job(new_job(queue=queue, function="f\x00"), send)
    assert queued(redis_app) == 1
    # The message waits for the insert (not yet committed then) and leaves right after it.
    ok = new_job(queue=queue)
    seen: list[tuple[int, bool]] = []

    def watching(dispatch: Dispatch, *, before_send: Any = None) -> None:
        def inserted() -> object:
            done = before_send()
            seen.append((queued(redis_app), store.job(dispatch.id) is None))
            return done

        send(dispatch, before_send=inserted)

    assert store.create_job(ok, watching) is True
    assert seen == [(1, True)] and queued(redis_app) == 2
    assert states_of(store, ok.id) == [State.ENQUEUED]

    # Enqueued by a running task: Celery's parent and root ids, as send_task gives them.
    def running() -> None:
        """The task that enqueues."""

    parent: Task = redis_app.task(name="tests.parent", shared=False)(running)
    parent.push_request(id="parent-id", root_id="root-id", called_directly=False)
    _task_stack.push(parent)
    try:
        child = hfcelery.BackgroundJobClient(redis_app).enqueue(call(jobs.multiply, 2, 3))
    finally:
        _task_stack.pop()
        parent.pop_request()
    with redis_app.connection_for_write() as conn:
        raw = conn.default_channel.client.lpop(queue)  # the newest message
    headers = json.loads(raw)["headers"]
    assert (headers["id"], headers["parent_id"], headers["root_id"]) == (
        child,
        "parent-id",
        "root-id",
    )


def test_a_batch_runs_on_a_worker(worker: WorkerProcess, api: Monitoring) -> None:
    ids = BackgroundJob.enqueue_many(call(jobs.multiply, i, 3) for i in range(40))

    def all_done() -> bool:
        return all(api.job(job_id).state is State.SUCCEEDED for job_id in ids)

    wait_for(all_done, timeout=60, what="40 batched jobs")
    assert api.job(ids[5]).history[-1].data["result"] == 15
