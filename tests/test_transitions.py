"""The one table of state transitions (``hfcelery.states.TRANSITIONS``) against the store: each
named operation applies from exactly the states the table lists, ends in one of its targets,
and writes the job row and one history row together. On SQLite and PostgreSQL. Also: the
layers of the package import downwards only."""

from __future__ import annotations

import ast
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from hfcelery.states import TRANSITIONS, State, parse_state, sources
from hfcelery.store import Store
from hfcelery.store.models import Job
from tests.test_store import claim, new_job, register, server

Operation = Callable[[Store, str], bool]

#: Every transition a single job takes by request or through a worker's hook, as the store's
#: named operation performs it.
OPERATIONS: dict[str, Operation] = {
    "delete": lambda store, job_id: store.delete_job(job_id, reason="test"),
    "requeue": lambda store, job_id: store.requeue_job(job_id, reason="test"),
    "reschedule": lambda store, job_id: store.reschedule_job(
        job_id, datetime.now(UTC) + timedelta(hours=1), reason="test"
    ),
    "revoke": lambda store, job_id: store.revoke(job_id, reason="test", retention=None),
    "unknown_task": lambda store, job_id: store.fail_enqueued(
        job_id, reason="test", data={}, transition="unknown_task"
    ),
    "fail_unsendable": lambda store, job_id: store.fail_enqueued(
        job_id, reason="test", data={}, transition="fail_unsendable"
    ),
    "release_processing": lambda store, job_id: (
        store.release_processing(job_id, server_id="s1", reason="lost") is not None
    ),
    "finish": lambda store, job_id: store.finish(
        job_id, server_id="s1", state=State.SUCCEEDED, reason=None, data={}
    ),
    "finish_elected": lambda store, job_id: store.finish_elected(
        job_id,
        [(State.FAILED, "x", {}), (State.SCHEDULED, "again", {})],
        server_id="s1",
        worker_id=None,
        due_at=datetime.now(UTC) + timedelta(hours=1),
    ),
}


def put_in(store: Store, job_id: str, state: State) -> None:
    """Force a job into ``state``, naming the live server "s1" and its worker whatever the
    state, so that only the state decides whether an operation applies."""
    values: dict[str, object] = {"state": state, "server_id": "s1", "worker_id": "w1"}
    stmt = update(Job).where(Job.id == job_id).values(**values)
    store._run(lambda conn: conn.execute(stmt))


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_each_operation_applies_from_exactly_the_states_of_the_table(
    store: Store, name: str
) -> None:
    store.register_server(server("s1"))
    transition = TRANSITIONS[name]
    for state in State:
        job = new_job()
        store.create_job(job)
        put_in(store, job.id, state)
        before = store.job(job.id)
        assert before is not None
        applied = OPERATIONS[name](store, job.id)
        after = store.job(job.id)
        assert after is not None
        assert applied is transition.allows(state), (name, state)
        if applied:
            assert after.state in transition.targets, (name, state, after.state)
            assert after.history[-1].state is after.state  # row and history together
            assert len(after.history) > len(before.history)
        else:
            assert (after.state, len(after.history)) == (state, len(before.history))


def test_claim_and_the_scheduler_follow_the_table(store: Store) -> None:
    store.register_server(server("s1"))
    register(store, "dead", heartbeat_age=timedelta(hours=1))
    for state in State:
        job = new_job()
        store.create_job(job)
        put_in(store, job.id, state)
        if state is State.PROCESSING:  # on a dead server: not taken over all the same
            stmt = update(Job).where(Job.id == job.id).values(server_id="dead")
            store._run(lambda conn, stmt=stmt: conn.execute(stmt))
        claimed = claim(store, job.id, attempt=1) is not None
        allowed = TRANSITIONS["claim"].allows(state)
        assert claimed is allowed, state
    due = new_job(State.SCHEDULED, due_at=datetime.now(UTC) - timedelta(seconds=1))
    store.create_job(due)
    assert store.enqueue_due(limit=10, grace=timedelta(0), publish=lambda d: None) >= 1
    details = store.job(due.id)
    assert details is not None
    assert details.state in TRANSITIONS["enqueue_due"].targets
    assert details.history[-1].reason == "Triggered by DelayedJobScheduler"  # Hangfire's
    assert details.history[-1].data["queue"] == "default"  # every Enqueued names its queue


def test_the_table_names_every_state_and_reads_names_in_any_case() -> None:
    assert sources("delete") == tuple(s for s in State if s is not State.DELETED)
    reached = set().union(*(t.targets for t in TRANSITIONS.values()))
    assert reached == set(State)
    assert parse_state("fAiLeD") is State.FAILED


# -- layers ------------------------------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parent.parent / "hfcelery"
#: What the lower layers must never import, not even inside a function.
UPPER = ("hfcelery.client", "hfcelery.assembly", "hfcelery.recurring.manager")
LOWER = ("hfcelery/extension.py", "hfcelery/publishing.py", "hfcelery/filters.py",
         "hfcelery/store", "hfcelery/worker", "hfcelery/tracking.py")  # fmt: skip


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_lower_layers_never_import_the_client_or_the_assembly() -> None:
    offenders = []
    for lower in LOWER:
        target = PACKAGE.parent / lower
        for path in [target] if target.is_file() else sorted(target.rglob("*.py")):
            bad = {m for m in imports_of(path) if m.startswith(UPPER)}
            if bad:
                offenders.append((str(path.relative_to(PACKAGE.parent)), sorted(bad)))
    assert offenders == []


def test_no_import_cycles_between_modules_of_different_packages() -> None:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {
        name: {m for m in imports_of(path) if m in modules and m != name}
        for name, path in modules.items()
    }

    def package(name: str) -> str:
        return name.rsplit(".", 1)[0] if name.count(".") > 1 else name

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for nxt in graph.get(current, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted(
        (a, b)
        for a, deps in graph.items()
        for b in deps
        if package(a) != package(b) and not b.startswith(f"{a}.") and reaches(b, a)
    )
    assert cycles == []
