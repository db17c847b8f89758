"""The worker path's statements on PostgreSQL, without SQLAlchemy's per-execution work.

A job's claim and its finish are one autocommitted statement each (``statements``), and a new
job's insert one statement in the transaction around its publish. Through a SQLAlchemy
connection each costs about as much client CPU again as the rest of the job's bookkeeping: a
pool checkout and return (with its reset), the isolation level set and reset, parameter and
result processing. Here a small pool of plain psycopg connections (autocommit, with the
store's asynchronous commit) runs them as SQLAlchemy compiled them (once), prepared on the
server. ``make bench`` shows the difference.

The connections behave as the engine's do: one the server dropped (a restart) is replaced and
the statement tried once more; after a fork the child opens its own.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

try:
    import psycopg
    from psycopg.rows import namedtuple_row
except ImportError:  # pragma: no cover - an install for SQLite only (psycopg is an extra)
    psycopg = None  # type: ignore[assignment]
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.sql import ClauseElement

from hfcelery.errors import StoreDataError, StoreUnavailableError

#: Connections kept open when not in use, per store and process: a worker process uses one at a
#: time; threads that write at once (a web server's) open more, closed once they are done.
MAX_IDLE_CONNECTIONS = 2

#: Called with each statement's SQL as it is sent (statement counts of tests and benchmarks);
#: each one is also a commit (autocommit).
STATEMENT_OBSERVERS: list[Callable[[str], None]] = []


_BEGIN, _COMMIT, _ROLLBACK = b"BEGIN", b"COMMIT", b"ROLLBACK"
_IDLE = psycopg.pq.TransactionStatus.IDLE if psycopg is not None else None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    compiled: Any
    processors: dict[str, Callable[[Any], Any]]
    #: Columns an INSERT fills from their (scalar) Python-side defaults.
    defaults: dict[str, Any]

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = self.compiled.construct_params(params)
        for name, default in self.defaults.items():
            if values.get(name) is None:
                values[name] = default
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
        #: Connections not in use, the latest last, with the process that opened them (a
        #: fork's child skips its parent's). list.append and list.pop are atomic: no lock that
        #: a fork could inherit held.
        self._idle: list[tuple[int, psycopg.Connection[Any]]] = []
        #: Every connection opened: closed with the store (or when it is collected, or at
        #: exit), in the process that opened them.
        self._opened: list[tuple[int, psycopg.Connection[Any]]] = []
        weakref.finalize(self, _close, self._opened)

    def execute(self, statement: ClauseElement, params: dict[str, Any]) -> Sequence[Any]:
        """Run one statement (autocommitted) and return its rows, timestamps in UTC."""
        compiled = self._compile(statement)
        values = compiled.bind(params)
        for attempt in (1, 2):
            conn = self._acquire()
            try:
                rows = _rows(_send(conn, compiled, values))
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                raise _refused(exc) from exc
            except psycopg.Error as exc:
                if attempt == 1 and _dropped(conn) and isinstance(exc, psycopg.OperationalError):
                    continue  # a connection the server dropped: once more on a new one
                raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
            finally:
                self._release(conn)
            return rows
        raise AssertionError("unreachable")

    @contextmanager
    def transaction(self) -> Iterator[Callable[[ClauseElement, dict[str, Any]], Sequence[Any]]]:
        """A transaction on a connection of the pool; yields ``run(statement, params) -> rows``.

        The BEGIN goes out with the first statement and the COMMIT alone: two round trips for
        one statement. They are sent in pipeline mode as plain statements, without psycopg's
        transaction blocks, which cost as much client time again as the round trips.
        Raises :class:`StaleConnectionError` when the first statement found the connection
        dropped by the server (nothing was written): the caller may start again.
        """
        conn = self._acquire()
        began = False  # the BEGIN was sent
        first = True  # no statement has completed yet

        def run(statement: ClauseElement, params: dict[str, Any]) -> Sequence[Any]:
            nonlocal began, first
            compiled = self._compile(statement)
            if not began:
                conn.execute(_BEGIN, prepare=False)
                began = True
            cursor = _send(conn, compiled, compiled.bind(params))
            pipeline.sync()
            first = False
            return _rows(cursor)

        try:
            with conn.pipeline() as pipeline:
                try:
                    yield run
                except BaseException:
                    if began:
                        with suppress(psycopg.Error):
                            conn.execute(_ROLLBACK, prepare=False)
                            pipeline.sync()
                    raise
                if began:
                    conn.execute(_COMMIT, prepare=False)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise _refused(exc) from exc
        except psycopg.Error as exc:
            if first and _dropped(conn) and isinstance(exc, psycopg.OperationalError):
                raise StaleConnectionError(_summary(exc)) from exc
            raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
        finally:
            self._release(conn)

    def close(self) -> None:
        """Close every connection this process opened (new ones are opened on next use)."""
        pid = os.getpid()
        self._idle[:] = [(owner, conn) for owner, conn in self._idle if owner != pid]
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
        defaults = {}
        if getattr(compiled, "update_prefetch", None):
            raise TypeError(f"{compiled.update_prefetch} need defaults computed in Python")
        for column in getattr(compiled, "insert_prefetch", ()):
            if not (column.default is not None and column.default.is_scalar):
                raise TypeError(f"{column} has a default the worker path cannot compute")
            defaults[column.key] = column.default.arg
        result = _Compiled(str(compiled), compiled, processors, defaults)
        self._compiled[id(statement)] = (statement, result)  # keeps the statement alive
        return result

    def _acquire(self) -> psycopg.Connection[Any]:
        pid = os.getpid()
        while True:
            try:
                owner, conn = self._idle.pop()
            except IndexError:
                break
            if owner == pid and not conn.closed:
                return conn
        extra: dict[str, Any] = {"options": self._options} if self._options else {}
        try:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, row_factory=namedtuple_row, **extra
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
        self._opened.append((pid, conn))
        return conn

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        """Back to the idle ones, unless it is broken or enough are idle already."""
        pid = os.getpid()
        idle = conn.info.transaction_status == _IDLE
        if idle and not _dropped(conn) and len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append((pid, conn))
            return
        conn.close()
        with suppress(ValueError):  # closed with the store meanwhile
            self._opened.remove((pid, conn))


def _close(opened: list[tuple[int, psycopg.Connection[Any]]]) -> None:
    pid = os.getpid()
    for owner, conn in list(opened):
        if owner == pid:
            conn.close()
            opened.remove((owner, conn))


class StaleConnectionError(StoreUnavailableError):
    """A transaction's first statement found its connection dropped by the server (a
    restart); nothing was written."""


def _send(conn: psycopg.Connection[Any], compiled: _Compiled, values: dict[str, Any]) -> Any:
    """Run one compiled statement (prepared on the server), telling the observers."""
    for observe in STATEMENT_OBSERVERS:
        observe(compiled.sql)
    return conn.execute(compiled.sql, values, prepare=True)


def _rows(cursor: Any) -> list[Any]:
    """A statement's rows, timestamps in UTC (none for a statement that returns nothing)."""
    return [_in_utc(row) for row in cursor.fetchall()] if cursor.description else []


def _refused(exc: BaseException) -> StoreDataError:
    return StoreDataError(f"the store refused the data: {_summary(exc)}")


def _dropped(conn: psycopg.Connection[Any]) -> bool:
    return bool(conn.broken or conn.closed)


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
