"""``make bench``: hfcelery next to plain Celery, on the same Redis broker, in one run.

Prints, side by side: the enqueue rate (single client thread), end-to-end throughput of
10,000 no-op jobs (enqueue while a prefork worker with 2 processes consumes, until the last is
acknowledged), and the SQL statements the store executes per job in the worker processes.
Needs Redis and PostgreSQL on 127.0.0.1 (``--redis``, ``--postgres`` to point elsewhere).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Figures:
    enqueue_per_second: float
    end_to_end_per_second: float
    statements_per_job: float | None = None
    schedule_delay_p50: float | None = None
    schedule_delay_p99: float | None = None
    continuation_latency_p50: float | None = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--enqueue-jobs", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--recovery-rounds", type=int, default=5)
    args = parser.parse_args()

    broker = redis.Redis.from_url(args.redis)
    broker.flushdb()
    with bench_database(args.postgres) as store_url:
        os.environ.update(BENCH_BROKER_URL=args.redis, BENCH_STORE_URL=store_url)
        plain = run_mode("plain", args, broker)
        hf = run_mode("hf", args, broker)
        recovery = None
        if args.recovery_rounds:
            from benchmarks.recovery import measure

            recovery = measure(args.recovery_rounds, broker)
    report(plain, hf, args)
    if recovery:
        from benchmarks.recovery import report as recovery_report

        print(
            "\nkilled worker (SIGKILL of main process and children) to the job's re-run on "
            "another worker,\nmedian / max (s), target <= 15 / <= 30: "
            + recovery_report(recovery)
            + "\n(plain Celery: when Redis's visibility timeout runs out, 1 hour by default)"
        )
    broker.flushdb()
    return 0


@contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"hfcelery_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        from hfcelery.store import Store

        store = Store(url)
        store.migrate()
        store.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_mode(mode: str, args: argparse.Namespace, broker: redis.Redis) -> Figures:
    """Measure one mode in a fresh interpreter, so the two apps never share a process."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.mode", mode, str(args.enqueue_jobs), str(args.jobs)],
        cwd=ROOT,
        env={**os.environ, "BENCH_MODE": mode},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"benchmark of {mode} failed")
    values = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)

    def optional(name: str) -> float | None:
        return float(values[name]) if name in values else None

    return Figures(
        float(values["enqueue_per_second"]),
        float(values["end_to_end_per_second"]),
        optional("statements_per_job"),
        optional("schedule_delay_p50"),
        optional("schedule_delay_p99"),
        optional("continuation_latency_p50"),
    )


def report(plain: Figures, hf: Figures, args: argparse.Namespace) -> None:
    rows: list[tuple[str, str, str, str, str]] = [
        ("figure", "plain Celery", "hfcelery (PostgreSQL)", "ratio", "target"),
        (
            f"enqueue, jobs/s ({args.enqueue_jobs} jobs)",
            f"{plain.enqueue_per_second:,.0f}",
            f"{hf.enqueue_per_second:,.0f}",
            f"{hf.enqueue_per_second / plain.enqueue_per_second:.2f}x",
            ">= 0.70x",
        ),
        (
            f"end to end, jobs/s ({args.jobs} no-op jobs)",
            f"{plain.end_to_end_per_second:,.0f}",
            f"{hf.end_to_end_per_second:,.0f}",
            f"{hf.end_to_end_per_second / plain.end_to_end_per_second:.2f}x",
            ">= 0.80x",
        ),
        (
            "SQL statements per job, worker path",
            "-",
            f"{hf.statements_per_job:.2f}" if hf.statements_per_job is not None else "?",
            "",
            "<= 4",
        ),
        (
            "delayed job, due to start, p50 / p99 (s)",
            "-",
            f"{hf.schedule_delay_p50:.3f} / {hf.schedule_delay_p99:.3f}"
            if hf.schedule_delay_p99 is not None
            else "?",
            "",
            "p99 <= 1.5",
        ),
        (
            "continuation, parent done to child start, p50 (ms)",
            "-",
            f"{hf.continuation_latency_p50 * 1000:.1f}"
            if hf.continuation_latency_p50 is not None
            else "?",
            "",
            "<= 50",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print("\nRedis broker, prefork worker with 2 processes, acks_late on both\n")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_worker(log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.app", "worker", "-P", "prefork",
        "-c", "2", "-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def temp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hfcelery-bench-"))


if __name__ == "__main__":
    sys.exit(main())
