"""Continuations in the store (SQLite and PostgreSQL): release rules, joins, races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from hfcelery.continuations import JobContinuationOptions as Opt
from hfcelery.errors import JobNotFoundError
from hfcelery.records import Dispatch
from hfcelery.states import State
from hfcelery.store import Store
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


def running_parent(store: Store) -> str:
    job = new_job()
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
    results = {p: i for i, p in enumerate(parents)}
    assert details.args == [2, 3, [results[p] for p in sorted(parents)]]


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
