"""``make bench`` (pages part): render time of every state-report page over a big store.

Seeds a fresh PostgreSQL database in bulk (``INSERT ... SELECT generate_series``) with
``--jobs`` jobs (default 1,000,000) spread over every state, one history entry each and hourly
counters aggregated from that history, then times each page through the pages' core (no HTTP,
no browser) and prints p50 and p95 per page against the 200 ms target. Every request is timed
cold: the counts per state that the pages share for a second are computed for each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from sqlalchemy import create_engine, text

from benchmarks.__main__ import bench_database

TARGET_P95_MS = 200.0

SEED_JOBS = """
INSERT INTO hfcelery_jobs (
    id, function, display_name, tracked, terminate, task_name, args, kwargs, queue, state,
    created_at, state_changed_at, published, server_id, worker_id, due_at, expire_at,
    retry_count, awaiting_parents, continuation_count, recurring_id, scheduled_for)
SELECT
    'job-' || g, 'bench.jobs:work_' || (g % 20), NULL, false, false, 'hfcelery.perform',
    '["customer-' || g || '", ' || g || ']', '{}', 'q' || (g % 5), s.state,
    now() - make_interval(secs => g * 0.5), now() - make_interval(secs => g * 0.5), true,
    CASE WHEN s.state = 'Processing' THEN 'bench@host:1' END,
    CASE WHEN s.state = 'Processing' THEN '1.1' END,
    CASE WHEN s.state = 'Scheduled' THEN now() + make_interval(secs => g) END,
    CASE WHEN s.state IN ('Succeeded', 'Deleted') THEN now() + interval '1 day' END,
    CASE WHEN s.state = 'Scheduled' AND g % 2 = 0 THEN 1 ELSE 0 END,
    CASE WHEN s.state = 'Awaiting' THEN 1 ELSE 0 END, 0, NULL, NULL
FROM generate_series(1, :n) AS g,
LATERAL (SELECT CASE
    WHEN g % 100 < 60 THEN 'Succeeded' WHEN g % 100 < 75 THEN 'Failed'
    WHEN g % 100 < 85 THEN 'Deleted' WHEN g % 100 < 90 THEN 'Enqueued'
    WHEN g % 100 < 95 THEN 'Scheduled' WHEN g % 100 < 98 THEN 'Awaiting'
    ELSE 'Processing' END AS state) AS s
"""

SEED_HISTORY = """
INSERT INTO hfcelery_job_states (job_id, state, reason, data, created_at)
SELECT id, state, NULL,
    CASE state
        WHEN 'Failed' THEN '{"exception_type": "ValueError", "exception_message": "bad '
            || id || '", "exception_details": "Traceback ..."}'
        WHEN 'Succeeded' THEN '{"duration": 0.012, "result": 42}'
        WHEN 'Processing' THEN '{"server_id": "bench@host:1", "worker_id": "1.1"}'
        ELSE '{}' END,
    state_changed_at
FROM hfcelery_jobs
"""

SEED_CONTINUATIONS = """
INSERT INTO hfcelery_continuations (parent_id, child_id, options, pass_result, counted)
SELECT p.id, c.id, 0, NULL, false
FROM hfcelery_jobs c JOIN hfcelery_jobs p ON p.id = 'job-' || (substr(c.id, 5)::bigint + 1)
WHERE c.state = 'Awaiting'
"""

# The counters the maintenance loop would have rolled up from that history.
SEED_STATISTICS = """
INSERT INTO hfcelery_statistics (name, hour, value)
SELECT lower(state), date_trunc('hour', created_at), count(*) FROM hfcelery_job_states
WHERE state IN ('Succeeded', 'Failed', 'Deleted') GROUP BY 1, 2
UNION ALL
SELECT lower(state), timestamptz '1970-01-01 00:00:00+00', count(*) FROM hfcelery_job_states
WHERE state IN ('Succeeded', 'Failed', 'Deleted') GROUP BY 1
UNION ALL
SELECT 'rollup:last_state_id', timestamptz '1970-01-01 00:00:00+00', max(id)
FROM hfcelery_job_states
"""


# The opt-in index for argument search (README, "State-report pages").
TRIGRAM_INDEXES = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX hfcelery_jobs_args_trgm ON hfcelery_jobs USING gin (args gin_trgm_ops);
CREATE INDEX hfcelery_jobs_kwargs_trgm ON hfcelery_jobs USING gin (kwargs gin_trgm_ops);
"""


