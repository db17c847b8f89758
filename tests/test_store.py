"""The job store, each test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from kombu.exceptions import OperationalError as BrokerUnavailable
from sqlalchemy import func, inspect, select, update

from hfcelery.errors import SchemaOutOfDateError, StoreDataError
from hfcelery.records import Claim, Dispatch, NewJob, ServerRecord
from hfcelery.states import State
from hfcelery.store import Store, count_statements, schema
from hfcelery.store.models import Base, Job, JobState, Server
from tests.conftest import new_postgres_database, truncate, wait_for

TIMEOUT = timedelta(seconds=15)


def new_job(state: State = State.ENQUEUED, **overrides: object) -> NewJob:
    values: dict[str, object] = {
        "id": str(uuid4()),
        "function": "tests.jobs:multiply",
        "task_name": "hfcelery.perform",
        "args_json": "[2, 3]",
        "kwargs_json": "{}",
        "queue": "default",
        "state": state,
        "data": {"queue": "default"},
    }
    values.update(overrides)
    return NewJob(**values)  # type: ignore[arg-type]


def server(server_id: str = "s1") -> ServerRecord:
    now = datetime.now(UTC)
    return ServerRecord(server_id, "celery@host", 1, ["default"], 2, now, now)


def register(store: Store, server_id: str = "s1", heartbeat_age: timedelta = timedelta(0)) -> None:
    """A server whose last heartbeat is ``heartbeat_age`` old."""
    store.register_server(server(server_id))
    if heartbeat_age:
        set_heartbeat(store, server_id, datetime.now(UTC) - heartbeat_age)


def set_heartbeat(store: Store, server_id: str, at: datetime) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(Server).where(Server.id == server_id).values(heartbeat_at=at))


def claim(store: Store, job_id: str, server_id: str = "s1", **kwargs: object) -> Claim | None:
    return store.claim(
        job_id, server_id=server_id, worker_id="w1", server_timeout=TIMEOUT, **kwargs
    )  # type: ignore[arg-type]


def states_of(store: Store, job_id: str) -> list[State]:
    details = store.job(job_id)
    assert details is not None
    return [h.state for h in details.history]


# -- schema ------------------------------------------------------------------------------------


def test_migrations_create_exactly_the_models(store: Store) -> None:
    store.state_counts()  # a SQLite store migrates itself on first use
    assert store.schema_revision() == schema.head_revision()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    schema.downgrade(store.engine, "base")
    assert store.schema_revision() is None
    assert not inspect(store.engine).has_table("hfcelery_jobs")
    store.migrate()
    assert inspect(store.engine).has_table("hfcelery_jobs")


def test_unmigrated_store_without_auto_upgrade_says_how_to_migrate(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}", auto_upgrade=False)
    with pytest.raises(SchemaOutOfDateError, match="celery -A <your app> hf migrate"):
        store.state_counts()


def test_bare_postgresql_url_uses_psycopg() -> None:
    assert Store("postgresql://u@127.0.0.1/db").url.drivername == "postgresql+psycopg"


# -- creating ----------------------------------------------------------------------------------


def sending_to(sent: list[Dispatch]) -> Callable[..., None]:
    """A publish that notes each message, sent once ``before_send`` (if given) returns."""

    def publish(dispatch: Dispatch, *, before_send: Callable[[], object] | None = None) -> None:
        if before_send is not None:
            before_send()
        sent.append(dispatch)

    return publish


def test_create_job_with_history_and_publish(store: Store) -> None:
    sent: list[Dispatch] = []
    job = new_job()
    assert store.create_job(job, sending_to(sent)) is True
    assert [d.id for d in sent] == [job.id]
    details = store.job(job.id)
    assert details is not None
    assert details.state is State.ENQUEUED
    assert (details.args, details.kwargs, details.queue) == ([2, 3], {}, "default")
    assert [(h.state, h.data) for h in details.history] == [
        (State.ENQUEUED, {"queue": "default", "enqueued_at": details.created_at.isoformat()})
    ]
    assert store.unpublished_jobs(timedelta(0), 10) == []


def test_broker_down_keeps_the_job_for_later_publishing(store: Store) -> None:
    def broker_down(_: Dispatch, *, before_send: object = None) -> None:
        raise BrokerUnavailable("connection refused")

    job = new_job()
    assert store.create_job(job, broker_down) is False
    assert store.job(job.id) is not None
    pending = store.unpublished_jobs(timedelta(0), 10)
    assert [d.id for d in pending] == [job.id]
    assert store.unpublished_jobs(timedelta(minutes=5), 10) == []  # grace period
    store.mark_published([job.id])
    assert store.unpublished_jobs(timedelta(0), 10) == []


def test_other_publish_errors_leave_nothing_written(store: Store) -> None:
    def broken(_: Dispatch, *, before_send: object = None) -> None:
        raise ValueError("bad routing")

    job = new_job()
    with pytest.raises(ValueError, match="bad routing"):
        store.create_job(job, broken)
    assert store.job(job.id) is None


# -- claiming and finishing ----------------------------------------------------------------------


def test_claim_is_compare_and_set(store: Store) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    assert claim(store, job.id) is not None
    assert claim(store, job.id) is None  # processing on a live server
    assert claim(store, job.id, server_id="s2") is None
    assert states_of(store, job.id) == [State.ENQUEUED, State.PROCESSING]
    details = store.job(job.id)
    assert details is not None
    assert (details.state, details.server_id, details.worker_id) == (State.PROCESSING, "s1", "w1")


@pytest.mark.parametrize("final", [State.SUCCEEDED, State.FAILED, State.DELETED])
def test_finished_jobs_are_not_claimed_again(store: Store, final: State) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    claim(store, job.id)
    assert store.finish(job.id, server_id="s1", state=final, reason=None, data={})
    assert claim(store, job.id) is None
    assert states_of(store, job.id) == [State.ENQUEUED, State.PROCESSING, final]


def test_a_processing_job_is_never_taken_over_by_a_message(store: Store) -> None:
    """Even when its server's heartbeat looks old (as every heartbeat does right after a store
    outage): a live run would be doubled. The maintenance loop requeues a dead server's jobs,
    and their new message claims them."""
    register(store, "dead", heartbeat_age=timedelta(minutes=1))
    job = new_job()
    store.create_job(job)
    claim(store, job.id, server_id="dead")
    assert claim(store, job.id, server_id="s2") is None
    with store.engine.begin() as conn:  # it started long ago
        conn.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(state_changed_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert store.recover_dead_servers(TIMEOUT) == [job.id]
    assert claim(store, job.id, server_id="s2") is not None
    details = store.job(job.id)
    assert details is not None and details.server_id == "s2"


def test_later_attempt_of_a_celery_retry_can_be_claimed_once_scheduled_and_due(
    store: Store,
) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    first = claim(store, job.id, attempt=0)
    assert first is not None
    assert claim(store, job.id, attempt=0) is None
    # A message claiming a later attempt while the job runs on a live server: forged or stale.
    assert claim(store, job.id, attempt=1) is None
    due = datetime.now(UTC) + timedelta(minutes=5)
    kw = {"server_id": "s1", "reason": "Celery retry", "data": {}, "claim": first.number}
    assert store.finish(job.id, state=State.SCHEDULED, due_at=due, **kw)  # type: ignore[arg-type]
    assert claim(store, job.id, attempt=1) is None  # not due yet
    with store.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job.id).values(due_at=datetime.now(UTC)))
    assert claim(store, job.id, attempt=1) is not None
    details = store.job(job.id)
    assert details is not None and details.retry_count == 1


def test_claim_records_a_job_that_has_a_message_but_no_row(store: Store) -> None:
    store.register_server(server("s1"))
    untracked = new_job(reason="Recorded by the worker")
    assert claim(store, untracked.id) is None  # without a description, nothing to record
    assert claim(store, untracked.id, untracked=lambda: untracked) is not None
    assert states_of(store, untracked.id) == [State.ENQUEUED, State.PROCESSING]
    assert claim(store, untracked.id, untracked=lambda: untracked) is None


def test_only_one_of_many_concurrent_claims_wins(store: Store) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    barrier = threading.Barrier(8)
    results: list[datetime | None] = []

    def racer() -> None:
        barrier.wait()
        results.append(claim(store, job.id))

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert states_of(store, job.id).count(State.PROCESSING) == 1


def test_finish_needs_the_holding_server_and_worker(store: Store) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    claim(store, job.id)
    kw = {"state": State.SUCCEEDED, "reason": None, "data": {}}
    assert not store.finish(job.id, server_id="s2", **kw)  # type: ignore[arg-type]
    assert not store.finish(job.id, server_id="s1", worker_id="w2", **kw)  # type: ignore[arg-type]
    assert store.finish(job.id, server_id="s1", worker_id="w1", retention=timedelta(hours=1), **kw)  # type: ignore[arg-type]
    details = store.job(job.id)
    assert details is not None and details.expire_at is not None
    assert (
        timedelta(minutes=59) < details.expire_at - details.state_changed_at <= timedelta(hours=1)
    )


def test_worker_path_statements(store: Store) -> None:
    """Claim and finish: one statement each on PostgreSQL (data-modifying CTEs), two on SQLite."""
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    store.state_counts()  # schema check and connection set-up happen outside the count
    with count_statements(store.engine) as statements:
        claim(store, job.id)
        store.finish(job.id, server_id="s1", state=State.SUCCEEDED, reason=None, data={})
    assert len(statements) == (2 if store.dialect == "postgresql" else 4), statements
    assert states_of(store, job.id) == [State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]


# -- management --------------------------------------------------------------------------------


def test_change_state_with_expected_state(store: Store) -> None:
    job = new_job()
    store.create_job(job)
    assert not store.change_state(job.id, State.DELETED, reason="x", expected_state=State.FAILED)
    assert store.change_state(job.id, State.DELETED, reason="x", expected_state=State.ENQUEUED)
    assert not store.change_state(
        job.id, State.DELETED, reason="again", from_states=[State.ENQUEUED]
    )
    assert states_of(store, job.id) == [State.ENQUEUED, State.DELETED]


def test_requeue_publishes_again(store: Store) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    claim(store, job.id)
    store.finish(job.id, server_id="s1", state=State.FAILED, reason="boom", data={})
    sent: list[Dispatch] = []
    assert store.change_state(job.id, State.ENQUEUED, reason="requeue", publish=sent.append)
    assert [d.function for d in sent] == ["tests.jobs:multiply"]
    assert claim(store, job.id) is not None


def test_release_processing_after_a_lost_worker(store: Store) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    claim(store, job.id)
    assert not store.release_processing(job.id, server_id="s2", reason="lost")
    assert store.release_processing(job.id, server_id="s1", reason="lost")
    assert claim(store, job.id) is not None


# -- servers, recovery, locks ------------------------------------------------------------------


def test_dead_servers_are_removed_and_their_jobs_requeued(store: Store) -> None:
    register(store, "dead", heartbeat_age=timedelta(minutes=5))
    store.register_server(server("alive"))
    lost, kept = new_job(), new_job()
    store.create_job(lost)
    store.create_job(kept)
    claim(store, lost.id, server_id="dead")
    claim(store, kept.id, server_id="alive")
    with store.engine.begin() as conn:  # the dead server's job started long ago
        conn.execute(
            update(Job)
            .where(Job.id == lost.id)
            .values(state_changed_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    assert store.recover_dead_servers(TIMEOUT) == [lost.id]
    assert [s.id for s in store.servers()] == ["alive"]
    assert states_of(store, lost.id)[-1] is State.ENQUEUED
    assert states_of(store, kept.id)[-1] is State.PROCESSING
    assert [d.id for d in store.unpublished_jobs(timedelta(0), 10)] == [lost.id]
    # The maintenance that requeued it publishes it at once, whatever the grace.
    assert [d.id for d in store.unpublished_jobs(timedelta(hours=1), 10, ids=[lost.id])] == [
        lost.id
    ]
    assert store.unpublished_jobs(timedelta(0), 10, ids=[kept.id]) == []


def test_a_server_declared_dead_takes_back_the_jobs_it_still_runs(store: Store) -> None:
    """A partition from the store longer than the server timeout: the server's jobs were
    requeued; when it registers again, those it still runs and nobody claimed are its own again,
    and its running copy's outcome is recorded."""
    register(store, "s1", heartbeat_age=timedelta(minutes=5))
    running, taken, done = new_job(), new_job(), new_job()
    claims: dict[str, Claim] = {}
    for job in (running, taken, done):
        store.create_job(job)
        claimed = claim(store, job.id, server_id="s1")
        assert claimed is not None
        claims[job.id] = claimed
    with store.engine.begin() as conn:
        conn.execute(update(Job).values(state_changed_at=datetime.now(UTC) - timedelta(minutes=5)))
    assert sorted(store.recover_dead_servers(TIMEOUT)) == sorted([running.id, taken.id, done.id])
    store.register_server(server("s2"))
    claim(store, taken.id, server_id="s2")  # the requeued message ran elsewhere meanwhile
    store.register_server(server("s1"))
    assert store.reclaim_running("s1", [running.id, taken.id]) == [running.id]
    assert states_of(store, running.id)[-2:] == [State.ENQUEUED, State.PROCESSING]
    assert states_of(store, taken.id)[-1] is State.PROCESSING  # on s2, left alone
    assert states_of(store, done.id)[-1] is State.ENQUEUED  # not running on s1 any more
    # A job requeued for another reason (an operator's requeue) is not taken back.
    claim(store, done.id, server_id="s2")
    assert store.release_processing(done.id, server_id="s2", reason="requeued by hand")
    assert store.reclaim_running("s1", [done.id]) == []
    assert store.finish(
        running.id, server_id="s1", worker_id="123.456", state=State.SUCCEEDED, reason=None,
        data={}, claim=claims[running.id].number,
    )  # fmt: skip
    assert states_of(store, running.id)[-1] is State.SUCCEEDED


