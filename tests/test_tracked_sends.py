"""A plain Celery send in an hfcelery app on PostgreSQL: its job is written in one statement,
in a transaction that ends with the send (``Store.open_celery_send``, ``tracking.sending``).

On the machine's Redis and PostgreSQL (an app with a database and a queue of its own): the job
is invisible while its message is being sent and committed, published, once it has left; a
worker that takes the message before that COMMIT waits for it; a task id sent again is
committed before its message leaves; a send that raises leaves the job Failed; a send by an app
without hfcelery (outside ``sending``) is still recorded, the engine's way.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from celery import Celery
from kombu.exceptions import OperationalError
from kombu.messaging import Producer
from sqlalchemy import create_engine, text

import hfcelery
from hfcelery import State
from hfcelery.calls import STAMP_HEADER
from hfcelery.errors import StoreDataError
from hfcelery.extension import extension_of
from hfcelery.records import NewJob
from hfcelery.store import Store, count_statements
from hfcelery.store.jobs import RESENT_REASON
from tests.conftest import new_postgres_database
from tests.test_store import TIMEOUT, server

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def sender(redis_url: str) -> Iterator[tuple[Celery, Any, str]]:
    """An hfcelery app on a database of its own, with a plain task, and its store's URL."""
    with new_postgres_database("hfcelery_sends") as store_url:
        app = Celery("sends", broker=redis_url, set_as_current=False)
        app.conf.task_default_queue = f"hftests-sends-{uuid.uuid4().hex[:8]}"
        hfcelery.init_app(app, store_url=store_url)
        extension_of(app).store.migrate()

        # A name of its own: sends are tracked by the app that has the task's name.
        @app.task(name=f"tests.sends.plain_{uuid.uuid4().hex[:8]}", shared=False)
        def plain(value: int) -> int:
            return value

        yield app, plain, store_url
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(app.conf.task_default_queue)
        extension_of(app).store.dispose()


def row(store_url: str, job_id: str) -> Any:
    """The job's committed row, read on a connection of its own (None if not committed)."""
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            query = text("SELECT state, published, sent_stamp FROM hfcelery_jobs WHERE id = :id")
            return conn.execute(query, {"id": job_id}).first()
    finally:
        engine.dispose()


Check = Callable[[dict[str, Any]], object]


def assert_sent(
    app: Celery, store_url: str, task_id: str, *, args: list[Any], messages: int
) -> None:
    """The job is committed Enqueued and published, with ``args``; ``messages`` are queued."""
    committed = row(store_url, task_id)
    assert committed is not None and (committed.state, committed.published) == ("Enqueued", True)
    job = extension_of(app).store.job(task_id)
    assert job is not None and job.args == args
    with app.connection_for_write() as conn:
        assert conn.default_channel.client.llen(app.conf.task_default_queue) == messages


@pytest.fixture
def while_publishing(monkeypatch: pytest.MonkeyPatch) -> Callable[[Check], None]:
    """Runs a check, given the message's headers, inside kombu's publish of each message,
    right before it leaves."""

    def install(check: Check) -> None:
        original = Producer._publish

        def publish(self: Producer, body: Any, priority: Any, content_type: Any,
                    content_encoding: Any, headers: dict[str, Any], *args: Any,
                    **kwargs: Any) -> Any:  # fmt: skip
            check(headers)
            return original(
                self, body, priority, content_type, content_encoding, headers, *args, **kwargs
            )

        monkeypatch.setattr(Producer, "_publish", publish)

    return install


