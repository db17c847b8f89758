"""Job states, as Hangfire names them."""

from __future__ import annotations

from enum import StrEnum


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
