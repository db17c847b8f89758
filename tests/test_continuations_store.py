"""Continuations in the store (SQLite and PostgreSQL): release rules, joins, races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import select

from hfcelery.continuations import JobContinuationOptions as Opt
from hfcelery.errors import JobNotFoundError
from hfcelery.records import Dispatch
from hfcelery.states import State
from hfcelery.store import Store, schema
from hfcelery.store.models import Continuation
from tests.conftest import new_postgres_database
from tests.test_store import TIMEOUT, new_job, server, states_of


@pytest.fixture
def sent(store: Store) -> Iterator[list[str]]:
    published: list[str] = []
    lock = threading.Lock()

    def publisher(d: Dispatch) -> None:
        with lock:
            published.append(d.id)

    store.publisher = publisher
    store.register_server(server("s1"))
    yield published


def running_parent(store: Store, job_id: str | None = None) -> str:
    job = new_job() if job_id is None else new_job(id=job_id)
    store.create_job(job)
    store.claim(job.id, server_id="s1", worker_id="w1", server_timeout=TIMEOUT)
    return job.id


def finish(store: Store, job_id: str, state: State, result: object = None) -> bool:
    return store.finish(job_id, server_id="s1", state=state, reason=None, data={"result": result})


def add(
    store: Store, parents: list[str], options: Opt = Opt.ONLY_ON_SUCCEEDED_STATE, **kw: object
) -> str:
    child = new_job(State.AWAITING)
    store.add_continuation(child, parents, int(options), **kw)  # type: ignore[arg-type]
    return child.id


def test_child_is_released_when_its_parent_succeeds(store: Store, sent: list[str]) -> None:
    parent = running_parent(store)
    child = add(store, [parent])
    assert states_of(store, child) == [State.AWAITING]
    assert finish(store, parent, State.SUCCEEDED)
    assert states_of(store, child) == [State.AWAITING, State.ENQUEUED]
    assert sent == [child]
    assert store.unpublished_jobs(timedelta(0), 10) == []
    details = store.job(child)
    assert details is not None and details.parent_ids == [parent]
    parent_details = store.job(parent)
    assert parent_details is not None and parent_details.continuation_ids == [child]


@pytest.mark.parametrize(
    ("options", "outcome", "expected"),
    [
        (Opt.ONLY_ON_SUCCEEDED_STATE, State.SUCCEEDED, State.ENQUEUED),
        (Opt.ONLY_ON_SUCCEEDED_STATE, State.DELETED, State.DELETED),
        (Opt.ONLY_ON_DELETED_STATE, State.SUCCEEDED, State.DELETED),
        (Opt.ONLY_ON_DELETED_STATE, State.DELETED, State.ENQUEUED),
        (Opt.ON_ANY_FINISHED_STATE, State.SUCCEEDED, State.ENQUEUED),
        (Opt.ON_ANY_FINISHED_STATE, State.DELETED, State.ENQUEUED),
        (Opt.ONLY_ON_SUCCEEDED_STATE | Opt.ONLY_ON_DELETED_STATE, State.DELETED, State.ENQUEUED),
    ],
)
def test_each_option_against_each_outcome(
    store: Store, sent: list[str], options: Opt, outcome: State, expected: State
) -> None:
    parent = running_parent(store)
    child = add(store, [parent], options)
    if outcome is State.DELETED:
        assert store.change_state(parent, State.DELETED, reason="deleted")
    else:
        assert finish(store, parent, outcome)
    details = store.job(child)
    assert details is not None and details.state is expected
    if expected is State.DELETED:
        assert details.history[-1].reason == "Continuation condition was not met"
        assert details.expire_at is not None
    assert sent == ([child] if expected is State.ENQUEUED else [])


def test_failed_parent_keeps_its_child_waiting(store: Store, sent: list[str]) -> None:
    parent = running_parent(store)
    child = add(store, [parent])
    assert finish(store, parent, State.FAILED)
    assert states_of(store, child) == [State.AWAITING]
    assert store.change_state(parent, State.ENQUEUED, reason="requeue")
    store.claim(parent, server_id="s1", worker_id="w1", server_timeout=TIMEOUT)
    assert finish(store, parent, State.SUCCEEDED)
    assert states_of(store, child) == [State.AWAITING, State.ENQUEUED]


def test_unmet_condition_cascades_down_a_chain(store: Store, sent: list[str]) -> None:
    parent = running_parent(store)
    child = add(store, [parent])
    grandchild = add(store, [child])
    other = add(store, [child], Opt.ONLY_ON_DELETED_STATE)
    assert store.change_state(parent, State.DELETED, reason="deleted")
    assert states_of(store, child) == [State.AWAITING, State.DELETED]
    assert states_of(store, grandchild) == [State.AWAITING, State.DELETED]
    assert states_of(store, other) == [State.AWAITING, State.ENQUEUED]
    assert sent == [other]


def test_finished_parent_releases_at_once(store: Store, sent: list[str]) -> None:
    parent = running_parent(store)
    finish(store, parent, State.SUCCEEDED)
    child = add(store, [parent])
    assert states_of(store, child) == [State.AWAITING, State.ENQUEUED]
    assert sent == [child]
    details = store.job(child)
    assert details is not None
    assert details.history[-1].reason == "Its parents had already finished"


def test_missing_parent_writes_nothing(store: Store, sent: list[str]) -> None:
    parent = running_parent(store)
    before = store.state_counts()
    with pytest.raises(JobNotFoundError) as info:
        add(store, [parent, "no-such-job"])
    assert info.value.job_id == "no-such-job"
    assert store.state_counts() == before
    details = store.job(parent)
    assert details is not None and details.continuation_ids == []
    assert finish(store, parent, State.SUCCEEDED)  # still on the one-statement path


def test_join_waits_for_every_parent(store: Store, sent: list[str]) -> None:
    parents = [running_parent(store) for _ in range(3)]
    child = add(store, parents, pass_result="all")
    for i, parent in enumerate(parents[:2]):
        finish(store, parent, State.SUCCEEDED, result=i)
        assert states_of(store, child) == [State.AWAITING]
    finish(store, parents[2], State.SUCCEEDED, result=2)
    details = store.job(child)
    assert details is not None and details.state is State.ENQUEUED
    assert details.args == [2, 3, [0, 1, 2]]  # in the order the parents were given


def parents_in_reverse_id_order(store: Store) -> list[str]:
    """Three running parents, in the reverse of their ids' order."""
    tag = uuid4().hex[:8]
    parents = [running_parent(store, f"{letter}-{tag}") for letter in "zma"]
    assert parents == sorted(parents, reverse=True)
    return parents


