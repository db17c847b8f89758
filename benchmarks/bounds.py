"""What bounds hfcelery's figures: ``python -m benchmarks --bounds``.

Each variant is hfcelery with one of its store writes taken out of the measured path, or
replaced by a bare round trip, run in the same alternating rounds as plain Celery and hfcelery,
so the bench shows how much of the gap to plain Celery each write, and its round trip, accounts
for:

* ``hf-nooutcome``: the worker claims each job but does not record its outcome (the drain);
* ``hf-roundtripoutcome``: the worker claims each job and, in place of recording its outcome,
  sends a ``SELECT 1`` the outcome's way: the outcome's round trip without its write;
* ``hf-roundtrip``: as ``hf-nooutcome``, with the claim replaced by a ``SELECT 1`` sent the
  claim's way (prepared, through libpq, on the same connection): one round trip per job to
  PostgreSQL without any row work, the least a claim before each job can cost;
* ``hf-nowrites``: the worker neither claims nor records (the drain): what is left is the rest
  of hfcelery's worker code;
* ``hf-roundtripinsert``: an enqueue whose insert is replaced by a ``SELECT 1`` sent the
  insert's way (with its BEGIN, ahead of the message; the COMMIT not waited for): the protocol
  without the row;
* ``hf-noinsert``: an enqueue publishes the job's message without writing its row (the enqueue):
  what is left is the rest of hfcelery's client code.

These variants give up hfcelery's guarantees and exist only for this measurement: the patches
below are applied in the bench's own processes (``benchmarks.app``), never to hfcelery itself.
Their rounds discard the rows they leave behind, so later rounds never see them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, literal_column, select

#: Variant -> (what it leaves out, the figure it bounds).
VARIANTS = {
    "hf-roundtripoutcome": ("hfcelery with SELECT 1 for an outcome", "drain"),
    "hf-nooutcome": ("hfcelery without recording outcomes", "drain"),
    "hf-roundtrip": ("hfcelery with SELECT 1 for a claim, no outcomes", "drain"),
    "hf-nowrites": ("hfcelery without claims or outcomes", "drain"),
    "hf-roundtripinsert": ("hfcelery with SELECT 1 for the insert", "enqueue"),
    "hf-noinsert": ("hfcelery without the job's insert", "enqueue"),
}
#: What the round-trip variants send instead of the claim or the insert.
_ONE: Select[Any] = select(literal_column("1"))


def remove(variant: str) -> None:
    """Take the variant's store writes out of hfcelery, in this process and its forks."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    from hfcelery.records import Claim
    from hfcelery.store.base import _dispatch_of, utcnow
    from hfcelery.store.jobs import JobStore
    from hfcelery.worker import execution

    def nothing(*_: Any, **__: Any) -> None:
        return None

    def round_trip_claim(self: JobStore, job_id: str, **_: Any) -> Claim:
        self._fast_statements().execute(_ONE, {})
        return Claim(utcnow(), 0, 1)

    def round_trip_outcome(self: JobStore, job_id: str, **_: Any) -> bool:
        self._fast_statements().execute(_ONE, {})
        return True

    def round_trip_insert(self: JobStore, job: Any, row: Any, publish: Any, now: Any) -> bool:
        with self._fast_statements().sent_ahead(_ONE, {}) as sent:
            publish(_dispatch_of(job), before_send=sent.result)
            sent.sent = 1
        return True

    def publish_only(self: JobStore, job: Any, row: Any, publish: Any, now: Any) -> bool:
        publish(_dispatch_of(job))
        return True

    if variant in ("hf-nooutcome", "hf-roundtrip", "hf-nowrites"):
        execution.on_task_success = nothing  # looked up on each call by the worker's hooks
    if variant == "hf-roundtripoutcome":
        JobStore.finish = round_trip_outcome  # type: ignore[method-assign]
    if variant == "hf-roundtrip":
        JobStore.claim = round_trip_claim  # type: ignore[method-assign]
    if variant == "hf-nowrites":
        execution.before_start = nothing  # unclaimed, ``perform`` just calls the function
    if variant == "hf-roundtripinsert":
        JobStore._create_and_publish = round_trip_insert  # type: ignore[method-assign]
    if variant == "hf-noinsert":
        JobStore._create_and_publish = publish_only  # type: ignore[method-assign]
