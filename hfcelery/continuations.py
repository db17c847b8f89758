"""Continuation options, as Hangfire's ``JobContinuationOptions``."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntFlag

from hfcelery.states import State


class JobContinuationOptions(IntFlag):
    """When a continuation runs: after its parents succeeded, were deleted, or either."""

    ON_ANY_FINISHED_STATE = 0
    ONLY_ON_SUCCEEDED_STATE = 1
    ONLY_ON_DELETED_STATE = 2

    def met_by(self, parent_states: Iterable[State]) -> bool:
        """Whether parents that finished in ``parent_states`` let the continuation run."""
        return all(self._met_by(state) for state in parent_states)

    def _met_by(self, state: State) -> bool:
        if self == JobContinuationOptions.ON_ANY_FINISHED_STATE:
            return state.is_final
        if state is State.SUCCEEDED:
            return JobContinuationOptions.ONLY_ON_SUCCEEDED_STATE in self
        if state is State.DELETED:
            return JobContinuationOptions.ONLY_ON_DELETED_STATE in self
        return False


#: A continuation's stored ``pass_result``: "one" appends its parent's result, "all" a join's
#: list of results; :data:`JOIN_WITHOUT_RESULTS` marks a join that passes none (its exceptions,
#: if it passes them, still go as a list); None, a single parent's continuation without results.
PASSED_RESULTS = ("one", "all")
JOIN_WITHOUT_RESULTS = "join"
