"""Recovery after a killed worker: the time from SIGKILL of a whole worker (main process and
children, as when its machine dies) to the re-run of the job it was running, on another worker.

Two hfcelery workers with the default settings (heartbeat 2 s, server timeout 10 s) share the
store; each round starts a long job, kills the worker running it, and waits for the job to
start again. Plain Celery has no such recovery: the killed worker's message comes back when
Redis's visibility timeout (1 hour by default) runs out.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis

from benchmarks.__main__ import ROOT, temp_dir, wait_until


def start_worker(name: str, logs: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.app", "worker", "-P", "prefork",
        "-c", "2", "-l", "warning", "-n", f"{name}@bench",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "BENCH_MODE": "hf"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def measure(rounds: int, broker: redis.Redis) -> list[float]:
    """Seconds from the kill to the job's next start, one figure per round."""
    os.environ["BENCH_MODE"] = "hf"
    from benchmarks.app import app, mark_start
    from hfcelery import BackgroundJobClient, call, monitoring

    client = BackgroundJobClient(app)
    api = monitoring(app)
    logs = temp_dir()
    workers = {f"w{i}": start_worker(f"w{i}", logs) for i in range(2)}
    wait_until(lambda: len(api.servers()) == 2, 60, "two workers to register")
    figures: list[float] = []
    try:
        for round_number in range(rounds):
            key = f"bench:recovery:{uuid.uuid4().hex}"
            job_id = client.enqueue(call(mark_start, key, 120))
            wait_until(lambda key=key: broker.llen(key) == 1, 60, "the job to start")
            job = api.find_job(job_id)
            assert job is not None and job.server_id is not None
            name = job.server_id.split("@", 1)[0]
            killed_at = time.time()
            os.killpg(workers[name].pid, signal.SIGKILL)
            workers.pop(name).wait()
            wait_until(
                lambda key=key: broker.llen(key) == 2, 120, "the killed worker's job to re-run"
            )
            figures.append(float(broker.lindex(key, 1) or 0) - killed_at)
            client.delete(job_id, terminate=True)
            replacement = f"{name}r{round_number}"
            workers[replacement] = start_worker(replacement, logs)
            wait_until(lambda: len(api.servers()) == 2, 60, "the replacement worker")
    finally:
        for process in workers.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
    return figures


def report(figures: list[float]) -> str:
    return (
        f"{statistics.median(figures):.1f} / {max(figures):.1f}"
        f"  (rounds: {', '.join(f'{f:.1f}' for f in figures)})"
    )


if __name__ == "__main__":
    url = os.environ.setdefault("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
    print(report(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5, redis.Redis.from_url(url))))