def test_a_send_writes_its_job_in_one_statement_committed_once_the_message_left(
    sender: tuple[Celery, Any, str], while_publishing: Callable[[Check], None]
) -> None:
    app, plain, store_url = sender
    store = extension_of(app).store
    plain.delay(0)  # the store's first use checks its schema
    seen_while_publishing: list[Any] = []
    task_id = str(uuid.uuid4())
    while_publishing(lambda _: seen_while_publishing.append(row(store_url, task_id)))
    with count_statements(store.engine) as statements:
        plain.apply_async((1,), task_id=task_id)
    assert seen_while_publishing == [None]  # written, not committed, while the message left
    assert len(statements) == 1 and statements[0].lstrip().startswith("WITH")
    committed = row(store_url, task_id)
    assert committed is not None and (committed.state, committed.published) == ("Enqueued", True)
    job = store.job(task_id)
    assert job is not None and job.args == [1] and job.queue == app.conf.task_default_queue
    assert [(h.state, h.reason) for h in job.history] == [(State.ENQUEUED, "Sent as a Celery task")]
    with app.connection_for_write() as conn:
        assert conn.default_channel.client.llen(app.conf.task_default_queue) == 2


def test_a_worker_that_takes_the_message_first_waits_for_the_commit(
    sender: tuple[Celery, Any, str], while_publishing: Callable[[Check], None]
) -> None:
    """The worker's claim finds no committed row: it writes the job from the message, which
    waits for the sender's insert, finds it, and claims it once the sender has committed."""
    app, plain, store_url = sender
    worker_store = Store(store_url)
    worker_store.register_server(server("s1"))
    task_id = str(uuid.uuid4())
    claims: list[Any] = []

    def from_message() -> NewJob:
        return NewJob(
            id=task_id,
            function=plain.name,
            task_name=plain.name,
            args_json="[2]",
            kwargs_json="{}",
            queue=app.conf.task_default_queue,
            state=State.ENQUEUED,
            data={"queue": app.conf.task_default_queue},
            tracked=True,
        )

    def take() -> None:
        claims.append(
            worker_store.claim(
                task_id,
                server_id="s1",
                worker_id="w1",
                server_timeout=TIMEOUT,
                stamp=stamp[0],
                untracked=from_message,
            )
        )

    stamp: list[str] = []
    taker = threading.Thread(target=take)

    def race(headers: dict[str, Any]) -> None:
        stamp.append(headers[STAMP_HEADER])
        taker.start()
        taker.join(0.5)
        assert taker.is_alive(), "the claim did not wait for the sender's transaction"

    while_publishing(race)
    try:
        plain.apply_async((2,), task_id=task_id)
        taker.join(10)
        assert not taker.is_alive()
        assert claims and claims[0] is not None and claims[0].number == 1
        job = worker_store.job(task_id)
        assert job is not None
        assert [h.state for h in job.history] == [State.ENQUEUED, State.PROCESSING]
    finally:
        worker_store.dispose()


def test_a_task_id_sent_again_is_committed_before_its_message_leaves(
    sender: tuple[Celery, Any, str], while_publishing: Callable[[Check], None]
) -> None:
    """A worker taking the message of the new send must find its stamp, or it would skip it as
    a stale message of the older send."""
    app, plain, store_url = sender
    store = extension_of(app).store
    task_id = str(uuid.uuid4())
    plain.apply_async((1,), task_id=task_id)
    first = row(store_url, task_id)
    seen_while_publishing: list[Any] = []
    while_publishing(lambda _: seen_while_publishing.append(row(store_url, task_id)))
    plain.apply_async((2,), task_id=task_id)
    assert len(seen_while_publishing) == 1
    before = seen_while_publishing[0]
    assert before is not None and before.sent_stamp != first.sent_stamp  # the new send's
    assert (before.state, before.published) == ("Enqueued", False)
    after = row(store_url, task_id)
    assert (after.state, after.published, after.sent_stamp) == ("Enqueued", True, before.sent_stamp)
    job = store.job(task_id)
    assert job is not None and job.args == [2]
    assert [h.reason for h in job.history] == ["Sent as a Celery task", RESENT_REASON]


