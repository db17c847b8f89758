"""A plain Celery send's job on PostgreSQL, written in a transaction that ends with the send.

Tracking a plain ``apply_async`` used to cost two transactions through the engine: the job
written unpublished before the message left, then marked published. On PostgreSQL the job is
instead written, published, in one statement whose transaction is left open while Celery sends
the message (``JobStore.open_celery_send``), and committed without waiting once it has left:
one round trip, like a new job of hfcelery's own (``FastStatements.sent_ahead``).

A worker that receives the message before that COMMIT waits for it (``JobStore.claim``); one
whose job was never committed (the sender died in between) writes it from the message. A send
that raises leaves the job Failed, as before.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from hfcelery.states import State
from hfcelery.store.base import _state_row, utcnow
from hfcelery.store.fast import SentAhead
from hfcelery.store.statements import _ABANDON_SEND_H, _SYNCHRONOUS_COMMIT


class CelerySend:
    """A new job of a plain Celery send, written in a transaction still open: end it with
    :meth:`sent` once the message has left, or :meth:`failed` if the send raised."""

    def __init__(
        self,
        job_id: str,
        stamp: str,
        transaction: AbstractContextManager[SentAhead],
        written: SentAhead,
    ) -> None:
        self.job_id = job_id
        self.stamp = stamp
        self._transaction: AbstractContextManager[SentAhead] | None = transaction
        self._written = written

    def sent(self) -> None:
        """The message has left: COMMIT, without waiting for the answer (read before the
        connection's next use). Raises ``StoreError`` if the store is gone meanwhile; the
        worker that takes the message then writes the job from it."""
        transaction = self._end()
        self._written.sent = 1
        transaction.__exit__(None, None, None)

    def failed(self, *, reason: str, data: dict[str, Any]) -> None:
        """The send raised: the task does not run. The job is recorded Failed with ``reason``,
        unpublished, in the same transaction, committed durably (the store is its only
        record). Should that fail, nothing of the job is left: nothing would run it either."""
        transaction = self._end()
        now = utcnow()
        entry = _state_row(None, State.FAILED, reason, data, now)
        params = {
            "p_id": self.job_id,
            "p_stamp": self.stamp,
            "p_now": now,
            **{f"h_{key}": value for key, value in entry.items() if key != "job_id"},
        }
        try:
            self._written.run(_SYNCHRONOUS_COMMIT, {})
            self._written.run(_ABANDON_SEND_H, params)
        except BaseException as exc:
            if not transaction.__exit__(type(exc), exc, exc.__traceback__):
                raise
            return
        transaction.__exit__(None, None, None)  # the COMMIT, waited for

    def discard(self) -> None:
        """Roll the job back (its send ended in a way nobody told, see tracking)."""
        if self._transaction is None:
            return
        transaction = self._end()
        gone = RuntimeError("the send ended untold")
        transaction.__exit__(RuntimeError, gone, None)

    def _end(self) -> AbstractContextManager[SentAhead]:
        transaction, self._transaction = self._transaction, None
        if transaction is None:
            raise RuntimeError(f"the send of job {self.job_id} has ended already")
        return transaction