def delete_with_exception(store: Store, job_id: str, message: str) -> None:
    assert store.finish(
        job_id,
        server_id="s1",
        state=State.DELETED,
        reason="Exceeded the maximum number of retry attempts.",
        data={"exception_type": "builtins.LookupError", "exception_message": message},
    )


LOOKUP_ERROR = {"type": "builtins.LookupError", "message": "first failed"}


@pytest.mark.parametrize("finished_before", [False, True], ids=["released", "at-once"])
def test_join_passes_results_and_exceptions_in_the_order_given(
    store: Store, sent: list[str], finished_before: bool
) -> None:
    """Not in the order of the parents' ids: a parent given twice counts once, at its first
    place. Released by the last parent's finish, or at once when all had finished."""
    first, second, third = parents_in_reverse_id_order(store)

    def finish_parents() -> None:
        finish(store, third, State.SUCCEEDED, result="third")
        delete_with_exception(store, first, "first failed")
        finish(store, second, State.SUCCEEDED, result="second")

    if finished_before:
        finish_parents()
    child = add(
        store,
        [first, second, third, first],
        Opt.ON_ANY_FINISHED_STATE,
        pass_result="all",
        pass_exception=True,
    )
    if not finished_before:
        assert states_of(store, child) == [State.AWAITING]
        finish_parents()
    details = store.job(child)
    assert details is not None and details.state is State.ENQUEUED
    assert details.args == [
        2, 3, [None, "second", "third"], [LOOKUP_ERROR, None, None]
    ]  # fmt: skip
    assert list(details.history[-1].data["parents"]) == [first, second, third]
    assert details.parent_ids == [first, second, third]  # monitoring and the pages: the same


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_join_written_before_positions_were_kept_passes_results_in_id_order(
    tmp_path: Path, dialect: str
) -> None:
    """Migration 0013: rows written at 0012 (no position) get position 0 and so keep the order
    of their parents' ids, as before; the downgrade and upgrade keep the rows."""
    url_context = (
        new_postgres_database("hfcelery_positions")
        if dialect == "postgresql"
        else nullcontext(f"sqlite:///{tmp_path / 'store.db'}")
    )
    with url_context as url:
        store = Store(url)
        store.migrate()
        store.register_server(server("s1"))
        parents = parents_in_reverse_id_order(store)
        child = add(store, parents, pass_result="all")
        store.dispose()
        schema.downgrade(store.engine, "0012_filters")
        schema.upgrade(store.engine, "head")
        store.dispose()

        store = Store(url)
        with store.engine.connect() as conn:
            positions = conn.execute(
                select(Continuation.position).where(Continuation.child_id == child)
            ).scalars()
            assert list(positions) == [0, 0, 0]
        for i, parent in enumerate(parents):
            finish(store, parent, State.SUCCEEDED, result=i)
        details = store.job(child)
        assert details is not None and details.state is State.ENQUEUED
        assert details.args == [2, 3, [2, 1, 0]]  # the parents' ids' order
        store.dispose()


