"""``make bench``: hfcelery next to plain Celery and Celery's database result backend.

Every figure is measured in alternating rounds (plain Celery, hfcelery, Celery with its database
result backend; again; ``--rounds``, 3 by default), each mode in a fresh interpreter with fresh
workers, on the same Redis broker (database 13) and a new PostgreSQL database. The machine's
speed drifts (up to 2x), so each comparison is the median of the per-round ratios, with their
range (min-max); the value shown per mode is the median of its rounds.

Figures (no-op jobs; prefork worker with 2 processes, acks_late, prefetch 1):

* enqueue: jobs/s of a single client thread (``--enqueue-jobs``, 3,000), no worker consuming;
  and the same for a plain Celery task's ``apply_async``, which hfcelery tracks as a job (what
  an existing project's sends cost with hfcelery loaded);
* 1,000 jobs at once: hfcelery's ``BackgroundJob.enqueue_many`` against plain Celery's loop of
  ``apply_async`` (``--batch-jobs``), when hfcelery has ``enqueue_many``;
* drain: ``--drain-jobs`` (2,000) jobs queued first, then the worker is told to consume them
  (``add_consumer``, with ``limit``: a ``reply=True`` broadcast otherwise waits its whole
  timeout); from the first message the worker receives (it notes the time: the Redis transport
  reads an added queue only once its pending 1 s BRPOP returns) until the last is acknowledged.
  With it, the CPU per job (psutil) of the worker, split between its main process (which
  receives each message, hands it to a pool process and acknowledges it: plain Celery's drain
  is bound by it) and its pool processes, of PostgreSQL and of Redis, and how many of the
  machine's cores were busy;
* end to end: ``--jobs`` (2,000) jobs enqueued while the worker consumes, until the last is
  acknowledged;
* latency: ``--latency-samples`` (200) single jobs sent one at a time to the idle worker, from
  the enqueue call to the job's end (hfcelery: its Succeeded state stored), p50 and p99;
* SQL statements and committed transactions per job of the worker processes (hfcelery and
  Celery's database backend; :mod:`benchmarks.sqlcount`, which
  ``tests/test_statement_count.py`` holds to today's figure);
* hfcelery only, once: the delay of delayed jobs, the latency of continuations, and the
  recovery of a job whose worker was killed (``--recovery-rounds``, 5).

``--scale`` adds the scaling run (opt-in, about 10 more minutes): 1, 2 and 4 workers of 2
processes (``--scale-workers``) each drain 20,000 queued jobs (``--scale-jobs``), then take jobs
sent at half the drain rate for 10 s (latency under load, p50/p99); hfcelery, and plain Celery
for reference (``--scale-modes``). It prints the CPU of the workers, PostgreSQL and Redis, and
names the resource that saturates first. ``make bench BENCH_ARGS=--scale`` runs everything;
``make bench BENCH_ARGS="--scale --rounds 0 --recovery-rounds 0"`` only the scaling run.

``--bounds`` adds, to each round, the variants of :mod:`benchmarks.bounds`: hfcelery with its
outcome's write, its claim, or a new job's insert taken out or replaced by a bare ``SELECT 1``
round trip (the drain; the enqueue). They show how much of the gap to plain Celery each store
write, and each write's round trip, accounts for.

Needs Redis and PostgreSQL on 127.0.0.1 (``--redis``, ``--postgres`` to point elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.bounds import VARIANTS

ROOT = Path(__file__).resolve().parent.parent

Result = dict[str, Any]
MODES = ("plain", "hf", "celerydb")
MODE_NAMES = {
    "plain": "plain Celery",
    "hf": "hfcelery",
    "celerydb": "Celery db backend",
    **{variant: name for variant, (name, _) in VARIANTS.items()},
}
#: Adding workers "helps" when the drain gets at least this much faster.
SCALING_GAIN = 1.15
SATURATED = 0.85


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each mode")
    parser.add_argument("--enqueue-jobs", type=int, default=3000)
    parser.add_argument("--batch-jobs", type=int, default=1000)
    parser.add_argument("--drain-jobs", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2000, help="end to end (0: skip)")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument(
        "--no-celery-db", action="store_true", help="skip Celery's database result backend"
    )
    parser.add_argument("--recovery-rounds", type=int, default=5)
    parser.add_argument("--scale", action="store_true", help="add the scaling run")
    parser.add_argument(
        "--bounds",
        action="store_true",
        help="add hfcelery without each store write (or with a bare round trip in its place)",
    )
    parser.add_argument("--scale-jobs", type=int, default=20_000)
    parser.add_argument("--scale-workers", default="1,2,4")
    parser.add_argument("--scale-modes", default="hf,plain")
    parser.add_argument("--scale-latency-seconds", type=float, default=10.0)
    args = parser.parse_args()
    modes = [m for m in MODES if not (m == "celerydb" and args.no_celery_db)]
    if args.bounds:
        modes += list(VARIANTS)
    # Stopped (make bench interrupted): still drop the bench database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    broker = redis.Redis.from_url(args.redis)
    broker.flushdb()
    rounds: dict[str, list[Result]] = {mode: [] for mode in modes}
    extras: Result | None = None
    recovery: list[float] | None = None
    scale: dict[str, list[Result]] = {}
    started = time.monotonic()
    with bench_database(args.postgres) as store_url:
        os.environ.update(
            BENCH_BROKER_URL=args.redis, BENCH_STORE_URL=store_url, BENCH_PG_ADMIN_URL=args.postgres
        )
        for number in range(1, args.rounds + 1):
            for mode in modes:
                note(f"round {number}/{args.rounds}: {MODE_NAMES[mode]}")
                rounds[mode].append(run_mode(mode, "round", round_options(mode, args)))
        if args.rounds:
            note("hfcelery: delayed jobs and continuations")
            extras = run_mode("hf", "extras", [])
        if args.scale:
            for count in (int(n) for n in args.scale_workers.split(",")):
                for mode in args.scale_modes.split(","):
                    note(f"scale: {count} worker(s), {MODE_NAMES[mode]}")
                    options = [
                        f"--workers={count}",
                        f"--drain-jobs={args.scale_jobs}",
                        f"--latency-seconds={args.scale_latency_seconds}",
                    ]
                    scale.setdefault(mode, []).append(run_mode(mode, "scale", options))
        # Last: a killed worker leaves its message unacknowledged in Redis.
        if args.recovery_rounds:
            note(f"hfcelery: killed-worker recovery, {args.recovery_rounds} rounds")
            from benchmarks.recovery import measure

            recovery = measure(args.recovery_rounds, broker)
    broker.flushdb()
    note(f"done in {(time.monotonic() - started) / 60:.1f} min")

    if args.rounds:
        report(rounds, extras, args)
        if args.bounds:
            report_bounds(rounds, args)
    if recovery:
        from benchmarks.recovery import report as recovery_report

        print(
            "\nkilled worker (SIGKILL of main process and children) to the job's re-run on "
            "another worker,\nmedian / max (s), target <= 15 / <= 30: "
            + recovery_report(recovery)
            + "\n(plain Celery: when Redis's visibility timeout runs out, 1 hour by default)"
        )
    if scale:
        report_scale(scale, args)
    return 0


def note(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def round_options(mode: str, args: argparse.Namespace) -> list[str]:
    if mode == "celerydb":  # the second reference: the drain only
        return [f"--drain-jobs={args.drain_jobs}"]
    if mode in VARIANTS:  # only the figure each bounds
        if VARIANTS[mode][1] == "drain":
            return [f"--drain-jobs={args.drain_jobs}"]
        return [f"--enqueue-jobs={args.enqueue_jobs}"]
    return [
        f"--enqueue-jobs={args.enqueue_jobs}",
        f"--batch-jobs={args.batch_jobs}",
        f"--drain-jobs={args.drain_jobs}",
        f"--jobs={args.jobs}",
        f"--latency-samples={args.latency_samples}",
    ]


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


def run_mode(mode: str, command: str, options: Sequence[str]) -> Result:
    """Run one command of benchmarks.mode in a fresh interpreter, so apps never share one."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.mode", command, mode, *options],
        cwd=ROOT,
        env={**os.environ, "BENCH_MODE": mode},
        stdout=subprocess.PIPE,
        text=True,
        timeout=3600,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if result.returncode != 0 or not lines:
        sys.stderr.write(result.stdout)
        raise SystemExit(f"benchmark {command} of {mode} failed")
    figures: Result = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    return figures


