"""Job states, as Hangfire names them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from hfcelery.errors import InvalidArgumentError


class State(StrEnum):
    """The state of a job. Each change appends a row to the job's state history."""

    ENQUEUED = "Enqueued"
    SCHEDULED = "Scheduled"
    AWAITING = "Awaiting"
    PROCESSING = "Processing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETED = "Deleted"

    @property
    def is_final(self) -> bool:
        """Succeeded and Deleted are final: they expire and release continuations."""
        return self in (State.SUCCEEDED, State.DELETED)


ALL_STATES: tuple[State, ...] = tuple(State)


_STATES_BY_NAME = {s.value.lower(): s for s in State}


def parse_state(state: State | str) -> State:
    """A :class:`State` from itself or its name in any case ("failed", "FAILED");
    raises InvalidArgumentError."""
    if isinstance(state, State):
        return state
    found = _STATES_BY_NAME.get(state.lower()) if isinstance(state, str) else None
    if found is None:
        names = ", ".join(s.value for s in State)
        raise InvalidArgumentError(f"unknown state {state!r:.80}: use one of {names}")
    return found


@dataclass(frozen=True, slots=True)
class Transition:
    """One named way a job changes state: the states it may leave from and those it may enter."""

    name: str
    #: The states a job may be in for the change to apply (empty: the job is new).
    sources: frozenset[State]
    #: The states it may end in.
    targets: frozenset[State]
    #: Who makes the change.
    by: str

    def allows(self, state: State) -> bool:
        return state in self.sources


def _t(name: str, sources: Iterable[State], targets: Iterable[State], by: str) -> Transition:
    return Transition(name, frozenset(sources), frozenset(targets), by)


_ALL = frozenset(State)
S = State

#: Every change of a job's state, by name: the one table of which states each may leave from.
#: The store has one operation per row, and checks the sources in the same compare-and-set that
#: writes the change and its history (tests/test_transitions.py checks each against the store).
TRANSITIONS: Mapping[str, Transition] = {
    t.name: t
    for t in (
        _t("create", (), (S.ENQUEUED, S.SCHEDULED), "client"),
        _t("add_continuation", (), (S.AWAITING, S.ENQUEUED, S.DELETED), "client"),
        _t(
            "record_celery_send",
            _ALL,
            (S.ENQUEUED,),
            "a plain Celery send (new, or the id re-sent)",
        ),
        _t("recurring_fire", (), (S.ENQUEUED,), "beat, once per occurrence"),
        # Scheduled for an earlier attempt once due (a Celery self.retry()'s message) is claimed
        # too: the statement checks that condition. Processing never is (see statements).
        _t("claim", (S.ENQUEUED, S.SCHEDULED), (S.PROCESSING,), "worker"),
        _t("finish", (S.PROCESSING,), (S.SUCCEEDED, S.FAILED, S.DELETED, S.SCHEDULED), "worker"),
        _t("finish_elected", (S.PROCESSING,), _ALL - {S.PROCESSING, S.AWAITING}, "worker"),
        _t("retry", (S.PROCESSING,), (S.SCHEDULED, S.ENQUEUED), "worker (automatic retry)"),
        _t("release_processing", (S.PROCESSING,), (S.ENQUEUED, S.FAILED), "worker (lost process)"),
        _t("requeue_orphans", (S.PROCESSING,), (S.ENQUEUED,), "maintenance (dead server)"),
        _t("enqueue_due", (S.SCHEDULED,), (S.ENQUEUED,), "scheduler"),
        _t("release_continuation", (S.AWAITING,), (S.ENQUEUED, S.SCHEDULED, S.DELETED), "store"),
        _t("delete", _ALL - {S.DELETED}, (S.DELETED,), "request"),
        # From Enqueued too, as Hangfire's: it sends the message again (one the broker lost);
        # were the first still queued, the claim of the second skips it.
        _t("requeue", _ALL, (S.ENQUEUED,), "request"),
        _t("enqueue_now", (S.SCHEDULED,), (S.ENQUEUED,), "request"),
        _t("reschedule", _ALL, (S.SCHEDULED,), "request"),
        _t("revoke", (S.ENQUEUED, S.PROCESSING), (S.DELETED,), "Celery revoke"),
        _t("unknown_task", (S.ENQUEUED,), (S.FAILED,), "worker (task not registered)"),
        _t("fail_unsendable", (S.ENQUEUED,), (S.FAILED,), "maintenance (message cannot be sent)"),
        _t("abandon_celery_send", (S.ENQUEUED,), (S.FAILED,), "client (Celery send failed)"),
    )
}


def sources(name: str) -> tuple[State, ...]:
    """The states transition ``name`` may leave from, in the order of :class:`State`."""
    allowed = TRANSITIONS[name].sources
    return tuple(s for s in State if s in allowed)