def test_join_with_a_deleted_parent_is_not_met(store: Store, sent: list[str]) -> None:
    parents = [running_parent(store) for _ in range(2)]
    child = add(store, parents)
    store.change_state(parents[0], State.DELETED, reason="x")
    finish(store, parents[1], State.SUCCEEDED)
    assert states_of(store, child) == [State.AWAITING, State.DELETED]


def test_pass_result_of_one_parent(store: Store, sent: list[str]) -> None:
    parent = running_parent(store)
    child = add(store, [parent], pass_result="one")
    finish(store, parent, State.SUCCEEDED, result={"rows": 7})
    details = store.job(child)
    assert details is not None and details.args == [2, 3, {"rows": 7}]


def test_adding_while_the_parent_finishes_releases_exactly_once(
    store: Store, sent: list[str]
) -> None:
    children: list[str] = []
    for _ in range(25):
        parent = running_parent(store)
        barrier = threading.Barrier(2)
        child = new_job(State.AWAITING)
        children.append(child.id)

        def finisher(parent: str = parent, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            finish(store, parent, State.SUCCEEDED)

        def adder(
            parent: str = parent, child: object = child, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            store.add_continuation(child, [parent], int(Opt.ONLY_ON_SUCCEEDED_STATE))  # type: ignore[arg-type]

        threads = [threading.Thread(target=finisher), threading.Thread(target=adder)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for child_id in children:
        assert states_of(store, child_id).count(State.ENQUEUED) == 1, child_id
    assert sorted(sent) == sorted(children)


def test_a_parent_counts_once_even_when_it_finishes_again(store: Store, sent: list[str]) -> None:
    """A join parent that succeeds, is requeued or deleted and finishes again must not count
    twice and release (or delete) the child while the other parent still runs."""
    first, second = running_parent(store), running_parent(store)
    child = add(store, [first, second])
    assert finish(store, first, State.SUCCEEDED)
    assert store.change_state(first, State.DELETED, reason="deleted after success")
    assert states_of(store, child) == [State.AWAITING]
    assert finish(store, second, State.SUCCEEDED)
    details = store.job(child)
    assert details is not None and details.state is State.DELETED  # the first is now Deleted


def test_failed_parent_with_continuations_is_not_trimmed(store: Store, sent: list[str]) -> None:
    parent = running_parent(store)
    child = add(store, [parent])
    finish(store, parent, State.FAILED)
    assert store.trim_failed(older_than=timedelta(0), keep=0, limit=10) == 0
    assert states_of(store, child) == [State.AWAITING]
