"""What the buttons do: the management API on one job, on many, on a recurring job."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hfcelery.errors import HfceleryError, InvalidArgumentError
from hfcelery.records import JobFilter

if TYPE_CHECKING:
    from hfcelery.dashboard.core import Dashboard

JOB_ACTIONS = ("requeue", "delete", "enqueue-now")
RECURRING_ACTIONS = ("trigger", "pause", "resume", "remove")
#: Jobs handled by one request of an action on a whole filter; the page repeats the request
#: with the returned cursor, showing progress, until the cursor is None.
BULK_BATCH = 200
MAX_SELECTED = 1000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an action did: how many jobs it was asked about and how many changed."""

    action: str
    requested: int
    applied: int
    next_cursor: str | None = None
    detail: str | None = None

    def message(self) -> str:
        verb = {"requeue": "Requeued", "delete": "Deleted", "enqueue-now": "Enqueued now"}
        text = f"{verb.get(self.action, self.action)} {self.applied} of {self.requested} job(s)"
        if self.applied < self.requested:
            text += " (the others were not in a state that allows it)"
        return text


def act_on_job(dashboard: Dashboard, action: str, job_id: str) -> bool:
    """Apply ``action`` to one job; True if its state changed."""
    client = dashboard.client
    if action == "requeue":
        return client.requeue(job_id)
    if action == "delete":
        return client.delete(job_id)
    if action == "enqueue-now":
        return client.enqueue_now(job_id)
    raise InvalidArgumentError(f"unknown job action {action!r}; use one of {JOB_ACTIONS}")


def act_on_jobs(dashboard: Dashboard, action: str, job_ids: Sequence[str]) -> Outcome:
    """Apply ``action`` to the selected jobs."""
    if action not in JOB_ACTIONS:
        raise InvalidArgumentError(f"unknown job action {action!r}; use one of {JOB_ACTIONS}")
    if len(job_ids) > MAX_SELECTED:
        raise InvalidArgumentError(f"select at most {MAX_SELECTED} jobs, or act on the filter")
    unique = list(dict.fromkeys(job_ids))
    applied = sum(act_on_job(dashboard, action, job_id) for job_id in unique)
    return Outcome(action, len(unique), applied)


def act_on_filter(
    dashboard: Dashboard, action: str, where: JobFilter, *, after: str | None = None
) -> Outcome:
    """Apply ``action`` to the next batch of jobs matching ``where`` (from cursor ``after``)."""
    if action not in JOB_ACTIONS:
        raise InvalidArgumentError(f"unknown job action {action!r}; use one of {JOB_ACTIONS}")
    # Only the jobs the action can change (the store's transition of the same name).
    where = where.changeable_by(action.replace("-", "_"))
    page = dashboard.monitoring.search(where, limit=BULK_BATCH, after=after)
    applied = sum(act_on_job(dashboard, action, row.job.id) for row in page.items)
    return Outcome(action, len(page.items), applied, page.next_cursor)


def act_on_recurring(dashboard: Dashboard, action: str, recurring_id: str) -> Outcome:
    """Trigger, pause, resume or remove a recurring job."""
    manager = dashboard.recurring
    try:
        if action == "trigger":
            job_id = manager.trigger(recurring_id)
            return Outcome(action, 1, 1, detail=f"Triggered {recurring_id}: job {job_id}")
        if action == "pause":
            done = manager.pause(recurring_id)
        elif action == "resume":
            done = manager.resume(recurring_id)
        elif action == "remove":
            done = manager.remove_if_exists(recurring_id)
        else:
            raise InvalidArgumentError(
                f"unknown recurring action {action!r}; use one of {RECURRING_ACTIONS}"
            )
    except InvalidArgumentError:
        raise
    except HfceleryError as exc:
        return Outcome(action, 1, 0, detail=f"{action} {recurring_id} failed: {exc}")
    past = {"pause": "Paused", "resume": "Resumed", "remove": "Removed"}[action]
    text = f"{past} {recurring_id}" if done else f"{recurring_id} was not changed"
    return Outcome(action, 1, int(done), detail=text)