def test_a_send_that_raises_leaves_its_job_failed_and_nothing_to_publish(
    sender: tuple[Celery, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, plain, store_url = sender
    store = extension_of(app).store

    def refused(self: Producer, *args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(Producer, "_publish", refused)
    task_id = str(uuid.uuid4())
    with pytest.raises(OperationalError):
        plain.apply_async((3,), task_id=task_id, retry=False)
    committed = row(store_url, task_id)
    assert committed is not None and (committed.state, committed.published) == ("Failed", False)
    job = store.job(task_id)
    assert job is not None
    assert [h.state for h in job.history] == [State.ENQUEUED, State.FAILED]
    assert "could not be sent: OperationalError: connection refused" in (
        job.history[-1].reason or ""
    )
    assert task_id not in [d.id for d in store.unpublished_jobs(timedelta(0), 100)]


def test_a_send_that_raises_after_its_message_left_stays_published(
    sender: tuple[Celery, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery publishes a task-sent event after the message (``task_send_sent_event``): that
    event failing raises from ``apply_async``, yet the task was sent and runs."""
    app, plain, store_url = sender
    app.conf.task_send_sent_event = True
    from celery.events.dispatcher import EventDispatcher

    def refused(self: EventDispatcher, *args: Any, **kwargs: Any) -> None:
        raise OperationalError("event connection refused")

    monkeypatch.setattr(EventDispatcher, "publish", refused)
    task_id = str(uuid.uuid4())
    with pytest.raises(OperationalError):
        plain.apply_async((4,), task_id=task_id)
    committed = row(store_url, task_id)
    assert committed is not None and (committed.state, committed.published) == ("Enqueued", True)


def test_a_send_by_an_app_without_hfcelery_is_recorded_too(
    sender: tuple[Celery, Any, str], redis_url: str
) -> None:
    """An app without hfcelery sending, by name, a task an hfcelery app has: its send is not
    wrapped by hfcelery, so the job is written and marked published the engine's way."""
    app, plain, store_url = sender
    other = Celery("other", broker=redis_url, set_as_current=False)
    other.conf.task_default_queue = app.conf.task_default_queue
    task_id = str(uuid.uuid4())
    other.send_task(plain.name, (5,), task_id=task_id)
    assert_sent(app, store_url, task_id, args=[5], messages=1)


def sent_job(**changes: Any) -> NewJob:
    job = NewJob(
        id=str(uuid.uuid4()),
        function="tests.sends.plain",
        task_name="tests.sends.plain",
        args_json="[]",
        kwargs_json="{}",
        queue="default",
        state=State.ENQUEUED,
        reason="Sent as a Celery task",
        data={"queue": "default"},
        tracked=True,
        sent_stamp=uuid.uuid4().hex,
    )
    return replace(job, **changes)


def test_an_open_send_survives_a_dropped_connection_and_refuses_bad_data(
    postgres_url: str,
) -> None:
    """The server dropping the send's connection (a restart) before it is used: the statement
    goes out again on a new one. Data PostgreSQL cannot hold is refused before anything is
    sent, and leaves the connection idle for the next send."""
    store = Store(postgres_url)
    try:
        first = store.open_celery_send(sent_job())
        assert first is not None
        first.sent()
        assert store.job(first.job_id) is not None  # read after the COMMIT was settled
        fast = store._fast
        assert fast is not None
        [(_, conn)] = [(pid, c) for pid, c in fast._opened if not c.closed]
        with store.engine.begin() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({conn.info.backend_pid})")
        again = store.open_celery_send(sent_job())
        assert again is not None
        again.sent()
        assert conn.closed  # found dropped, and replaced
        job = store.job(again.job_id)
        assert job is not None and [h.state for h in job.history] == [State.ENQUEUED]
        with pytest.raises(StoreDataError):
            store.open_celery_send(sent_job(args_json='["nul\x00"]'))
        idle = [c for _, c in fast._opened if not c.closed]
        assert [c.info.transaction_status for c in idle] == [psycopg.pq.TransactionStatus.IDLE]
        last = store.open_celery_send(sent_job())
        assert last is not None
        last.sent()
        assert store.job(last.job_id) is not None
    finally:
        store.dispose()


def test_an_open_send_discarded_writes_nothing(postgres_url: str) -> None:
    store = Store(postgres_url)
    try:
        job = sent_job()
        send = store.open_celery_send(job)
        assert send is not None
        send.discard()
        assert store.job(job.id) is None
        with pytest.raises(RuntimeError):
            send.sent()  # ended already
        with pytest.raises(ValueError):
            store.open_celery_send(replace(job, sent_stamp=None))
    finally:
        store.dispose()


@pytest.mark.parametrize("handler", ["unknown task", "revoke"])
def test_a_worker_failing_or_revoking_the_message_first_waits_for_the_commit(
    postgres_url: str, handler: str
) -> None:
    """A worker that receives the message before the sender's COMMIT and cannot run it (no
    such task registered there, or revoked: an ``expires`` already past) changes the job once
    the sender has committed it, rather than finding nothing and leaving it Enqueued."""
    sender_store, worker_store = Store(postgres_url), Store(postgres_url)
    try:
        job = sent_job()
        send = sender_store.open_celery_send(job)
        assert send is not None
        changed: list[bool] = []

        def change() -> None:
            if handler == "revoke":
                changed.append(worker_store.revoke(job.id, reason="Revoked", retention=None))
            else:
                changed.append(
                    worker_store.fail_enqueued(
                        job.id, reason="Unknown task", data={}, transition="unknown_task"
                    )
                )

        worker = threading.Thread(target=change)
        worker.start()
        worker.join(0.5)
        assert worker.is_alive(), "the change did not wait for the sender's transaction"
        send.sent()
        worker.join(10)
        assert changed == [True]
        details = worker_store.job(job.id)
        final = State.DELETED if handler == "revoke" else State.FAILED
        assert details is not None and [h.state for h in details.history] == [
            State.ENQUEUED,
            final,
        ]
        # Nothing written by anybody: nothing waited for, nothing changed.
        assert not worker_store.revoke(str(uuid.uuid4()), reason="Revoked", retention=None)
    finally:
        sender_store.dispose()
        worker_store.dispose()


def test_a_send_whose_after_publish_signal_never_came_is_committed_when_it_returns(
    sender: tuple[Celery, Any, str],
) -> None:
    """``sending`` ends the transaction whatever happens: here hfcelery's own
    ``after_task_publish`` receiver is disconnected, so only the end of the send commits."""
    from celery import signals

    from hfcelery.tracking import after_task_publish

    _, plain, store_url = sender
    uid = "hfcelery.after_task_publish"
    assert signals.after_task_publish.disconnect(dispatch_uid=uid)
    try:
        task_id = str(uuid.uuid4())
        plain.apply_async((6,), task_id=task_id)
    finally:
        signals.after_task_publish.connect(after_task_publish, weak=False, dispatch_uid=uid)
    committed = row(store_url, task_id)
    assert committed is not None and (committed.state, committed.published) == ("Enqueued", True)


def test_a_send_of_the_same_id_from_within_its_own_send_does_not_wait_for_itself(
    sender: tuple[Celery, Any, str],
) -> None:
    """A project's ``before_task_publish`` receiver sending the same task id again, before the
    first message has left: the job is that thread's own uncommitted write, so the inner send
    is not tracked (a warning says so) instead of waiting for it forever; each send ends its
    own transaction only."""
    from celery import signals

    app, plain, store_url = sender
    task_id = str(uuid.uuid4())
    nested: list[str] = []

    def send_again(sender: str | None = None, headers: Any = None, **_: Any) -> None:
        if headers.get("id") == task_id and not nested:
            nested.append("sent")
            plain.apply_async((8,), task_id=task_id)

    signals.before_task_publish.connect(send_again, weak=False)
    try:
        done = threading.Event()

        def send() -> None:
            plain.apply_async((7,), task_id=task_id)
            done.set()

        threading.Thread(target=send, daemon=True).start()
        assert done.wait(20), "the nested send waited for its own outer send"
    finally:
        signals.before_task_publish.disconnect(send_again)
    assert nested == ["sent"]
    assert_sent(app, store_url, task_id, args=[7], messages=2)


def test_a_send_its_message_does_not_name_is_rolled_back_when_the_send_ends(
    sender: tuple[Celery, Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A project's ``before_task_publish`` receiver that rewrites hfcelery's stamp header: the
    open send is no longer found by its message, so nothing commits it on the way. When the
    thread's outermost send ends it is rolled back with a warning: no transaction is left open
    on the store's connections, and a later send of the same task id is tracked as usual (the
    message that left is recorded by the worker that takes it, from the message)."""
    from celery import signals

    app, plain, store_url = sender
    task_id = str(uuid.uuid4())

    def restamp(sender: str | None = None, headers: Any = None, **_: Any) -> None:
        if headers.get("id") == task_id and STAMP_HEADER in headers:
            headers[STAMP_HEADER] = "restamped-by-the-project"

    signals.before_task_publish.connect(restamp, weak=False)
    try:
        with caplog.at_level("WARNING", logger="hfcelery.tracking"):
            plain.apply_async((9,), task_id=task_id)
    finally:
        signals.before_task_publish.disconnect(restamp)
    assert any(
        "rolls back the job of task" in r.getMessage() and task_id in r.getMessage()
        for r in caplog.records
    )
    assert row(store_url, task_id) is None  # rolled back: never committed
    fast = extension_of(app).store._fast
    assert fast is not None
    statuses = {c.info.transaction_status for _, c in fast._opened if not c.closed}
    assert statuses == {psycopg.pq.TransactionStatus.IDLE}
    plain.apply_async((10,), task_id=task_id)  # the same id, sent again, untouched
    assert_sent(app, store_url, task_id, args=[10], messages=2)


def test_a_send_blocked_longer_than_the_transaction_timeout_leaves_its_job_to_the_worker(
    sender: tuple[Celery, Any, str],
    while_publishing: Callable[[Check], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A publish that blocks (RabbitMQ's flow control, kombu retrying an unreachable broker)
    holds the job's transaction open only for ``SEND_TRANSACTION_TIMEOUT_SECONDS``: PostgreSQL
    then ends the session. The send still succeeds once its message leaves, a warning says the
    job was not committed, the worker that takes the message writes the job from it, and the
    next send goes out on a new connection."""
    from hfcelery.store import base

    monkeypatch.setattr(base, "SEND_TRANSACTION_TIMEOUT_SECONDS", 0.5)
    app, plain, store_url = sender
    blocked = str(uuid.uuid4())

    def block(headers: dict[str, Any]) -> None:
        if headers.get("id") == blocked:
            time.sleep(2.0)

    while_publishing(block)
    with caplog.at_level("WARNING", logger="hfcelery"):
        plain.apply_async((3,), task_id=blocked)
        assert row(store_url, blocked) is None  # the transaction was ended by the server
        later = str(uuid.uuid4())
        plain.apply_async((4,), task_id=later)
    assert "could not" in caplog.text and "worker that takes" in caplog.text
    assert_sent(app, store_url, later, args=[4], messages=2)
    worker_store = Store(store_url)
    try:
        worker_store.register_server(server("s1"))

        def from_message() -> NewJob:
            return sent_job(id=blocked, function=plain.name, task_name=plain.name)

        claimed = worker_store.claim(
            blocked, server_id="s1", worker_id="w1", server_timeout=TIMEOUT,
            stamp=None, untracked=from_message,
        )  # fmt: skip
        assert claimed is not None
        job = worker_store.job(blocked)
        assert job is not None and job.state is State.PROCESSING
    finally:
        worker_store.dispose()
