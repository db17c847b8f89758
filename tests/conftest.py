"""Fixtures for the real services: Redis, PostgreSQL, RabbitMQ, and real worker subprocesses.

Under CI=true a missing service fails the test. Elsewhere Redis falls back to an embedded
redis-server and PostgreSQL-only cases are skipped with a message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hfcelery.embedded import EmbeddedRedis
from hfcelery.monitoring import Monitoring, monitoring
from hfcelery.records import JobDetails
from hfcelery.states import State
from hfcelery.store import Store
from hfcelery.store.models import Base

IN_CI = os.environ.get("CI") == "true"
ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("HF_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
PG_ADMIN_URL = os.environ.get(
    "HF_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_URL = os.environ.get("HF_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
WORKER_START_TIMEOUT_SECONDS = 60


def service_missing(name: str, detail: object) -> None:
    """Fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{name} is required when CI=true but is not reachable: {detail}")
    pytest.skip(f"{name} is not reachable ({detail}); skipped outside CI")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# -- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database of its own: the machine's Redis, or (outside CI) an embedded one."""
    embedded: EmbeddedRedis | None = None
    url = REDIS_URL
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.ConnectionError as exc:
        if IN_CI:
            pytest.fail(f"Redis is required when CI=true but is not reachable: {exc}")
        embedded = EmbeddedRedis().start()
        url = embedded.url
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
    if embedded is not None:
        embedded.stop()


@pytest.fixture(scope="session")
def side_effects(redis_url: str) -> redis.Redis:
    """Where test jobs leave traces (see tests/jobs.py)."""
    return redis.Redis.from_url(redis_url, decode_responses=True)


# -- PostgreSQL ------------------------------------------------------------------------------


@contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        service_missing("PostgreSQL", exc)
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a new, migrated database, dropped after the session."""
    with new_postgres_database("hfcelery_test") as url:
        migrator = Store(url)
        migrator.migrate()
        migrator.dispose()
        yield url


def truncate(store: Store) -> None:
    with store.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        s = Store(request.getfixturevalue("postgres_url"))
        truncate(s)
    yield s
    if request.param != "sqlite":  # leave nothing (fake servers, say) to later tests
        truncate(s)
    s.dispose()


# -- the test app and its workers --------------------------------------------------------------


@pytest.fixture(scope="session")
def acceptance_store_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> str:
    """PostgreSQL for acceptance tests; outside CI, SQLite if PostgreSQL is missing."""
    try:
        return str(request.getfixturevalue("postgres_url"))
    except pytest.skip.Exception:
        return f"sqlite:///{tmp_path_factory.mktemp('acceptance') / 'store.db'}"


@pytest.fixture(scope="session")
def test_env(redis_url: str, acceptance_store_url: str) -> dict[str, str]:
    """Environment of the test app, set here and inherited by worker subprocesses."""
    env = {
        "HF_TEST_BROKER_URL": redis_url,
        "HF_TEST_STORE_URL": acceptance_store_url,
        "HF_TEST_SIDE_EFFECTS_URL": redis_url,
        "HF_TEST_QUEUE": f"hftests-{uuid.uuid4().hex[:8]}",
        "HF_TEST_REDBEAT_PREFIX": f"hftests-{uuid.uuid4().hex[:8]}:",
    }
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def test_app(test_env: dict[str, str]) -> Iterator[Any]:
    """The Celery app of tests/app.py, configured for this session's services."""
    from hfcelery.extension import extension_of
    from tests.app import app

    yield app
    extension_of(app).store.dispose()


@dataclass
class WorkerProcess:
    """A real ``celery worker`` subprocess."""

    process: subprocess.Popen[bytes]
    hostname: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture(scope="module")
def start_worker(
    test_env: dict[str, str], test_app: Any, tmp_path_factory: Any
) -> Iterator[StartWorker]:
    """Start real workers of tests/app.py; each is stopped when the module's tests end."""
    started: list[WorkerProcess] = []
    from hfcelery.monitoring import monitoring

    def start(
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        queues: str | None = None,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        api: Monitoring | None = None,
    ) -> WorkerProcess:
        """``api`` reads the store the worker registers in (the session's by default)."""
        hostname = f"hftest-{uuid.uuid4().hex[:8]}@localhost"
        log_path = tmp_path_factory.mktemp("worker") / "worker.log"
        command = [
            sys.executable, "-m", "celery", "-A", "tests.app", "worker",
            "-P", pool, "-c", str(concurrency), "-n", hostname,
            "-Q", queues or test_env["HF_TEST_QUEUE"], "-l", "info",
            "--without-gossip", "--without-mingle", "--without-heartbeat", *args,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **test_env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(process, hostname, log_path)
        started.append(worker)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
        api = api or monitoring(test_app)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{worker.log()}")
            ready = "ready." in worker.log()
            if ready and any(s.hostname == hostname for s in api.servers()):
                return worker
            time.sleep(0.2)
        worker.stop(signal.SIGKILL)
        raise RuntimeError(f"worker did not start in time:\n{worker.log()}")

    yield start
    for worker in started:  # all at once: each warm shutdown takes a while
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in started:
        worker.stop()


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# -- helpers of the acceptance modules -----------------------------------------------------------

FINAL = (State.SUCCEEDED, State.FAILED, State.DELETED)


@pytest.fixture(scope="module")
def worker(start_worker: StartWorker) -> WorkerProcess:
    """One real worker (prefork, 2 processes) for the tests of a module."""
    return start_worker()


@pytest.fixture(scope="module")
def api(test_app: Any) -> Monitoring:
    return monitoring(test_app)


def wait_state(
    api: Monitoring, job_id: str, states: tuple[State, ...] = FINAL, timeout: float = 30
) -> JobDetails:
    """Wait until the job is in one of ``states`` (by default a final one); return it."""

    def reached() -> JobDetails | None:
        job = api.find_job(job_id)
        return job if job is not None and job.state in states else None

    result: JobDetails = wait_for(reached, timeout=timeout, what=f"{job_id} to reach {states}")
    return result


def token() -> str:
    """A fresh name for a job's side effects in Redis."""
    return uuid.uuid4().hex


def history(job: JobDetails) -> list[State]:
    return [h.state for h in job.history]
