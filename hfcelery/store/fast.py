"""The worker path's statements on PostgreSQL, without SQLAlchemy's per-execution work.

A job's claim and its finish are one autocommitted statement each (``statements``). Through a
SQLAlchemy connection each costs about as much client CPU again as the rest of the job's
bookkeeping: a pool checkout and return (with its reset), the isolation level set and reset,
parameter and result processing. Here each process and thread keeps one psycopg connection of
its own, in autocommit mode with the store's asynchronous commit, and runs the statements as
SQLAlchemy compiled them (once), prepared on the server. ``make bench`` shows the difference.

The connection behaves as the engine's do: a connection the server dropped (a restart) is
replaced and the statement tried once more; after a fork the child opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.sql import ClauseElement

from hfcelery.errors import StoreDataError, StoreUnavailableError

#: Called with each statement's SQL as it is sent (statement counts of tests and benchmarks);
#: each one is also a commit (autocommit).
STATEMENT_OBSERVERS: list[Callable[[str], None]] = []


@dataclass(frozen=True)
class _Compiled:
    sql: str
    compiled: Any
    processors: dict[str, Callable[[Any], Any]]

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = self.compiled.construct_params(params)
        for name, process in self.processors.items():
            if values.get(name) is not None:
                values[name] = process(values[name])
        return values


class FastStatements:
    """Runs compiled statements on this process's and thread's own connection."""

    def __init__(self, url: URL, dialect: Dialect, options: str | None) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._options = options
        self._dialect = dialect
        self._compiled: dict[int, tuple[ClauseElement, _Compiled]] = {}
        self._local = threading.local()
        #: Every connection opened, by any thread: closed with the store (or when it is
        #: collected, or at exit), in the process that opened them.
        self._opened: list[tuple[int, psycopg.Connection[Any]]] = []
        weakref.finalize(self, _close, self._opened)

    def execute(self, statement: ClauseElement, params: dict[str, Any]) -> Sequence[Any]:
        """Run one statement (autocommitted) and return its rows, timestamps in UTC."""
        compiled = self._compile(statement)
        values = compiled.bind(params)
        for attempt in (1, 2):
            conn = self._connection()
            try:
                for observe in STATEMENT_OBSERVERS:
                    observe(compiled.sql)
                rows = conn.execute(compiled.sql, values, prepare=True).fetchall()
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                raise StoreDataError(f"the store refused the data: {_summary(exc)}") from exc
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    self._local.conn = None
                    if attempt == 1 and isinstance(exc, psycopg.OperationalError):
                        continue  # a connection the server dropped: once more on a new one
                raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
            return [_in_utc(row) for row in rows]
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every connection this process opened; threads open new ones on next use."""
        _close(self._opened)

    def _compile(self, statement: ClauseElement) -> _Compiled:
        found = self._compiled.get(id(statement))
        if found is not None and found[0] is statement:
            return found[1]
        compiled: Any = statement.compile(dialect=self._dialect)  # an SQLCompiler
        processors = {}
        for name, bind in compiled.binds.items():
            process = bind.type.bind_processor(self._dialect)
            if process is not None:
                processors[name] = process
        result = _Compiled(str(compiled), compiled, processors)
        self._compiled[id(statement)] = (statement, result)  # keeps the statement alive
        return result

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid() and not conn.closed:
            return conn
        # A parent's connection is left alone after a fork (psycopg does not close it when it
        # is collected in another process).
        extra: dict[str, Any] = {"options": self._options} if self._options else {}
        try:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, row_factory=namedtuple_row, **extra
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
        self._local.conn, self._local.pid = conn, os.getpid()
        self._opened.append((os.getpid(), conn))  # atomic; no lock to be inherited by a fork
        return conn


def _close(opened: list[tuple[int, psycopg.Connection[Any]]]) -> None:
    pid = os.getpid()
    for owner, conn in list(opened):
        if owner == pid:
            conn.close()
            opened.remove((owner, conn))


def _in_utc(row: Any) -> Any:
    if any(isinstance(value, datetime) for value in row):
        return row._replace(
            **{
                name: value.astimezone(UTC)
                for name, value in row._asdict().items()
                if isinstance(value, datetime)
            }
        )
    return row


def _summary(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