# -- the report ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def per_round(results: list[Result], figure: Callable[[Result], float | None]) -> list[float]:
    values = [figure(r) for r in results]
    return [v for v in values if v is not None]


def paired(
    a: list[Result], b: list[Result], figure: Callable[[Result], float | None]
) -> list[tuple[float, float]]:
    pairs = []
    for x, y in zip(a, b, strict=False):
        fx, fy = figure(x), figure(y)
        if fx is not None and fy is not None:
            pairs.append((fx, fy))
    return pairs


def ratio_cell(pairs: list[tuple[float, float]]) -> tuple[str, float | None]:
    """The median of the per-round ratios a/b, with their range."""
    ratios = [x / y for x, y in pairs if y]
    if not ratios:
        return "", None
    mid = statistics.median(ratios)
    return f"{mid:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})", mid


def difference_cell(pairs: list[tuple[float, float]]) -> tuple[str, float | None]:
    """The median of the per-round differences a-b (ms), with their range."""
    diffs = [(x - y) * 1000 for x, y in pairs]
    if not diffs:
        return "", None
    mid = statistics.median(diffs)
    return f"{mid:+.1f} ms ({min(diffs):+.1f} to {max(diffs):+.1f})", mid


def drain_usage(r: Result, key: str, per_job_of: str = "drain_jobs") -> float | None:
    usage = r.get("drain_usage")
    if not usage or usage.get(key) is None:
        return None
    return float(usage[key]) / float(r[per_job_of])


