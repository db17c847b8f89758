"""The project's filters (Hangfire's IClientFilter, IServerFilter and IApplyStateFilter)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

import hfcelery
from hfcelery import JobFilter
from hfcelery.filters import (
    ApplyStateContext,
    CreatingContext,
    PerformedContext,
    PerformingContext,
)

#: The tenant a web request (or a job) works for.
current_tenant: ContextVar[str | None] = ContextVar("current_tenant", default=None)

#: Tenants whose jobs are refused.
SUSPENDED_TENANTS = frozenset({"suspended-inc"})

alerts = logging.getLogger("examples.filters_project.alerts")


class TenantFilter(JobFilter):
    """Every job carries the tenant it was created for, and runs as that tenant."""

    def on_creating(self, context: CreatingContext) -> None:
        tenant = current_tenant.get()
        if tenant in SUSPENDED_TENANTS:
            context.canceled = True  # the caller gets JobCreationCanceledError
            return
        context.set_parameter("tenant", tenant)

    def on_performing(self, context: PerformingContext) -> None:
        context.items["tenant_token"] = current_tenant.set(context.get_parameter("tenant"))

    def on_performed(self, context: PerformedContext) -> None:
        token = context.items.pop("tenant_token", None)
        if token is not None:
            current_tenant.reset(token)


class AlertOnFailed(JobFilter):
    """A job that ends Failed (its retries used up) pages somebody: here, a log line."""

    def on_state_applied(self, context: ApplyStateContext) -> None:
        if context.new_state is hfcelery.State.FAILED:
            alerts.error("ALERT job %s (%s) failed: %s", context.job_id, context.function,
                         context.reason)  # fmt: skip


def install() -> None:
    """Register the filters for every job of the process (idempotent)."""
    for instance in (TenantFilter(), AlertOnFailed()):
        if type(instance) not in {type(f) for f in hfcelery.global_filters}:
            hfcelery.global_filters.add(instance)
