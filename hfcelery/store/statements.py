"""The statements of the worker path, built once with bind parameters.

Bind parameter names carry a prefix: SQLAlchemy reserves the plain column names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Boolean,
    Integer,
    and_,
    bindparam,
    case,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import CTE, Select

from hfcelery.states import State
from hfcelery.store.models import (
    Job,
    JobState,
    UTCDateTime,
)

#: A returning INSERT/UPDATE/DELETE (SQLAlchemy types them apart; the store does not).
ReturningDML = UpdateBase


def _param(name: str, type_: Any) -> BindParameter[Any]:
    param: BindParameter[Any] = bindparam(name, type_=type_)
    return param


def _with_history(
    job_update: ReturningDML, reason: Callable[[CTE], ColumnElement[Any]] | None = None
) -> Select[Any]:
    """PostgreSQL: ``job_update`` and the insert of its history entries, as one statement.
    Their reason is ``h_reason``, or what ``reason`` makes of the rows written."""
    changed = job_update.cte("changed")
    history = insert(JobState).from_select(
        ["job_id", "state", "reason", "data", "created_at"],
        select(
            changed.c.id,
            _param("h_state", JobState.state.type),
            _param("h_reason", JobState.reason.type) if reason is None else reason(changed),
            _param("h_data", JobState.data.type),
            _param("h_created_at", JobState.created_at.type),
        ),
    )
    return select(changed).add_cte(history.cte("history"))


_NEW_JOB_COLUMNS = (
    "id", "function", "task_name", "args", "kwargs", "queue", "state",
    "created_at", "state_changed_at", "published", "retry_count", "display_name", "due_at",
    "awaiting_parents", "continuation_count", "tracked", "terminate", "sent_stamp",
)  # fmt: skip


_INSERT_JOB = (
    insert(Job)
    .values({name: _param(f"p_{name}", Job.__table__.c[name].type) for name in _NEW_JOB_COLUMNS})
    .returning(Job.id)
)


_ATTEMPT = _param("p_attempt", Integer())


_CLAIM = (
    update(Job)
    .where(
        Job.id == _param("p_id", Job.id.type),
        # A plain Celery task's message carries the stamp of its send: one from an older send
        # of the same id (replaced, or re-used since) is stale.
        or_(
            _param("p_stamp", Job.sent_stamp.type).is_(None),
            Job.sent_stamp.is_(None),
            Job.sent_stamp == _param("p_stamp", Job.sent_stamp.type),
        ),
        # A job Processing is never taken over by a message, even when its server's heartbeat
        # looks old: right after a store outage every heartbeat does, and a live run would be
        # doubled. A dead server's jobs are requeued (and sent at once) by the maintenance loop,
        # which judges servers dead only once the store was reachable for a whole timeout.
        or_(
            Job.state == State.ENQUEUED,
            # The message of a later attempt of a Celery self.retry(), once it is due. The job
            # was recorded Scheduled before that message left (see tracking), so a message
            # claiming a later attempt of a job still Processing, or one not due yet, is forged
            # or stale and does not start it.
            and_(
                Job.state == State.SCHEDULED,
                Job.retry_count < _ATTEMPT,
                or_(Job.due_at.is_(None), Job.due_at <= _param("p_due_by", UTCDateTime())),
            ),
        ),
    )
    .values(
        state=State.PROCESSING,
        server_id=_param("p_server", Job.server_id.type),
        worker_id=_param("p_worker", Job.worker_id.type),
        state_changed_at=_param("p_now", UTCDateTime()),
        published=True,
        due_at=None,
        terminate=False,
        retry_count=case((Job.retry_count < _ATTEMPT, _ATTEMPT), else_=Job.retry_count),
        claims=Job.claims + 1,
    )
    .returning(Job.id, Job.created_at, Job.retry_count, Job.claims)
)

#: The number of the claim a finish is for (None from the worker's main process, which does
#: not know it: a lost process or a time limit, on this server).
_CLAIM_NUMBER = _param("p_claim", Integer())


_FINISHED_VALUES = {
    "state": _param("p_state", Job.state.type),
    "server_id": None,
    "worker_id": None,
    "state_changed_at": _param("p_now", UTCDateTime()),
    "expire_at": _param("p_expire_at", UTCDateTime()),
    "due_at": _param("p_due_at", UTCDateTime()),
}


_FINISH = (
    update(Job)
    .where(
        Job.id == _param("p_id", Job.id.type),
        Job.state == State.PROCESSING,
        Job.server_id == _param("p_server", Job.server_id.type),
        or_(
            _param("p_worker", Job.worker_id.type).is_(None),
            Job.worker_id == _param("p_worker", Job.worker_id.type),
            Job.worker_id.is_(None),  # taken back by its server (Store.reclaim_running)
        ),
        or_(_CLAIM_NUMBER.is_(None), Job.claims == _CLAIM_NUMBER),
    )
    .values(_FINISHED_VALUES)
    .returning(Job.id)
)


#: The one-statement finish, for the (common) job without continuations.
_FINISH_ALONE = _FINISH.where(Job.continuation_count == 0)


#: A job still Enqueued as it was before this worker's claim: the claim itself was lost (an
#: asynchronous commit the database forgot). A requeue since the claim leaves the claim's
#: number in place, so it never matches here, whatever the clocks say.
_FINISH_LOST_CLAIM = (
    update(Job)
    .where(
        Job.id == _param("p_id", Job.id.type),
        Job.state == State.ENQUEUED,
        Job.claims + 1 == _CLAIM_NUMBER,
    )
    .values(_FINISHED_VALUES)
    .returning(Job.id)
)


_FINISH_LOST_CLAIM_ALONE = _FINISH_LOST_CLAIM.where(Job.continuation_count == 0)


_INSERT_JOB_H = _with_history(_INSERT_JOB)


#: A job whose message could not be sent: the store is its only record.
_UNPUBLISHED = update(Job).where(Job.id == _param("p_id", Job.id.type)).values(published=False)


#: Makes the transaction's commit durable (the store's connections commit asynchronously).
_SYNCHRONOUS_COMMIT = text("SET LOCAL synchronous_commit TO ON")


_CLAIM_H = _with_history(_CLAIM)


_FINISH_ALONE_H = _with_history(_FINISH_ALONE)


_FINISH_LOST_CLAIM_ALONE_H = _with_history(_FINISH_LOST_CLAIM_ALONE)


#: What a plain Celery task sent again with a known id takes from its new send; the rest of
#: the row is reset as for a new job (its creation time and counters of claims stay).
_RESENT_COLUMNS = (
    "state", "function", "task_name", "args", "kwargs", "queue", "sent_stamp",
    "state_changed_at", "due_at",
)  # fmt: skip


def _record_send() -> Select[Any]:
    """PostgreSQL: a plain Celery send's job written in one statement, new (published: its
    transaction ends once the message has left) or sent again with a known id (unpublished:
    committed before the message leaves, see ``CelerySend``), with its history entry, whose
    reason says which (``h_resent_reason``). ``inserted`` tells them apart: the row version
    an ``ON CONFLICT DO UPDATE`` writes keeps its lock in ``xmax``, a new row has none."""
    new = postgresql.insert(Job).values(
        {name: _param(f"p_{name}", Job.__table__.c[name].type) for name in _NEW_JOB_COLUMNS}
    )
    resent = {name: new.excluded[name] for name in _RESENT_COLUMNS}
    upsert = new.on_conflict_do_update(
        index_elements=[Job.id],
        set_={
            **resent,
            "published": False,
            "server_id": None,
            "worker_id": None,
            "expire_at": None,
            "terminate": False,
            "retry_count": 0,
        },
    ).returning(Job.id, literal_column("xmax = 0", Boolean).label("inserted"))

    def reason(changed: CTE) -> ColumnElement[Any]:
        return case(
            (changed.c.inserted, _param("h_reason", JobState.reason.type)),
            else_=_param("h_resent_reason", JobState.reason.type),
        )

    return _with_history(upsert, reason)


_RECORD_SEND_H = _record_send()


#: A plain Celery send that raised, inside its open transaction (``CelerySend.failed``): its
#: job Failed, unpublished, with the history entry.
_ABANDON_SEND_H = _with_history(
    update(Job)
    .where(
        Job.id == _param("p_id", Job.id.type),
        Job.state == State.ENQUEUED,
        Job.sent_stamp == _param("p_stamp", Job.sent_stamp.type),
    )
    .values(
        state=State.FAILED,
        state_changed_at=_param("p_now", UTCDateTime()),
        due_at=None,
        published=False,
    )
    .returning(Job.id)
)
