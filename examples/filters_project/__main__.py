"""Create jobs as two tenants would; print what became of them (a worker must run)."""

from __future__ import annotations

import json
import time

import hfcelery
from examples.filters_project import jobs
from examples.filters_project.app import app
from examples.filters_project.filters import current_tenant

#: Where these jobs end (Failed is not final: it may be retried by hand).
ENDED = (hfcelery.State.SUCCEEDED, hfcelery.State.FAILED, hfcelery.State.DELETED)


def main() -> dict[str, object]:
    client = hfcelery.BackgroundJobClient(app)
    api = hfcelery.monitoring(app)
    current_tenant.set("acme")
    report = client.enqueue(hfcelery.call(jobs.monthly_report, "2026-11"))
    charge = client.enqueue(hfcelery.call(jobs.charge_card, 100))
    current_tenant.set("suspended-inc")
    try:
        client.enqueue(hfcelery.call(jobs.monthly_report, "2026-11"))
        vetoed = "created"
    except hfcelery.errors.JobCreationCanceledError as exc:
        vetoed = f"vetoed: {exc}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = [api.job(j) for j in (report, charge)]
        if all(job.state in ENDED for job in done):
            break
        time.sleep(0.2)
    return {
        "report": [done[0].state.value, done[0].history[-1].data.get("result"), done[0].parameters],
        "charge": [done[1].state.value, done[1].history[-1].reason],
        "suspended": vetoed,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