def seed(url: str, jobs: int, *, trigram: bool) -> None:
    engine = create_engine(url)
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(text(SEED_JOBS), {"n": jobs})
        conn.execute(text(SEED_HISTORY))
        conn.execute(text(SEED_CONTINUATIONS))
        conn.execute(text(SEED_STATISTICS))
        if trigram:
            conn.execute(text(TRIGRAM_INDEXES))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    engine.dispose()
    print(f"seeded {jobs:,} jobs in {time.monotonic() - started:.0f} s")


def pages(job_id: str) -> list[str]:
    return [
        "/", "/api/v1/stats", "/api/v1/history?hours=24", "/api/v1/history?days=7",
        "/jobs/enqueued", "/jobs/enqueued?queue=q3", "/jobs/scheduled", "/jobs/awaiting",
        "/jobs/processing", "/jobs/succeeded", "/jobs/failed", "/jobs/deleted", "/retries",
        "/jobs/failed?function=bench.jobs:work_5", "/jobs?function=bench.jobs:*",
        "/jobs/failed?since=2020-01-01T00:00:00%2B00:00",
        "/jobs/failed?text=customer-4242", "/jobs/failed?after=", f"/job/{job_id}",
        "/recurring", "/servers", "/queues", "/api/v1/jobs?state=failed&limit=100",
    ]  # fmt: skip


def measure(app: Any, rounds: int) -> list[tuple[str, float, float]]:
    from hfcelery.dashboard import Dashboard, Request

    dashboard = Dashboard(app)
    # Not a page's cost: the first request opens the pool and checks the schema.
    dashboard.handle(Request("GET", "/", "", {}, b"", "127.0.0.1"))
    results = []
    for path in pages("job-4242"):
        path, _, query = path.partition("?")
        if query == "after=":  # the second page of Failed, through its real cursor
            first = dashboard.monitoring.search(_failed_filter(), limit=20)
            query = f"after={first.next_cursor}"
        request = Request("GET", path, query, {}, b"", "127.0.0.1")
        timings = []
        for _ in range(rounds):
            dashboard._counts = None  # cold: the counts shared for a second are computed again
            started = time.perf_counter()
            response = dashboard.handle(request)
            timings.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                raise SystemExit(f"{path}?{query} answered {response.status}: {response.body!r}")
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
        results.append((f"{path}{'?' + query if query else ''}", statistics.median(timings), p95))
    return results


def _failed_filter() -> Any:
    from hfcelery.records import JobFilter
    from hfcelery.states import State

    return JobFilter(state=State.FAILED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--trigram", action="store_true", help="add the opt-in trigram indexes for search"
    )
    args = parser.parse_args()
    with bench_database(args.postgres) as store_url:
        seed(store_url, args.jobs, trigram=args.trigram)
        os.environ.update(BENCH_MODE="hf", BENCH_BROKER_URL=args.redis, BENCH_STORE_URL=store_url)
        from benchmarks.app import app

        results = measure(app, args.rounds)
    print(f"\npage render time over {args.jobs:,} jobs ({args.rounds} rounds, in-process core)")
    print(f"{'page':55} {'p50 ms':>8} {'p95 ms':>8}")
    slow = 0
    for path, p50, p95 in results:
        mark = "" if p95 <= TARGET_P95_MS else "  > target"
        slow += bool(mark)
        print(f"{path[:55]:55} {p50:8.1f} {p95:8.1f}{mark}")
    print(f"\n{len(results) - slow} of {len(results)} pages within p95 <= {TARGET_P95_MS:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
