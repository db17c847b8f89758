"""SQL statements and transactions of the worker processes, per job (``make bench`` and the
statement count test).

Import this module in a worker's main process (``benchmarks.app`` does; a worker of another app
takes ``--include benchmarks.sqlcount``) and set ``BENCH_SQL_COUNT_DIR``: each pool process then
counts every SQL statement any SQLAlchemy engine executes in it (hfcelery's store, or Celery's
database result backend) and those hfcelery's worker path runs on its own connections, the
transactions it commits (a statement on a connection in autocommit mode is one, as the server
counts it; otherwise each COMMIT), and, for each task it runs, the
statements from ``task_prerun`` to ``task_postrun`` (a process's first task apart: it also does
the process's one-time work, such as the store's schema check). On exit it writes the counts to
``<pid>.json`` in that directory, and :func:`read` adds them up. The worker's main process
(heartbeat, maintenance) is not counted: its statements depend on time, not on jobs.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import signals
from sqlalchemy import Connection, Engine, event

from hfcelery.store.fast import STATEMENT_OBSERVERS

ENV = "BENCH_SQL_COUNT_DIR"


@dataclass
class Counts:
    """The statements of the worker processes, in all and per task run."""

    statements: int = 0
    commits: int = 0
    tasks: int = 0
    #: Statements from a task's prerun to its postrun -> how many task runs had that many; not
    #: counting each process's first task, which is in ``first_task``.
    per_task: Counter[int] = field(default_factory=Counter)
    first_task: Counter[int] = field(default_factory=Counter)
    processes: int = 0

    @property
    def in_tasks(self) -> int:
        runs = self.per_task + self.first_task
        return sum(count * times for count, times in runs.items())

    @property
    def per_job(self) -> float:
        """All statements of the pool processes (start-up included) per task run."""
        return self.statements / self.tasks if self.tasks else float("nan")


_counts = Counts()
_task_started_at: int | None = None


def _autocommit(conn: Connection) -> bool:
    return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))


def _count(conn: Connection, *_: Any) -> None:
    _counts.statements += 1
    if _autocommit(conn):
        _counts.commits += 1


def _count_fast(_sql: str) -> None:
    """A statement of the store's worker path on its own connection (autocommit)."""
    _counts.statements += 1
    _counts.commits += 1


def _count_commit(conn: Connection) -> None:
    if not _autocommit(conn):
        _counts.commits += 1


@signals.worker_process_init.connect
def _start_counting(**_: Any) -> None:
    if os.environ.get(ENV):
        event.listen(Engine, "before_cursor_execute", _count)
        event.listen(Engine, "commit", _count_commit)
        STATEMENT_OBSERVERS.append(_count_fast)
        signals.task_prerun.connect(_task_started, weak=False)
        signals.task_postrun.connect(_task_ended, weak=False)


def _task_started(**_: Any) -> None:
    global _task_started_at
    _task_started_at = _counts.statements


def _task_ended(**_: Any) -> None:
    global _task_started_at
    if _task_started_at is not None:
        runs = _counts.per_task if _counts.tasks else _counts.first_task
        _counts.tasks += 1
        runs[_counts.statements - _task_started_at] += 1
        _task_started_at = None


@signals.worker_process_shutdown.connect
def _write_counts(**_: Any) -> None:
    directory = os.environ.get(ENV)
    if directory:
        data = {
            "statements": _counts.statements,
            "commits": _counts.commits,
            "tasks": _counts.tasks,
            "per_task": {str(k): v for k, v in _counts.per_task.items()},
            "first_task": {str(k): v for k, v in _counts.first_task.items()},
        }
        (Path(directory) / f"{os.getpid()}.json").write_text(json.dumps(data))


def read(directory: Path) -> Counts:
    """The counts the pool processes that exited wrote to ``directory``, added up."""
    total = Counts()
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        total.statements += int(data["statements"])
        total.commits += int(data["commits"])
        total.tasks += int(data["tasks"])
        total.per_task.update({int(k): int(v) for k, v in data["per_task"].items()})
        total.first_task.update({int(k): int(v) for k, v in data["first_task"].items()})
        total.processes += 1
    return total
