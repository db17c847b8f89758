"""What bounds hfcelery's figures: ``python -m benchmarks --bounds``.

Each variant is hfcelery with one of its store writes taken out of the measured path, run in
the same alternating rounds as plain Celery and hfcelery, so the bench shows how much of the gap
to plain Celery each write accounts for:

* ``hf-nooutcome``: the worker claims each job but does not record its outcome (the drain);
* ``hf-nowrites``: the worker neither claims nor records (the drain): what is left is the rest
  of hfcelery's worker code;
* ``hf-noinsert``: an enqueue publishes the job's message without writing its row (the enqueue):
  what is left is the rest of hfcelery's client code.

These variants give up hfcelery's guarantees and exist only for this measurement: the patches
below are applied in the bench's own processes (``benchmarks.app``), never to hfcelery itself.
Their rounds discard the rows they leave behind, so later rounds never see them.
"""

from __future__ import annotations

from typing import Any

#: Variant -> (what it leaves out, the figure it bounds).
VARIANTS = {
    "hf-nooutcome": ("hfcelery without recording outcomes", "drain"),
    "hf-nowrites": ("hfcelery without claims or outcomes", "drain"),
    "hf-noinsert": ("hfcelery without the job's insert", "enqueue"),
}


def remove(variant: str) -> None:
    """Take the variant's store writes out of hfcelery, in this process and its forks."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    from hfcelery.store.base import _dispatch_of
    from hfcelery.store.jobs import JobStore
    from hfcelery.worker import execution

    def nothing(*_: Any, **__: Any) -> None:
        return None

    if variant in ("hf-nooutcome", "hf-nowrites"):
        execution.on_task_success = nothing  # looked up on each call by the worker's hooks
    if variant == "hf-nowrites":
        execution.before_start = nothing  # unclaimed, ``perform`` just calls the function
    if variant == "hf-noinsert":

        def publish_only(self: JobStore, job: Any, row: Any, publish: Any, now: Any) -> bool:
            publish(_dispatch_of(job))
            return True

        JobStore._create_and_publish = publish_only  # type: ignore[method-assign]
