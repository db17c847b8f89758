"""What the pages read from the store: filtered lists, counters rolled up from history,
progress and log lines. Each test on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hfcelery.errors import InvalidArgumentError
from hfcelery.monitoring import Monitoring
from hfcelery.records import JobFilter
from hfcelery.states import State
from hfcelery.store import Store, utcnow
from hfcelery.store.stats import MAX_LOG_LINE_CHARS, MAX_LOG_LINES
from tests.test_store import new_job

NOW = timedelta(0)


def fail(store: Store, job_id: str, message: str) -> None:
    data = {"exception_type": "ValueError", "exception_message": message}
    assert store.change_state(job_id, State.FAILED, reason="boom", data=data)


@pytest.mark.parametrize(
    ("text", "stored"),
    [("Grüße", "Grüße"), ("日本", "日本"), ("😀", "😀"), ('say "hi"', 'SAY "Hi"'),
     ("back\\slash", "BACK\\slash")],
)  # fmt: skip
def test_text_search_finds_what_the_arguments_hold_as_typed(
    store: Store, text: str, stored: str
) -> None:
    """Arguments are stored as the messages' JSON writes them (beyond ASCII escaped, quotes
    and backslashes too); a search finds the text as a user types it (ASCII letters in any
    case)."""
    from hfcelery.jsonutil import to_json

    holder = new_job(args_json=to_json([f"a {text} b"]), kwargs_json=to_json({"k": "plain"}))
    in_kwargs = new_job(args_json="[]", kwargs_json=to_json({"note": stored}))
    other = new_job(args_json=to_json(["nothing to see"]))
    for job in (holder, in_kwargs, other):
        store.create_job(job)
    found = {r.job.id for r in Monitoring(store).search(JobFilter(text=text), limit=10).items}
    assert found == {holder.id, in_kwargs.id}
    assert Monitoring(store).count(JobFilter(text=text)) == 2


def test_scheduled_jobs_are_listed_by_due_time_the_soonest_first(store: Store) -> None:
    """As Hangfire's Scheduled page, whatever order they were scheduled in; paged the same."""
    now = utcnow()
    due = [now + timedelta(days=2), now + timedelta(minutes=9), now + timedelta(hours=4)]
    jobs = [new_job(State.SCHEDULED, due_at=when) for when in due]
    for job in jobs:
        store.create_job(job)
    expected = [jobs[1].id, jobs[2].id, jobs[0].id]
    api = Monitoring(store)
    where = JobFilter(state=State.SCHEDULED)
    assert [r.job.id for r in api.search(where, limit=10).items] == expected
    paged, after = [], None
    while True:
        page = api.search(where, limit=1, after=after)
        paged += [r.job.id for r in page.items]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert paged == expected


def test_search_filters_and_pages_with_the_current_state_data(store: Store) -> None:
    jobs = [new_job(queue="a" if i % 2 else "b", args_json=f'["item-{i}"]') for i in range(7)]
    for job in jobs:
        store.create_job(job)
    fail(store, jobs[0].id, "<b>bad</b>")
    api = Monitoring(store)

    failed = api.search(JobFilter(state=State.FAILED))
    assert [r.job.id for r in failed.items] == [jobs[0].id]
    assert failed.items[0].data["exception_message"] == "<b>bad</b>"
    assert {r.job.id for r in api.search(JobFilter(queue="a"), limit=50).items} == {
        j.id for j in jobs if j.queue == "a"
    }
    assert [r.job.id for r in api.search(JobFilter(text="ITEM-3")).items] == [jobs[3].id]
    assert api.search(JobFilter(text="100%")).items == []  # LIKE wildcards are literal
    assert len(api.search(JobFilter(function="tests.jobs:*"), limit=50).items) == 7
    assert api.search(JobFilter(function="tests.")).items == []
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert api.search(JobFilter(since=later)).items == []
    assert api.count(JobFilter(state=State.ENQUEUED)) == 6
    assert api.queues() == {"a": 3, "b": 3}

    seen: list[str] = []
    after = None
    while True:
        page = api.search(JobFilter(), limit=3, after=after)
        seen += [r.job.id for r in page.items]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert sorted(seen) == sorted(j.id for j in jobs)
    with pytest.raises(InvalidArgumentError):
        api.search(JobFilter(), limit=0)