def report(
    rounds: dict[str, list[Result]], extras: Result | None, args: argparse.Namespace
) -> None:
    plain, hf, db = rounds["plain"], rounds["hf"], rounds.get("celerydb", [])
    for results in rounds.values():
        for r in results:
            r["drain_jobs"] = args.drain_jobs

    def get(key: str) -> Callable[[Result], float | None]:
        return lambda r: r.get(key)

    def latency(p: float) -> Callable[[Result], float | None]:
        return lambda r: percentile(r["latency"], p) if r.get("latency") else None

    def cpu_ms(key: str) -> Callable[[Result], float | None]:
        return lambda r: None if (v := drain_usage(r, key)) is None else v * 1000

    def pool_cpu_ms(r: Result) -> float | None:
        workers, main = drain_usage(r, "worker_cpu"), drain_usage(r, "worker_main_cpu")
        return None if workers is None or main is None else (workers - main) * 1000

    def cores_busy(r: Result) -> float | None:
        usage = r.get("drain_usage")
        if not usage or not r.get("drain_seconds"):
            return None
        return float(usage["machine_busy"]) / float(r["drain_seconds"])

    batch_available = all(r.get("batch_available", True) for r in hf)
    rows: list[Row] = [
        Row(f"enqueue, jobs/s ({args.enqueue_jobs:,} jobs, 1 client thread)",
            get("enqueue_per_second"), target=(">= 0.70x", 0.70), db=False, short="enqueue"),
        Row(f"apply_async of a plain Celery task, jobs/s ({args.enqueue_jobs:,}; hf: tracked "
            "as a job)", get("apply_async_per_second"), db=False, short="apply_async"),
        Row(f"{args.batch_jobs:,} jobs at once, jobs/s (hf: enqueue_many, plain: apply_async "
            "loop)" if batch_available else
            f"{args.batch_jobs:,} jobs at once: BackgroundJob.enqueue_many not available",
            get("batch_per_second"), target=(">= 3.00x", 3.0), db=False,
            short=f"{args.batch_jobs:,} at once"),
        Row(f"drain, jobs/s ({args.drain_jobs:,} queued no-op jobs)", get("drain_per_second"),
            target=(">= 0.80x", 0.80), short="drain"),
        Row(f"end to end, jobs/s ({args.jobs:,} jobs)", get("end_to_end_per_second"),
            target=(">= 0.80x", 0.80), db=False, short="end to end"),
        Row(f"latency p50, ms ({args.latency_samples} single jobs, enqueue to end)",
            latency(50), ms=True, target=("<= +5 ms", 5.0), db=False, short="latency p50 ms"),
        Row("latency p99, ms", latency(99), ms=True, db=False, short="latency p99 ms"),
        Row("worker commits per job (transactions)", get("commits_per_job"), digits=2,
            ratio=False),
        Row("SQL statements per job, worker processes", get("statements_per_job"), digits=2,
            target=("<= 4", 4.0), ratio=False),
        Row("worker CPU per job, ms (drain)", cpu_ms("worker_cpu"), digits=2),
        Row("  of it, its main process (receives, dispatches to the pool, acks)",
            cpu_ms("worker_main_cpu"), digits=2),
        Row("  of it, its 2 pool processes (run the jobs)", pool_cpu_ms, digits=2),
        Row("PostgreSQL CPU per job, ms (drain)", cpu_ms("db_cpu"), digits=2),
        Row("Redis CPU per job, ms (drain)", cpu_ms("broker_cpu"), digits=2),
        Row(f"machine busy during the drain, cores (of {os.cpu_count()})", cores_busy,
            digits=2),
    ]  # fmt: skip
    header = [
        "figure", "plain Celery", "hfcelery", "Celery db", "hf vs plain: median (range)",
        "hf vs Celery db", "target", "met",
    ]  # fmt: skip
    table: list[list[str]] = [header]
    for row in rows:
        table.append(row.cells(plain, hf, db))
    if extras is not None:
        table.append([
            "delayed job, due to start, p50 / p99 (s)", "-",
            f"{extras['schedule_delay_p50']:.3f} / {extras['schedule_delay_p99']:.3f}", "-", "",
            "", "p99 <= 1.5", yes(extras["schedule_delay_p99"] <= 1.5),
        ])  # fmt: skip
        table.append([
            "continuation, parent done to child start, p50 (ms)", "-",
            f"{extras['continuation_latency_p50'] * 1000:.1f}", "-", "", "", "<= 50",
            yes(extras["continuation_latency_p50"] * 1000 <= 50),
        ])  # fmt: skip
    print(
        f"\nRedis broker, prefork worker with 2 processes, acks_late, prefetch 1, no-op jobs; "
        f"{args.rounds} alternating rounds per mode.\nCelery db: Celery's database result "
        "backend (db+postgresql+psycopg, task_track_started) on the same PostgreSQL, its "
        "default synchronous commit;\nhfcelery commits asynchronously. Drain: from the "
        "worker's first message to the last acknowledgement. Latency: from the enqueue call to "
        "the job's end\n(hfcelery: its Succeeded state stored). Per mode: the median of the "
        "rounds; ratios: the median of the per-round ratios (min-max).\n"
    )
    print_table(table)
    print("\nper round, in the order run:")
    detail: list[list[str]] = [["figure", "mode", *(f"round {i + 1}" for i in range(args.rounds))]]
    for row in rows[:7]:
        for mode, results in (("plain", plain), ("hf", hf), ("celerydb", db)):
            values = [row.figure(r) for r in results]
            if any(v is not None for v in values):
                detail.append([row.short, MODE_NAMES[mode], *map(row.format, values)])
    print_table(detail)