def test_enqueued_jobs_whose_message_may_be_lost(store: Store) -> None:
    """Sent long ago and never claimed; not a job whose message is still on its way, one that
    runs, or a Celery task waiting in a worker for its ETA."""
    lost, unsent, running, waiting_for_eta, recent = (new_job() for _ in range(5))
    celery_task = new_job(tracked=True)  # its message is Celery's to deliver
    for job in (lost, unsent, running, recent, celery_task):
        store.create_job(job)
    store.create_job(new_job(id=waiting_for_eta.id, due_at=datetime.now(UTC) + timedelta(hours=1)))
    store.mark_published([lost.id, running.id, waiting_for_eta.id, recent.id, celery_task.id])
    claim(store, running.id)
    with store.engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id != recent.id)
            .values(state_changed_at=datetime.now(UTC) - timedelta(minutes=10))
        )
    stale = store.stale_enqueued(timedelta(minutes=5), 10)
    assert [d.id for d in stale] == [lost.id]
    assert stale[0].function == lost.function


def test_a_finished_job_the_store_lost_is_written_from_its_message(store: Store) -> None:
    from hfcelery.store.jobs import LOST_ROW_REASON

    job = new_job()
    assert store.record_lost_outcome(
        job, state=State.SUCCEEDED, reason=None, data={"result": 6},
        retention=timedelta(hours=1),
    )  # fmt: skip
    details = store.job(job.id)
    assert details is not None and details.state is State.SUCCEEDED
    assert [(h.state, h.reason) for h in details.history] == [
        (State.ENQUEUED, LOST_ROW_REASON),
        (State.SUCCEEDED, None),
    ]
    assert details.history[-1].data["result"] == 6
    # A job that exists was taken away, not lost: nothing is written.
    assert not store.record_lost_outcome(job, state=State.FAILED, reason="x", data={})
    assert states_of(store, job.id) == [State.ENQUEUED, State.SUCCEEDED]