def test_statistics_are_rolled_up_once_from_history(store: Store) -> None:
    api = Monitoring(store)
    jobs = [new_job() for _ in range(3)]
    for job in jobs:
        store.create_job(job)
    fail(store, jobs[0].id, "x")
    assert store.change_state(jobs[1].id, State.DELETED, reason="by test", retention=timedelta(0))
    # Not rolled up yet: the totals still count it, the hourly history not.
    assert api.statistics() == {"succeeded": 0, "failed": 1, "deleted": 1}
    assert store.roll_up_statistics(limit=2, grace=NOW) == 2
    while store.roll_up_statistics(limit=2, grace=NOW):
        pass
    assert store.roll_up_statistics(grace=NOW) == 0
    assert api.statistics() == {"succeeded": 0, "failed": 1, "deleted": 1}
    hours = api.hourly_statistics(24)
    assert len(hours) == 24
    assert hours[-1][1] == {"failed": 1, "deleted": 1}
    # Cleanup deleting the jobs does not lower the counters.
    fail(store, jobs[2].id, "y")
    assert store.roll_up_statistics() == 0  # too young: an older entry may not be visible yet
    store.roll_up_statistics(grace=NOW)
    assert store.delete_expired(limit=100) == 1
    assert store.job(jobs[1].id) is None
    assert api.statistics() == {"succeeded": 0, "failed": 2, "deleted": 1}
    assert api.daily_statistics(7)[-1][1]["failed"] == 2


def test_a_failure_that_a_retry_moved_on_from_is_not_counted_as_failed(store: Store) -> None:
    """As Hangfire's statistics: automatic retry elects Scheduled instead of Failed, so an
    attempt it retries counts as no failure (its Failed entry stays in the history); the
    attempt that fails for good counts once. Rolled up or not."""
    from tests.test_store import claim, server

    api = Monitoring(store)
    store.register_server(server("s1"))
    job = new_job()
    store.create_job(job)
    for attempt in range(2):
        taken = claim(store, job.id)
        assert taken is not None
        assert store.retry(
            job.id, server_id="s1", worker_id=None, due_at=utcnow() - timedelta(seconds=1),
            failed_reason="boom", failed_data={"exception_type": "ValueError"},
            reason=f"Retry attempt {attempt + 1} of 2: boom", claim=taken.number,
            publish=lambda _: None,  # due at once: Enqueued again
        )  # fmt: skip
    taken = claim(store, job.id)
    assert taken is not None
    assert store.finish(
        job.id, server_id="s1", state=State.FAILED, reason="boom", data={}, claim=taken.number
    )
    details = store.job(job.id)
    assert details is not None
    assert [h.state for h in details.history].count(State.FAILED) == 3  # every attempt shown
    assert api.statistics()["failed"] == 1  # not rolled up yet
    while store.roll_up_statistics(grace=NOW):
        pass
    assert api.statistics()["failed"] == 1
    assert api.hourly_statistics(1)[-1][1].get("failed") == 1


def test_progress_and_log_are_bounded_and_removed_with_the_job(store: Store) -> None:
    job = new_job()
    store.create_job(job)
    store.record_progress(job.id, fraction=0.25)
    for i in range(MAX_LOG_LINES + 5):
        store.record_progress(job.id, line=f"line {i}" + "x" * MAX_LOG_LINE_CHARS)
    progress = store.job_progress(job.id)
    assert progress is not None and progress.fraction == 0.25
    assert len(progress.log) == MAX_LOG_LINES
    assert progress.log[-1].startswith(f"line {MAX_LOG_LINES + 4}")
    assert all(len(line) == MAX_LOG_LINE_CHARS for line in progress.log)
    assert store.delete_orphan_progress() == 0
    assert store.change_state(job.id, State.DELETED, reason="t", retention=timedelta(0))
    store.delete_expired(limit=10)
    assert store.delete_orphan_progress() == 1
    assert store.job_progress(job.id) is None


def test_progress_and_log_outside_a_job_are_refused() -> None:
    import hfcelery

    with pytest.raises(InvalidArgumentError):
        hfcelery.log("nowhere")
    with pytest.raises(InvalidArgumentError):
        hfcelery.progress(1.5)


def test_filters_from_query_fields() -> None:
    from hfcelery.dashboard.api import parse_filter

    where = parse_filter(
        {"state": ["failed"], "queue": [""], "retries": ["True"], "since": ["2026-01-02T03:04"]}
    )
    assert where.state == State.FAILED and where.queue is None and where.retries
    assert where.since == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    with pytest.raises(InvalidArgumentError):
        parse_filter({"since": ["yesterday"]})
    with pytest.raises(InvalidArgumentError):
        parse_filter({"state": ["Finished"]})