def report_bounds(rounds: dict[str, list[Result]], args: argparse.Namespace) -> None:
    """How fast hfcelery runs without each of its store writes, beside plain Celery."""
    figures = {"drain": "drain_per_second", "enqueue": "enqueue_per_second"}
    table = [["figure", "mode", "jobs/s", "vs plain Celery: median (range)"]]
    for figure, key in figures.items():

        def value(r: Result, key: str = key) -> float | None:
            return r.get(key)

        modes = ["plain", "hf", *(v for v, (_, f) in VARIANTS.items() if f == figure)]
        for mode in modes:
            results = rounds.get(mode, [])
            values = per_round(results, value)
            median = f"{statistics.median(values):,.0f}" if values else "-"
            vs_plain = (
                "" if mode == "plain" else ratio_cell(paired(results, rounds["plain"], value))[0]
            )
            table.append([figure, MODE_NAMES[mode], median, vs_plain])
    print(
        "\nwhat bounds hfcelery (--bounds): hfcelery with a store write taken out of the "
        "measured path, or replaced by a bare\nround trip (benchmarks/bounds.py; these variants "
        "give up its guarantees), in the same alternating rounds:\n"
    )
    print_table(table)


class Row:
    """One figure of the comparison table."""

    def __init__(
        self,
        label: str,
        figure: Callable[[Result], float | None],
        *,
        digits: int = 0,
        ms: bool = False,
        target: tuple[str, float] | None = None,
        ratio: bool = True,
        db: bool = True,
        short: str = "",
    ) -> None:
        self.label, self.figure, self.digits, self.ms = label, figure, digits, ms
        self.target, self.ratio, self.db = target, ratio, db
        self.short = short or label

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.ms:
            return f"{value * 1000:.1f}"
        return f"{value:,.{self.digits}f}"

    def median(self, results: list[Result]) -> str:
        values = per_round(results, self.figure)
        return self.format(statistics.median(values)) if values else "-"

    def cells(self, plain: list[Result], hf: list[Result], db: list[Result]) -> list[str]:
        compare = difference_cell if self.ms else ratio_cell
        vs_plain, mid = compare(paired(hf, plain, self.figure)) if self.ratio else ("", None)
        vs_db, _ = ratio_cell(paired(hf, db, self.figure)) if self.ratio and self.db else ("", None)
        text, met = "", ""
        if self.target is not None:
            text, bound = self.target
            if not self.ratio:
                values = per_round(hf, self.figure)
                mid = statistics.median(values) if values else None
            if mid is None:
                met = "-"
            elif self.ms or not self.ratio:
                met = yes(mid <= bound)
            else:
                met = yes(mid >= bound)
        in_db = self.median(db) if self.db else "-"
        return [self.label, self.median(plain), self.median(hf), in_db, vs_plain, vs_db, text, met]