def test_a_job_lock_belongs_to_a_running_job_on_a_live_server(store: Store) -> None:
    """@disable_concurrent_execution's lock: free once its job leaves Processing or its server
    stops heartbeating, without anyone releasing it."""
    store.register_server(server("s1"))
    store.register_server(server("s2"))
    first, second, third = new_job(), new_job(), new_job()
    for job in (first, second, third):
        store.create_job(job)
    claim(store, first.id, server_id="s1")
    claim(store, second.id, server_id="s2")
    assert store.try_job_lock("concurrency:f", first.id, TIMEOUT)
    assert store.try_job_lock("concurrency:f", first.id, TIMEOUT)  # its own: again
    assert not store.try_job_lock("concurrency:f", second.id, TIMEOUT)
    assert store.try_job_lock("concurrency:g", second.id, TIMEOUT)  # another resource
    store.finish(first.id, server_id="s1", state=State.SUCCEEDED, reason=None, data={})
    assert store.try_job_lock("concurrency:f", second.id, TIMEOUT)  # the holder ended
    claim(store, third.id, server_id="s1")
    assert not store.try_job_lock("concurrency:f", third.id, TIMEOUT)
    register(store, "s2", heartbeat_age=TIMEOUT * 2)  # s2 stopped heartbeating
    assert store.try_job_lock("concurrency:f", third.id, TIMEOUT)
    store.release_lock("concurrency:f", third.id)
    assert store.try_job_lock("concurrency:f", second.id, TIMEOUT)


