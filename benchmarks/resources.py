"""What a benchmark window cost in CPU: the workers, the database, the broker, the machine.

CPU times come from psutil: the worker process trees the bench started; the PostgreSQL backends
of the bench database plus the server's own processes (WAL writer, checkpointer, ...), both from
``pg_stat_activity``; Redis's own ``INFO cpu``. Other users of the same PostgreSQL server (other
databases) and Redis server add a little noise to the server-wide parts. (Commits are counted in
the worker processes, :mod:`benchmarks.sqlcount`: PostgreSQL 15 publishes an idle backend's
``pg_stat_database`` counters up to 10 s late, which made deltas of ``xact_commit`` unreliable.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

DB_PIDS = text(
    "SELECT pid FROM pg_stat_activity WHERE datname = :db OR backend_type <> 'client backend'"
)


@dataclass
class Usage:
    """CPU seconds spent during a window of ``seconds``."""

    seconds: float
    worker_cpu: float
    #: Of ``worker_cpu``, the workers' main processes (the consumer that receives, dispatches
    #: to the pool and acknowledges); the rest is their pool processes'.
    worker_main_cpu: float
    db_cpu: float | None  # None without a database
    broker_cpu: float
    machine_busy: float  # CPU seconds of the whole machine, all cores
    cores: int

    def cores_used(self, cpu_seconds: float) -> float:
        return cpu_seconds / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


def _cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        seconds[pid] = times.user + times.system
    return seconds


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings; a process born in between counts from zero."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def process_tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _machine_busy() -> float:
    """CPU seconds the whole machine (all cores) has been busy since it started."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Meter:
    """Measure one window: :meth:`start`, the work, :meth:`stop`."""

    def __init__(
        self,
        admin_url: str,
        store_url: str | None,
        worker_pids: Callable[[], list[int]],
        broker: redis.Redis,
        main_pids: Callable[[], list[int]] = list,
    ) -> None:
        self.database = make_url(store_url).database if store_url else None
        self.admin: Engine | None = (
            create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
            if self.database
            else None
        )
        self.worker_pids = worker_pids
        self.main_pids = main_pids
        self.broker = broker

    def _db_pids(self) -> list[int]:
        if self.admin is None:
            return []
        with self.admin.connect() as conn:
            return [int(row[0]) for row in conn.execute(DB_PIDS, {"db": self.database})]

    def start(self) -> None:
        self._db_pid_list = self._db_pids()
        self._workers = _cpu_seconds(self.worker_pids())
        self._mains = _cpu_seconds(self.main_pids())
        self._db = _cpu_seconds(self._db_pid_list)
        self._broker = _redis_cpu(self.broker)
        self._busy = _machine_busy()
        self._started = time.perf_counter()

    def stop(self) -> Usage:
        seconds = time.perf_counter() - self._started
        busy = _machine_busy()
        workers = _cpu_seconds(self.worker_pids())
        mains = _cpu_seconds(self.main_pids())
        db = _cpu_seconds(set(self._db_pid_list) | set(self._db_pids()))
        broker = _redis_cpu(self.broker)
        return Usage(
            seconds=seconds,
            worker_cpu=_delta(self._workers, workers),
            worker_main_cpu=_delta(self._mains, mains),
            db_cpu=_delta(self._db, db) if self.admin is not None else None,
            broker_cpu=broker - self._broker,
            machine_busy=busy - self._busy,
            cores=psutil.cpu_count() or 1,
        )

    def close(self) -> None:
        if self.admin is not None:
            self.admin.dispose()