def yes(condition: bool) -> str:
    return "yes" if condition else "NO"


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def report_scale(scale: dict[str, list[Result]], args: argparse.Namespace) -> None:
    print(
        f"\nscaling: N workers x 2 processes drain {args.scale_jobs:,} queued no-op jobs, then "
        f"take jobs sent at half that rate for {args.scale_latency_seconds:.0f} s "
        "(latency under load);\nCPU in cores busy over the drain (the machine has "
        f"{os.cpu_count()}): workers (main and pool processes), PostgreSQL (the bench "
        "database's backends and the server's own processes), Redis (INFO cpu).\n"
    )
    table = [[
        "mode", "workers", "drain jobs/s", "latency p50 / p99 ms", "at jobs/s", "workers CPU",
        "PostgreSQL CPU", "Redis CPU", "machine busy",
    ]]  # fmt: skip
    for mode, steps in scale.items():
        for step in steps:
            usage = step["drain_usage"]
            seconds = usage["seconds"]
            table.append([
                MODE_NAMES[mode], str(step["processes"] // 2), f"{step['drain_per_second']:,.0f}",
                f"{percentile(step['latency'], 50) * 1000:.1f} / "
                f"{percentile(step['latency'], 99) * 1000:.1f}",
                f"{step['latency_rate']:,.0f}",
                f"{usage['worker_cpu'] / seconds:.2f}",
                "-" if usage["db_cpu"] is None else f"{usage['db_cpu'] / seconds:.2f}",
                f"{usage['broker_cpu'] / seconds:.2f}",
                f"{usage['machine_busy'] / seconds / usage['cores']:.0%}",
            ])  # fmt: skip
    print_table(table)
    print()
    for mode, steps in scale.items():
        print(f"first bottleneck, {MODE_NAMES[mode]}: {bottleneck(steps)}")


def bottleneck(steps: list[Result]) -> str:
    """Name the resource that saturates first, from the figures of 1, 2, 4... workers.

    The step looked at is the first after which more workers no longer drain at least 15%
    faster (or the last). There: Redis runs on one core; if the machine's cores are (nearly)
    all busy, the CPU is the limit and the larger consumer, workers or PostgreSQL, is named;
    otherwise the part nearest to its own limit (pool processes, cores, one core for Redis).
    """
    index = len(steps) - 1
    for i in range(len(steps) - 1):
        if steps[i + 1]["drain_per_second"] < steps[i]["drain_per_second"] * SCALING_GAIN:
            index = i
            break
    step = steps[index]
    usage = step["drain_usage"]
    seconds, cores = usage["seconds"], usage["cores"]
    workers = usage["worker_cpu"] / seconds
    db = (usage["db_cpu"] or 0.0) / seconds
    broker = usage["broker_cpu"] / seconds
    machine = usage["machine_busy"] / seconds / cores
    where = (
        f"at {step['processes'] // 2} worker(s): machine {machine:.0%} busy, workers "
        f"{workers:.2f} cores, PostgreSQL {db:.2f}, Redis {broker:.2f}"
    )
    if index + 1 < len(steps):
        following = steps[index + 1]
        gain = following["drain_per_second"] / step["drain_per_second"] - 1
        change = f"only {gain:.0%} faster" if gain >= 0 else f"{-gain:.0%} slower"
        where += f"; {following['processes'] // 2} workers drained {change}"
    if broker >= SATURATED:
        return f"the broker (Redis, one core) - {where}"
    if machine >= SATURATED:
        name = "the worker CPU" if workers >= db else "the DB CPU"
        return f"{name} (the machine's {cores} cores are busy, mostly {name[4:]}) - {where}"
    utilisation = {
        "the worker CPU": workers / min(step["processes"], cores),
        "the DB CPU": db / cores,
        "the broker": broker,
    }
    name = max(utilisation, key=lambda k: utilisation[k])
    return f"{name} (nearest its limit, {utilisation[name]:.0%}; none saturated) - {where}"


# -- shared with benchmarks.mode and benchmarks.recovery ------------------------------------------


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_worker(
    log_path: Path,
    env: dict[str, str],
    *,
    queues: str | None = None,
    hostname: str | None = None,
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.app", "worker", "-P", "prefork",
        "-c", "2", "-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat",
        *(["-Q", queues] if queues else []), *(["-n", hostname] if hostname else []),
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
