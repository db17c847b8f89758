"""Plain functions run as jobs."""

from __future__ import annotations

import hfcelery
from examples.filters_project.filters import current_tenant


def monthly_report(month: str) -> str:
    """Runs as the tenant the job was created for."""
    return f"{month} report of {current_tenant.get()}"


@hfcelery.automatic_retry(attempts=0)
def charge_card(amount: int) -> None:
    """Always fails, and is not retried: its Failed state raises the alert."""
    raise RuntimeError(f"card declined for {amount}")