def test_a_job_lock_released_while_it_is_being_taken_is_not_held_without_a_row(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's release lands between a waiter's insert (which met the holder's row) and its
    look at the owner: the waiter must not count the lock as its own without a row, or the next
    waiter's insert takes it too (two runs at once, seen under load with three workers)."""
    store.register_server(server("s1"))
    waiter, next_waiter = new_job(), new_job()
    for job in (waiter, next_waiter):
        store.create_job(job)
        claim(store, job.id)
    with monkeypatch.context() as patch:  # the insert met a row that is gone by the next look
        patch.setattr(store, "_insert_ignoring_conflict", lambda *args, **kwargs: False)
        assert not store.try_job_lock("concurrency:f", waiter.id, TIMEOUT)
    assert store.try_job_lock("concurrency:f", next_waiter.id, TIMEOUT)
    assert not store.try_job_lock("concurrency:f", waiter.id, TIMEOUT)  # one holder


def test_a_worker_clock_running_ahead_neither_judges_others_dead_nor_takes_their_lease(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats and leases are told by the database's clock: a worker whose own clock runs
    ahead by more than the server timeout sees the others as they are."""
    pg_store.register_server(server("alive"))
    assert pg_store.try_lock("maintenance", "alive", TIMEOUT)
    ahead = datetime.now(UTC) + TIMEOUT * 2
    for module in ("hfcelery.store.base", "hfcelery.store.servers"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: ahead)
    pg_store.register_server(server("fast"))
    assert pg_store.heartbeat("fast")
    assert pg_store.recover_dead_servers(TIMEOUT, judge="fast") == []
    assert sorted(s.id for s in pg_store.servers()) == ["alive", "fast"]
    assert not pg_store.try_lock("maintenance", "fast", TIMEOUT)
    assert all(s.heartbeat_at < ahead - TIMEOUT for s in pg_store.servers())


def test_a_heartbeat_that_waited_for_a_lock_is_stamped_when_written(pg_store: Store) -> None:
    pg_store.register_server(server("s1"))
    with pg_store.engine.connect() as locker:
        locker.execute(update(Server).where(Server.id == "s1").values(pid=2))  # row locked
        beat = threading.Thread(target=pg_store.heartbeat, args=("s1",))
        beat.start()
        wait_for(lambda: not beat.join(0.05) and beat.is_alive(), what="the heartbeat to wait")
        threading.Event().wait(1.0)
        released = datetime.now(UTC)
        locker.commit()
    beat.join(10)
    assert pg_store.servers()[0].heartbeat_at >= released - timedelta(milliseconds=50)


def test_a_judge_whose_own_heartbeat_is_late_judges_nobody(store: Store) -> None:
    """Everybody's heartbeat is late after a stall of the store, the judge's too: nobody is
    judged dead until the judge's own heartbeat is on time again; the judge never is."""
    register(store, "judge", heartbeat_age=TIMEOUT * 2)
    register(store, "other", heartbeat_age=TIMEOUT * 2)
    fresh = timedelta(seconds=5)
    assert store.recover_dead_servers(TIMEOUT, judge="judge", judge_fresh=fresh) == []
    assert sorted(s.id for s in store.servers()) == ["judge", "other"]
    assert store.heartbeat("judge")
    store.recover_dead_servers(TIMEOUT, judge="judge", judge_fresh=fresh)
    assert [s.id for s in store.servers()] == ["judge"]
    register(store, "late", heartbeat_age=TIMEOUT * 2)
    set_heartbeat(store, "judge", datetime.now(UTC) - TIMEOUT * 2)
    store.recover_dead_servers(TIMEOUT, judge="judge")  # without judge_fresh: never itself
    assert [s.id for s in store.servers()] == ["judge"]


def test_heartbeat_and_remove_server(store: Store) -> None:
    register(store, "s1", heartbeat_age=timedelta(minutes=1))
    assert store.heartbeat("s1")
    assert store.servers()[0].heartbeat_at > datetime.now(UTC) - timedelta(seconds=5)
    job = new_job()
    store.create_job(job)
    claim(store, job.id)
    assert store.remove_server("s1", reason="stopped") == [job.id]
    assert store.servers() == []
    assert not store.heartbeat("s1")
    assert states_of(store, job.id)[-1] is State.ENQUEUED


def test_lock_is_held_by_one_owner_until_it_expires(store: Store) -> None:
    assert store.try_lock("m", "a", timedelta(minutes=1))
    assert store.try_lock("m", "a", timedelta(minutes=1))  # renewal
    assert not store.try_lock("m", "b", timedelta(minutes=1))
    store.release_lock("m", "a")
    assert store.try_lock("m", "b", timedelta(seconds=-1))  # taken, already expired
    assert store.try_lock("m", "a", timedelta(minutes=1))


# -- reading -----------------------------------------------------------------------------------


def test_counts_and_keyset_pages(store: Store) -> None:
    ids = []
    for _ in range(7):
        job = new_job()
        store.create_job(job)
        ids.append(job.id)
    store.change_state(ids[0], State.DELETED, reason="x")
    counts = store.state_counts()
    assert counts[State.ENQUEUED] == 6 and counts[State.DELETED] == 1
    assert counts[State.SUCCEEDED] == 0
    seen: list[str] = []
    after = None
    while True:
        page = store.jobs(State.ENQUEUED, limit=4, after=after)
        seen.extend(item.id for item in page.items)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert sorted(seen) == sorted(ids[1:])
    assert len(seen) == 6


def test_server_rows_are_plain_records(store: Store) -> None:
    store.register_server(server("s1"))
    with store.engine.connect() as conn:
        assert conn.execute(Server.__table__.select()).first() is not None
    (record,) = store.servers()
    assert (record.id, record.queues, record.concurrency) == ("s1", ["default"], 2)


def test_orphans_of_a_live_server_are_requeued(store: Store) -> None:
    """A job Processing on this server that it no longer runs lost its outcome."""
    store.register_server(server("s1"))
    running, orphan = new_job(), new_job()
    for job in (running, orphan):
        store.create_job(job)
        claim(store, job.id)
    assert store.requeue_orphans("s1", [running.id, orphan.id], timedelta(0)) == []
    assert store.requeue_orphans("s1", [running.id], timedelta(minutes=1)) == []  # too recent
    assert store.requeue_orphans("s1", [running.id], timedelta(0)) == [orphan.id]
    assert states_of(store, orphan.id)[-1] is State.ENQUEUED
    assert states_of(store, running.id)[-1] is State.PROCESSING
    assert [d.id for d in store.unpublished_jobs(timedelta(0), 10)] == [orphan.id]


def test_finish_records_the_outcome_of_a_lost_claim(store: Store) -> None:
    """After a database crash forgot the claim, the job reads Enqueued as before the claim."""
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    kw = {"server_id": "s1", "state": State.SUCCEEDED, "reason": None, "data": {}}
    assert not store.finish(job.id, **kw)  # type: ignore[arg-type]
    assert not store.finish(job.id, claim=2, **kw)  # type: ignore[arg-type]  # not this claim
    assert store.finish(job.id, claim=1, **kw)  # type: ignore[arg-type]  # the forgotten one
    assert states_of(store, job.id) == [State.ENQUEUED, State.SUCCEEDED]


def test_a_requeue_while_running_is_never_taken_for_a_lost_claim(store: Store) -> None:
    """Whatever the clocks say: the requeued job runs again, the old run's outcome is dropped."""
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    first = claim(store, job.id)
    assert first is not None and first.number == 1
    assert store.change_state(
        job.id, State.ENQUEUED, reason="requeued", from_states=[State.PROCESSING]
    )
    kw = {"server_id": "s1", "state": State.SUCCEEDED, "reason": None, "data": {}}
    assert not store.finish(job.id, claim=first.number, **kw)  # type: ignore[arg-type]
    second = claim(store, job.id)  # the requeue's message, on the same server and worker
    assert second is not None and second.number == 2
    assert not store.finish(job.id, claim=first.number, **kw)  # type: ignore[arg-type]
    assert store.finish(job.id, claim=second.number, **kw)  # type: ignore[arg-type]
    assert states_of(store, job.id) == [
        State.ENQUEUED, State.PROCESSING, State.ENQUEUED, State.PROCESSING, State.SUCCEEDED
    ]  # fmt: skip


def test_store_is_fork_safe(store: Store) -> None:
    """A child of a process that used the store gets its own connections (prefork pools)."""
    import os

    job = new_job()
    store.create_job(job)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: use the inherited store, report, and leave without cleanup
        try:
            ok = store.job(job.id) is not None and store.change_state(
                job.id, State.DELETED, reason="from the child"
            )
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.close(write)
    assert states_of(store, job.id) == [State.ENQUEUED, State.DELETED]  # parent still works


# -- scheduling, retries, retention --------------------------------------------------------------


def scheduled_job(due_in: timedelta) -> NewJob:
    return new_job(State.SCHEDULED, due_at=datetime.now(UTC) + due_in)


def test_enqueue_due_moves_only_due_jobs_and_publishes_them(store: Store) -> None:
    due, later = scheduled_job(-timedelta(seconds=1)), scheduled_job(timedelta(hours=1))
    store.create_job(due)
    store.create_job(later)
    sent: list[Dispatch] = []
    assert store.enqueue_due(limit=10, grace=timedelta(seconds=5), publish=sent.append) == 1
    assert [d.id for d in sent] == [due.id]
    assert states_of(store, due.id) == [State.SCHEDULED, State.ENQUEUED]
    assert store.job(due.id).due_at is None  # type: ignore[union-attr]
    assert states_of(store, later.id) == [State.SCHEDULED]
    assert store.unpublished_jobs(timedelta(0), 10) == []


def test_concurrent_schedulers_enqueue_each_job_once(store: Store) -> None:
    jobs_ = [scheduled_job(-timedelta(seconds=1)) for _ in range(120)]
    for job in jobs_:
        store.create_job(job)
    sent: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(3)

    def publish(d: Dispatch) -> None:
        with lock:
            sent.append(d.id)

    def scheduler() -> None:
        barrier.wait()
        while store.enqueue_due(limit=10, grace=timedelta(seconds=5), publish=publish):
            pass

    threads = [threading.Thread(target=scheduler) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == sorted(j.id for j in jobs_)
    assert store.state_counts()[State.ENQUEUED] == 120


def test_broker_down_while_enqueueing_due_jobs(store: Store) -> None:
    job = scheduled_job(-timedelta(seconds=1))
    store.create_job(job)

    def broker_down(_: Dispatch, *, before_send: object = None) -> None:
        raise BrokerUnavailable("refused")

    assert store.enqueue_due(limit=10, grace=timedelta(seconds=5), publish=broker_down) == 1
    assert [d.id for d in store.unpublished_jobs(timedelta(0), 10)] == [job.id]


def test_published_scheduled_job_waits_for_its_own_message(store: Store) -> None:
    """A Celery self.retry() has a message on its way: the scheduler waits out the grace."""
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    claim(store, job.id)
    due = datetime.now(UTC) - timedelta(seconds=1)
    store.finish(job.id, server_id="s1", state=State.SCHEDULED, reason="retry", data={}, due_at=due)
    grace = timedelta(seconds=30)
    assert store.enqueue_due(limit=10, grace=grace, publish=lambda d: None) == 0
    assert claim(store, job.id, attempt=1) is not None  # the retry message claims it


def test_a_celery_retry_is_never_taken_over_by_the_scheduler(store: Store) -> None:
    """A plain Celery task's self.retry() message may wait in a busy worker long after it fell
    due: the scheduler leaves it to that message (a bare copy would lose its chain and count
    its retries from zero again), however late."""
    store.register_server(server("s1"))
    job = new_job(tracked=True)
    store.create_job(job)
    store.mark_published([job.id])
    claim(store, job.id)
    due = datetime.now(UTC) - timedelta(hours=1)
    store.finish(job.id, server_id="s1", state=State.SCHEDULED, reason="retry", data={}, due_at=due)
    sent: list[Dispatch] = []
    assert store.enqueue_due(limit=10, grace=timedelta(seconds=5), publish=sent.append) == 0
    assert sent == []
    assert claim(store, job.id, attempt=1) is not None  # the retry message claims it


def test_retry_records_failed_then_scheduled(store: Store) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    claim(store, job.id)
    due = datetime.now(UTC) + timedelta(seconds=30)
    assert store.retry(
        job.id,
        server_id="s1",
        worker_id="w1",
        due_at=due,
        failed_reason="RuntimeError: x",
        failed_data={"exception_type": "builtins.RuntimeError"},
        reason="Retry attempt 1 of 3: RuntimeError: x",
    )
    details = store.job(job.id)
    assert details is not None
    assert (details.state, details.retry_count, details.due_at) == (State.SCHEDULED, 1, due)
    assert [h.state for h in details.history][-2:] == [State.FAILED, State.SCHEDULED]
    assert details.history[-1].data == {
        "enqueue_at": due.isoformat(),
        "attempt": 1,
        "scheduled_at": details.state_changed_at.isoformat(),
    }
    assert details.history[-2].data["server_id"] == "s1"  # every Failed names its server
    assert details.history[-2].data["failed_at"] == details.state_changed_at.isoformat()
    assert not store.retry(
        job.id,
        server_id="s1",
        worker_id="w1",
        due_at=due,
        failed_reason="",
        failed_data={},
        reason="",
    )


def test_a_retry_due_at_once_is_enqueued_and_sent(store: Store) -> None:
    """A zero delay: Failed, then Enqueued (not Scheduled), published after the commit."""
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    claim(store, job.id)
    sent: list[Dispatch] = []
    assert store.retry(
        job.id, server_id="s1", worker_id="w1", due_at=datetime.now(UTC),
        failed_reason="RuntimeError: x", failed_data={}, reason="Retry attempt 1 of 3: x",
        publish=sent.append,
    )  # fmt: skip
    details = store.job(job.id)
    assert details is not None
    assert (details.state, details.retry_count, details.due_at) == (State.ENQUEUED, 1, None)
    assert [h.state for h in details.history][-2:] == [State.FAILED, State.ENQUEUED]
    assert details.history[-1].data == {
        "queue": "default",
        "attempt": 1,
        "enqueued_at": details.state_changed_at.isoformat(),
    }
    assert [d.id for d in sent] == [job.id]
    assert store.unpublished_jobs(timedelta(0), 10) == []  # marked published
    assert claim(store, job.id) is not None  # the new message claims it


def test_expired_jobs_are_deleted_with_their_history(store: Store) -> None:
    store.register_server(server("s1"))
    old, fresh, failed = new_job(), new_job(), new_job()
    for job in (old, fresh, failed):
        store.create_job(job)
        claim(store, job.id)
    kw = {"server_id": "s1", "reason": None, "data": {}}
    store.finish(old.id, state=State.SUCCEEDED, retention=timedelta(seconds=-1), **kw)  # type: ignore[arg-type]
    store.finish(fresh.id, state=State.SUCCEEDED, retention=timedelta(hours=1), **kw)  # type: ignore[arg-type]
    store.finish(failed.id, state=State.FAILED, **kw)  # type: ignore[arg-type]
    assert store.delete_expired(limit=10) == 1
    assert store.job(old.id) is None
    assert store.job(fresh.id) is not None and store.job(failed.id) is not None
    with store.engine.connect() as conn:
        orphans = conn.execute(JobState.__table__.select().where(JobState.job_id == old.id))
        assert orphans.first() is None


def test_failed_jobs_are_trimmed_only_past_their_limits(store: Store) -> None:
    store.register_server(server("s1"))
    failed = []
    for _ in range(5):
        job = new_job()
        store.create_job(job)
        claim(store, job.id)
        store.finish(job.id, server_id="s1", state=State.FAILED, reason="x", data={})
        failed.append(job.id)
    assert store.trim_failed(older_than=None, keep=None, limit=10) == 0
    assert store.trim_failed(older_than=timedelta(hours=1), keep=None, limit=10) == 0
    assert store.trim_failed(older_than=None, keep=3, limit=10) == 2
    assert store.state_counts()[State.FAILED] == 3
    assert store.trim_failed(older_than=timedelta(0), keep=None, limit=10) == 3


def test_scheduler_taking_over_a_celery_retry_outranks_its_late_message(store: Store) -> None:
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    claim(store, job.id, attempt=0)
    due = datetime.now(UTC) - timedelta(minutes=1)  # the retry message is long overdue
    store.finish(job.id, server_id="s1", state=State.SCHEDULED, reason="retry", data={}, due_at=due)
    assert store.enqueue_due(limit=10, grace=timedelta(seconds=5), publish=lambda d: None) == 1
    assert claim(store, job.id, server_id="s1", attempt=0) is not None  # the scheduler's message
    assert claim(store, job.id, server_id="s1", attempt=1) is None  # the late retry message


def test_retry_of_a_lost_claim(store: Store) -> None:
    job = new_job()
    store.create_job(job)
    kw = {
        "server_id": "s1",
        "worker_id": "w1",
        "due_at": datetime.now(UTC),
        "failed_reason": "x",
        "failed_data": {},
        "reason": "retry",
    }
    assert not store.retry(job.id, **kw)  # type: ignore[arg-type]
    assert not store.retry(job.id, claim=2, **kw)  # type: ignore[arg-type]
    assert store.retry(job.id, claim=1, **kw)  # type: ignore[arg-type]
    assert states_of(store, job.id) == [State.ENQUEUED, State.FAILED, State.SCHEDULED]


def test_mark_published_only_touches_enqueued_jobs(store: Store) -> None:
    job = new_job(State.SCHEDULED, due_at=datetime.now(UTC))
    store.create_job(job)
    store.mark_published([job.id])
    with store.engine.connect() as conn:
        published = conn.execute(Job.__table__.select().where(Job.id == job.id)).first()
    assert published is not None and published.published is False


def test_bad_page_cursor_is_a_typed_error(store: Store) -> None:
    from hfcelery.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError):
        store.jobs(State.ENQUEUED, after="not-a-cursor")


def test_only_the_newest_send_of_a_celery_task_starts_it(store: Store) -> None:
    """A re-send (same id, new stamp) runs; a redelivery of the older message does not."""
    from dataclasses import replace

    store.register_server(server("s1"))
    first = replace(new_job(), tracked=True, sent_stamp="a" * 32)
    assert store.record_celery_send(first)
    assert claim(store, first.id, stamp="b" * 32) is None  # not this send's message
    mine = claim(store, first.id, stamp="a" * 32)
    assert mine is not None
    kw = {"server_id": "s1", "reason": None, "data": {}, "claim": mine.number}
    assert store.finish(first.id, state=State.SUCCEEDED, **kw)  # type: ignore[arg-type]
    assert claim(store, first.id, stamp="a" * 32) is None  # the broker's redelivery: skipped
    again = replace(first, sent_stamp="b" * 32, args_json='["again"]')
    assert not store.record_celery_send(again)  # known id: sent again, not new
    assert claim(store, first.id, stamp="a" * 32) is None  # the old message stays stale
    assert claim(store, first.id, stamp="b" * 32) is not None
    details = store.job(first.id)
    assert details is not None and details.args == ["again"]
    assert states_of(store, first.id) == [
        State.ENQUEUED, State.PROCESSING, State.SUCCEEDED, State.ENQUEUED, State.PROCESSING
    ]  # fmt: skip


# -- the worker path's own connections (PostgreSQL) ---------------------------------------------


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    s = Store(postgres_url)
    truncate(s)
    yield s
    truncate(s)
    s.dispose()


def _fast_backends(store: Store) -> list[int]:
    """The server pids of the worker path's connections this process opened."""
    fast = store._fast
    assert fast is not None
    return [conn.info.backend_pid for pid, conn in fast._opened if pid == os.getpid()]


def test_the_worker_paths_connection_is_replaced_when_the_server_dropped_it(
    pg_store: Store,
) -> None:
    pg_store.register_server(server("s1"))
    first, second = new_job(), new_job()
    for job in (first, second):
        pg_store.create_job(job)
    assert claim(pg_store, first.id) is not None
    [backend] = _fast_backends(pg_store)
    with pg_store.engine.begin() as conn:  # as a database restart would
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({backend})")
    # The next statement finds the connection gone, opens another and runs once more.
    assert pg_store.finish(
        first.id, server_id="s1", state=State.SUCCEEDED, reason=None, data={}, claim=1
    )
    assert claim(pg_store, second.id) is not None
    assert states_of(pg_store, first.id)[-1] is State.SUCCEEDED
    assert backend not in _fast_backends(pg_store)
    pg_store.dispose()  # closes them
    assert pg_store._fast is not None and _fast_backends(pg_store) == []


def test_the_worker_paths_connections_are_pooled_per_process(pg_store: Store) -> None:
    import threading

    from hfcelery.store.fast import MAX_IDLE_CONNECTIONS

    pg_store.register_server(server("s1"))
    jobs = [new_job() for _ in range(8)]
    for job in jobs:
        pg_store.create_job(job)
    assert claim(pg_store, jobs[0].id) is not None
    ours = _fast_backends(pg_store)
    assert len(ours) == 1  # one at a time: one connection
    # Threads writing at once open more; only a few stay open once they are done.
    start = threading.Barrier(4)

    def claim_together(job_id: str) -> None:
        start.wait()
        assert claim(pg_store, job_id) is not None

    threads = [threading.Thread(target=claim_together, args=(j.id,)) for j in jobs[1:5]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states_of(pg_store, jobs[4].id)[-1] is State.PROCESSING
    assert 1 <= len(_fast_backends(pg_store)) <= MAX_IDLE_CONNECTIONS
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a pool process: its own connection, the parent's left alone
        try:
            ok = claim(pg_store, jobs[5].id) is not None
            ok = ok and not set(_fast_backends(pg_store)) & set(ours)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 1) == b"1"
    # The parent's connections still work after the child exited.
    assert pg_store.finish(
        jobs[0].id, server_id="s1", state=State.SUCCEEDED, reason=None, data={}, claim=1
    )
    assert states_of(pg_store, jobs[5].id)[-1] is State.PROCESSING


def test_the_worker_paths_statements_read_and_refuse_as_the_engine_does(pg_store: Store) -> None:
    """A claim and a finish go straight through libpq (text parameters, typed columns): what
    they read back matches what the engine reads, the server's refusals are the same typed
    errors, a prepared statement the session lost is prepared again, and a statement whose
    values or columns that path does not know runs through psycopg instead."""
    from sqlalchemy import text

    from hfcelery.errors import StoreDataError

    pg_store.register_server(server("s1"))
    job = new_job()
    pg_store.create_job(job)
    claimed = pg_store.claim(
        job.id, server_id="s1", worker_id="w1", server_timeout=TIMEOUT, attempt=0, stamp=None
    )
    assert claimed is not None
    details = pg_store.job(job.id)
    assert details is not None
    assert claimed.created_at == details.created_at  # the same instant, in UTC
    assert claimed.created_at.utcoffset() == timedelta(0)
    assert (claimed.retry_count, claimed.number) == (0, 1)
    # The server refuses a worker id longer than its column: a data error, nothing written.
    other = new_job()
    pg_store.create_job(other)
    with pytest.raises(StoreDataError, match="too long"):
        pg_store.claim(other.id, server_id="s1", worker_id="w" * 65, server_timeout=TIMEOUT)
    assert states_of(pg_store, other.id) == [State.ENQUEUED]
    # A pooler's DISCARD ALL (or DEALLOCATE) drops the session's prepared statements.
    fast = pg_store._fast
    assert fast is not None
    for pid, conn in fast._opened:
        if pid == os.getpid():
            conn.execute("DEALLOCATE ALL")
    assert claim(pg_store, other.id) is not None  # the claim's statement, prepared again
    assert pg_store.finish(
        job.id, server_id="s1", worker_id="w1", state=State.SUCCEEDED, reason=None,
        data={"result": 6}, claim=1,
    )  # fmt: skip
    assert states_of(pg_store, job.id) == [State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]
    # Values and columns of types the text path does not handle go through psycopg.
    halved = text("SELECT CAST(:x AS float8) / 2 AS half, CAST(:y AS text) AS same")
    assert [tuple(row) for row in fast.execute(halved, {"x": 3.0, "y": "a"})] == [(1.5, "a")]
    assert [tuple(row) for row in fast.execute(halved, {"x": "5", "y": "b"})] == [(2.5, "b")]
    stamped = text("SELECT CAST(:at AS timestamptz) AS at, CAST(:n AS bigint) + 1 AS n")
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    [row] = fast.execute(stamped, {"at": moment, "n": 41})
    assert (row.at, row.n) == (moment, 42)


def test_the_enqueues_transaction_leaves_its_connection_clean(pg_store: Store) -> None:
    """A new job's insert, publish and commit run on a pooled connection: whatever happens in
    between (a publish error, the broker away, the server dropping the connection), the job
    is written or not as a whole, and the connection is back idle, not in a transaction."""
    import psycopg

    def fast_connections() -> list[psycopg.Connection[object]]:
        fast = pg_store._fast
        assert fast is not None
        return [conn for pid, conn in fast._opened if pid == os.getpid()]

    def broken(_: Dispatch, *, before_send: object = None) -> None:
        raise ValueError("bad routing")

    def broker_down(_: Dispatch, *, before_send: object = None) -> None:
        raise BrokerUnavailable("connection refused")

    sent: list[Dispatch] = []
    first = new_job()
    assert pg_store.create_job(first, sending_to(sent)) is True
    [backend] = _fast_backends(pg_store)
    rolled_back = new_job()
    with pytest.raises(ValueError, match="bad routing"):
        pg_store.create_job(rolled_back, broken)
    assert pg_store.job(rolled_back.id) is None
    kept = new_job()
    assert pg_store.create_job(kept, broker_down) is False
    assert [d.id for d in pg_store.unpublished_jobs(timedelta(0), 10)] == [kept.id]
    # One connection served all three, and it is idle between them.
    assert _fast_backends(pg_store) == [backend]
    idle = psycopg.pq.TransactionStatus.IDLE
    assert [conn.info.transaction_status for conn in fast_connections()] == [idle]
    # A data error inside the transaction: refused, nothing written, the connection idle.
    with pytest.raises(StoreDataError):
        pg_store.create_job(replace(new_job(), function="f\x00"), sending_to(sent))
    assert [conn.info.transaction_status for conn in fast_connections()] == [idle]
    # The server drops the connection (a restart): the next enqueue starts again on another.
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({backend})")
    again = new_job()
    assert pg_store.create_job(again, sending_to(sent)) is True
    assert [d.id for d in sent] == [first.id, again.id]
    assert states_of(pg_store, again.id) == [State.ENQUEUED]
    assert backend not in _fast_backends(pg_store)
    # A pooler's DISCARD ALL drops the insert's prepared statement: prepared again.
    for conn in fast_connections():
        conn.execute("DEALLOCATE ALL")
    last = new_job()
    assert pg_store.create_job(last, sending_to(sent)) is True
    assert states_of(pg_store, last.id) == [State.ENQUEUED]
    assert [conn.info.transaction_status for conn in fast_connections()] == [idle]


def test_the_worker_path_maps_refused_data_and_outages_to_store_errors(pg_store: Store) -> None:
    from hfcelery.errors import StoreDataError, StoreUnavailableError

    pg_store.register_server(server("s1"))
    with pytest.raises(StoreDataError):
        claim(pg_store, "job\x00id")  # PostgreSQL text holds no NUL
    broken = Store(pg_store.url.set(port=1))  # nothing listens there
    broken._schema_checked = True  # the schema check would fail first, on the engine
    with pytest.raises(StoreUnavailableError):
        claim(broken, str(uuid4()))
    # An enqueue with the store away: the typed error, and no message sent.
    sent: list[Dispatch] = []
    with pytest.raises(StoreUnavailableError):
        broken.create_job(new_job(), sending_to(sent))
    with pytest.raises(StoreUnavailableError):
        broken.create_jobs([new_job()], lambda dispatches, **_: sent.extend(dispatches))
    assert sent == []
    broken.dispose()


def _terminate(store: Store, backend: int) -> None:
    """End a server process as a restart would, and wait until it is gone."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({backend})")
    query = f"SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}"

    def gone() -> bool:
        # A transaction of its own each time: pg_stat_activity is read once per transaction.
        with store.engine.connect() as conn:
            return bool(conn.exec_driver_sql(query).scalar() == 0)

    wait_for(gone, timeout=10)


def test_an_enqueue_whose_connection_drops_before_its_insert_is_done_starts_again(
    pg_store: Store,
) -> None:
    """The insert goes out before the message is built. The server dropping the connection
    before the insert is done (a restart) rolls it back and nothing has been sent: the
    enqueue starts again on a new connection, for one job and one message."""
    sent: list[Dispatch] = []
    attempts: list[int] = []
    assert pg_store.create_job(new_job(), sending_to([]))  # prepares the insert: no lock then
    locker = pg_store.engine.connect()
    locker.exec_driver_sql(f"LOCK TABLE {Job.__tablename__} IN SHARE MODE")  # inserts wait

    def dropping(dispatch: Dispatch, *, before_send: Callable[[], object] | None = None) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            [backend] = _fast_backends(pg_store)  # its insert is waiting for the lock
            _terminate(pg_store, backend)
            locker.rollback()
        sending_to(sent)(dispatch, before_send=before_send)

    job = new_job()
    try:
        assert pg_store.create_job(job, dropping) is True
    finally:
        locker.close()
    assert len(attempts) == 2
    assert [d.id for d in sent] == [job.id]
    assert states_of(pg_store, job.id) == [State.ENQUEUED]


@pytest.mark.parametrize("many", [False, True], ids=["enqueue", "enqueue_many"])
def test_an_enqueue_whose_commit_is_lost_after_its_message_left_succeeds(
    pg_store: Store, caplog: pytest.LogCaptureFixture, many: bool
) -> None:
    """Once the message has left, the job will run: the COMMIT is not waited for, and one that
    fails does not fail the enqueue (or the batch; a caller trying again would send the job
    twice). The process's next read logs a warning, and the worker that takes the message
    writes the job from it."""
    sent: list[Dispatch] = []

    def sending_then_dropped(dispatch: Dispatch, *, before_send: Any = None) -> None:
        sending_to(sent)(dispatch, before_send=before_send)
        [backend] = _fast_backends(pg_store)
        _terminate(pg_store, backend)

    def many_then_dropped(dispatches: Any, *, before_flush: Any = None) -> None:
        before_flush()
        sent.extend(dispatches)
        [backend] = _fast_backends(pg_store)
        _terminate(pg_store, backend)

    job = new_job()
    with caplog.at_level("WARNING", logger="hfcelery"):
        if many:
            assert pg_store.create_jobs([job], many_then_dropped) is True
        else:
            assert pg_store.create_job(job, sending_then_dropped) is True
        assert pg_store.job(job.id) is None  # rolled back with the connection
    assert "sent 1 job(s) but could not commit them" in caplog.text
    assert [d.id for d in sent] == [job.id]
    pg_store.register_server(server("s1"))
    assert claim(pg_store, job.id, untracked=lambda: job) is not None
    assert states_of(pg_store, job.id) == [State.ENQUEUED, State.PROCESSING]


def test_an_enqueue_does_not_wait_for_its_commit_yet_every_read_sees_the_job(
    pg_store: Store, postgres_url: str
) -> None:
    """The COMMIT after a job's message has left is sent without waiting for its answer: any
    read of the process that follows (through any store, or the worker path's next statement)
    still sees the job, and a process that exits at once leaves it committed."""
    import subprocess
    import sys

    other = Store(postgres_url)  # another store of the same process
    try:
        for _ in range(20):
            job = new_job()
            assert pg_store.create_job(job, sending_to([])) is True
            assert states_of(other, job.id) == [State.ENQUEUED]
        job = new_job()
        assert pg_store.create_job(job, sending_to([])) is True
        pg_store.register_server(server("s1"))
        assert claim(pg_store, job.id) is not None  # the same connection, next statement
    finally:
        other.dispose()
    # A client that exits right after its enqueue, without closing anything.
    code = (
        "import os, sys\n"
        "from hfcelery.store import Store\n"
        "from tests.test_store import new_job, sending_to\n"
        "job = new_job()\n"
        "assert Store(sys.argv[1]).create_job(job, sending_to([]))\n"
        "print(job.id, flush=True)\n"
        "os._exit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, postgres_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert wait_for(lambda: pg_store.job(job_id), timeout=10).state is State.ENQUEUED


@pytest.fixture
def slow_commit_store() -> Iterator[Store]:
    """A store in a database of its own whose COMMITs of a new job take half a second (a
    deferred constraint trigger sleeps), so that a read can run while one is under way."""
    with new_postgres_database("hfcelery_slow_commit") as url:
        s = Store(url)
        s.migrate()
        with s.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$"
            )
            conn.exec_driver_sql(
                "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON hfcelery_jobs "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
            )
        try:
            yield s
        finally:
            s.dispose()


def _other_reader(url: Any) -> Store:
    return Store(url.render_as_string(hide_password=False))


def test_a_read_waits_for_a_commit_another_thread_is_reading(slow_commit_store: Store) -> None:
    """A thread that enqueues and then reads sees its job, even when another thread took the
    connection (whose COMMIT is still under way) from the idle ones an instant before: the
    read waits for that thread to read the COMMIT's answer."""
    store = slow_commit_store
    other = _other_reader(store.url)
    try:
        job = new_job()
        assert store.create_job(job, sending_to([])) is True
        fast = store._fast
        assert fast is not None
        _, conn = fast._idle.pop()  # as another thread's _acquire takes it
        assert conn in fast._pending

        def other_thread() -> None:
            fast._settle(conn)  # first thing, as _acquire does
            fast._release(conn)

        thread = threading.Timer(0.1, other_thread)
        thread.start()
        try:
            assert states_of(other, job.id) == [State.ENQUEUED]
        finally:
            thread.join()
        assert not fast._pending
    finally:
        other.dispose()


def test_a_connection_closed_with_its_commit_under_way_is_answered_first(
    slow_commit_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """With enough connections idle, the enqueue's own is closed when it is released: the
    COMMIT's answer is read before, so what the process reads next sees the job."""
    from hfcelery.store.fast import MAX_IDLE_CONNECTIONS

    store = slow_commit_store
    other = _other_reader(store.url)
    try:
        store.create_job(new_job(), sending_to([]))  # the fast path's first connection
        fast = store._fast
        assert fast is not None
        spare = [fast._acquire() for _ in range(MAX_IDLE_CONNECTIONS + 1)]  # idle: none left
        for conn in spare[:-1]:
            fast._release(conn)
        job = new_job()

        def fill_the_idle_ones(dispatch: Dispatch, *, before_send: Any = None) -> None:
            before_send()
            fast._release(spare[-1])  # while the enqueue holds its own

        with caplog.at_level("WARNING", logger="hfcelery"):
            assert store.create_job(job, fill_the_idle_ones) is True
            assert len(fast._idle) == MAX_IDLE_CONNECTIONS
            assert not fast._pending
            assert states_of(other, job.id) == [State.ENQUEUED]
        assert "could not commit" not in caplog.text
    finally:
        other.dispose()


def test_threads_enqueueing_at_once_each_read_their_jobs(
    pg_store: Store, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A web server's threads enqueue at once on the same store: every job is written and sent
    once, each thread's read right after its enqueue sees the job, and the connections left
    open afterwards are few."""
    from hfcelery.store.fast import MAX_IDLE_CONNECTIONS

    other = Store(postgres_url)
    sent: list[Dispatch] = []
    unseen: list[str] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(100):
                job = new_job()
                assert pg_store.create_job(job, sending_to(sent)) is True
                if other.job(job.id) is None:
                    unseen.append(job.id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        with caplog.at_level("WARNING", logger="hfcelery"):
            threads = [threading.Thread(target=client) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        other.dispose()
    assert errors == []
    assert unseen == []
    assert len(sent) == len({d.id for d in sent}) == 800
    with pg_store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 800
    fast = pg_store._fast
    assert fast is not None
    assert not fast._pending
    assert len(fast._idle) <= MAX_IDLE_CONNECTIONS
    assert "could not commit" not in caplog.text


def test_threads_writing_at_once_share_a_bounded_set_of_connections(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As many threads as connections may stay idle write at once, again and again: they
    reuse the connections they opened, none is opened and closed per write. Once
    ``MAX_CONNECTIONS_IN_USE`` are in use, another thread waits for one to be released, and
    gets a typed error after ``CONNECTION_WAIT_SECONDS``."""
    import psycopg

    from hfcelery.errors import StoreUnavailableError
    from hfcelery.store import fast as fast_module

    connects: list[object] = []
    real_connect = psycopg.connect

    def counted(*args: Any, **kwargs: Any) -> Any:
        connects.append(args)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", counted)
    threads_count = fast_module.MAX_IDLE_CONNECTIONS
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def client() -> None:
        try:
            start.wait()
            for _ in range(40):
                assert pg_store.create_job(new_job(), sending_to([])) is True
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert 1 <= len(connects) <= threads_count  # 200 writes
    fast = pg_store._fast
    assert fast is not None
    held = [fast._acquire() for _ in range(fast_module.MAX_CONNECTIONS_IN_USE)]
    try:
        monkeypatch.setattr(fast_module, "CONNECTION_WAIT_SECONDS", 0.2)
        with pytest.raises(StoreUnavailableError, match="connections of this process"):
            pg_store.create_job(new_job(), sending_to([]))
        waiter_done = threading.Event()
        monkeypatch.setattr(fast_module, "CONNECTION_WAIT_SECONDS", 20.0)

        def waiter() -> None:
            pg_store.create_job(new_job(), sending_to([]))
            waiter_done.set()

        threading.Thread(target=waiter, daemon=True).start()
        assert not waiter_done.wait(0.3)  # every connection is in use: it waits
        fast._release(held.pop())
        assert waiter_done.wait(10)  # and takes the one released
    finally:
        for conn in held:
            fast._release(conn)
    with pg_store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 201


def test_an_enqueue_blocked_longer_than_the_transaction_timeout_leaves_its_job_to_the_worker(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A publish that blocks holds the new job's transaction open only for
    ``SEND_TRANSACTION_TIMEOUT_SECONDS``: PostgreSQL ends the session. The enqueue does not
    fail (its message left), a warning says so, the job is written by the worker that takes
    the message, and the next enqueue goes out on a new connection."""
    import time

    from hfcelery.store import base

    monkeypatch.setattr(base, "SEND_TRANSACTION_TIMEOUT_SECONDS", 0.5)
    sent: list[Dispatch] = []

    def blocking(dispatch: Dispatch, *, before_send: Any = None) -> None:
        before_send()
        time.sleep(2.0)  # the publish blocks
        sent.append(dispatch)

    job = new_job()
    with caplog.at_level("WARNING", logger="hfcelery"):
        assert pg_store.create_job(job, blocking) is True
        assert pg_store.job(job.id) is None  # the transaction was ended by the server
    assert [d.id for d in sent] == [job.id]
    assert "could not commit" in caplog.text
    after = new_job()
    assert pg_store.create_job(after, sending_to(sent)) is True
    assert pg_store.job(after.id) is not None
    pg_store.register_server(server("s1"))
    assert claim(pg_store, job.id, untracked=lambda: job) is not None
    assert states_of(pg_store, job.id)[-1] is State.PROCESSING


def test_a_server_that_never_answers_makes_the_store_unavailable_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host that swallows packets, or a server that hangs: connecting gives up after the
    connect timeout with StoreUnavailableError, on the engine's path and the worker path's."""
    import socket
    import time

    from hfcelery.errors import StoreUnavailableError
    from hfcelery.store import base
    from hfcelery.store.fast import FastStatements

    monkeypatch.setattr(base, "CONNECT_TIMEOUT_SECONDS", 1)
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # the kernel completes the handshake; nobody ever answers
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{hung.getsockname()[1]}/postgres"
        store = Store(url)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.job("any")
        assert time.monotonic() - started < 8
        fast = FastStatements(store.url, store._process_engine().dialect, None, 1)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            fast._acquire()
        assert time.monotonic() - started < 8
        store.dispose()
    finally:
        hung.close()
