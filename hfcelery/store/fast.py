"""The worker path's statements on PostgreSQL, without SQLAlchemy's per-execution work.

A job's claim and its finish are one autocommitted statement each (``statements``), and a new
job's insert one statement in the transaction around its publish. Through a SQLAlchemy
connection each costs about as much client CPU again as the rest of the job's bookkeeping: a
pool checkout and return (with its reset), the isolation level set and reset, parameter and
result processing. Here a small pool of plain psycopg connections (autocommit, with the
store's asynchronous commit) runs them as SQLAlchemy compiled them (once), prepared on the
server. ``make bench`` shows the difference.

The statements go further and skip psycopg's adaptation and cursors too: their parameters
are sent as text and their few result columns read back by type, straight through libpq
(``psycopg.pq``), which cuts the client's time per claim and finish by about a third again.
A value of a type that path does not know is sent through psycopg instead. A new job's insert
goes out with its BEGIN without waiting (:meth:`FastStatements.sent_ahead`) while its message
is built, and its COMMIT, once the message has left, without waiting for the answer.

The connections behave as the engine's do: one the server dropped (a restart) is replaced and
the statement tried once more; after a fork the child opens its own; a process keeps up to
:data:`MAX_IDLE_CONNECTIONS` open and uses at most :data:`MAX_CONNECTIONS_IN_USE` at once.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

try:
    import psycopg
    from psycopg import pq
    from psycopg.rows import namedtuple_row
except ImportError:  # pragma: no cover - an install for SQLite only (psycopg is an extra)
    psycopg = None  # type: ignore[assignment]
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.sql import ClauseElement

from hfcelery.errors import StoreDataError, StoreError, StoreUnavailableError

logger = logging.getLogger(__name__)

#: Connections kept open when not in use, per store and process (the engine's pool size): a
#: worker process uses one at a time; threads that write at once (a web server's) use more.
MAX_IDLE_CONNECTIONS = 5
#: Connections in use at once, per store and process (the engine's pool size and overflow):
#: a thread beyond waits for one, up to :data:`CONNECTION_WAIT_SECONDS`, as for the engine's.
MAX_CONNECTIONS_IN_USE = 15
CONNECTION_WAIT_SECONDS = 30.0
#: How long a read waits for a COMMIT's answer that another thread of the process is reading.
SETTLE_WAIT_SECONDS = 5.0

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
    #: The name it is prepared under on each connection, its SQL with ``$n`` placeholders,
    #: and the parameter behind each placeholder (libpq's path, see ``_execute_raw``).
    name: bytes
    numbered_sql: bytes
    order: tuple[str, ...]

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

    def __init__(
        self,
        url: URL,
        dialect: Dialect,
        options: str | None,
        connect_timeout: int | None = None,
    ) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._options = options
        self._connect_timeout = connect_timeout
        self._dialect = dialect
        self._compiled: dict[int, tuple[ClauseElement, _Compiled]] = {}
        #: Connections not in use, the latest last, with the process that opened them (a
        #: fork's child skips its parent's). list.append and list.pop are atomic: no lock that
        #: a fork could inherit held.
        self._idle: list[tuple[int, psycopg.Connection[Any]]] = []
        #: Every connection opened: closed with the store (or when it is collected, or at
        #: exit), in the process that opened them.
        self._opened: list[tuple[int, psycopg.Connection[Any]]] = []
        #: The statements prepared on each connection by libpq's path, and whether that path
        #: can read their columns.
        self._prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[bytes, bool]] = (
            weakref.WeakKeyDictionary()
        )
        #: Connections whose COMMIT was sent without waiting for its answer (see
        #: ``_commit_later``), with the process that sent it and how many jobs' messages left
        #: before it.
        self._pending: weakref.WeakKeyDictionary[psycopg.Connection[Any], tuple[int, int]] = (
            weakref.WeakKeyDictionary()
        )
        #: The process's connections in use at once, bounded (a fork's child starts its own:
        #: a parent's thread may hold the semaphore's lock at the fork).
        self._in_use = (os.getpid(), threading.BoundedSemaphore(MAX_CONNECTIONS_IN_USE))
        weakref.finalize(self, _close, self._opened)

    def execute(self, statement: ClauseElement, params: dict[str, Any]) -> Sequence[Any]:
        """Run one statement (autocommitted) and return its rows, timestamps in UTC."""
        compiled = self._compile(statement)
        values = compiled.bind(params)
        try:
            texts = [_as_text(values[name]) for name in compiled.order]
        except _NotText:
            texts = None  # a value only psycopg can adapt
        for attempt in (1, 2):
            conn = self._acquire()
            try:
                rows = None if texts is None else self._execute_raw(conn, compiled, texts)
                if rows is None:  # values or columns only psycopg adapts
                    rows = _rows(_send(conn, compiled, values))
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                raise _refused(exc) from exc
            except _Dropped as exc:
                if attempt == 1:
                    continue  # a connection the server dropped: once more on a new one
                raise StoreUnavailableError(f"the store is unavailable: {exc}") from exc
            except psycopg.Error as exc:
                if attempt == 1 and _dropped(conn) and isinstance(exc, psycopg.OperationalError):
                    continue
                raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
            finally:
                self._release(conn)
            return rows
        raise AssertionError("unreachable")

    def _execute_raw(
        self, conn: psycopg.Connection[Any], compiled: _Compiled, texts: list[bytes | None]
    ) -> list[Any] | None:
        """Run a prepared statement through libpq with text parameters; read its rows back by
        column type. None (before anything ran) for a statement whose columns it cannot read;
        raises :class:`_Dropped` for a connection the server dropped."""
        pgconn = conn.pgconn
        if not self._prepared_on(conn, compiled):
            return None
        for observe in STATEMENT_OBSERVERS:
            observe(compiled.sql)
        result = pgconn.exec_prepared(compiled.name, texts)  # type: ignore[arg-type]
        if result.status == pq.ExecStatus.FATAL_ERROR and _sqlstate(result) == _NO_SUCH_STATEMENT:
            # Prepared statements are per session: one that is gone (a pooler's DISCARD ALL)
            # is prepared again.
            _prepare(pgconn, compiled)
            result = pgconn.exec_prepared(compiled.name, texts)  # type: ignore[arg-type]
        _check(pgconn, result)
        return _read_rows(result)

    def _prepared_on(self, conn: psycopg.Connection[Any], compiled: _Compiled) -> bool:
        """Prepare the statement on the connection unless it is; whether libpq's path can read
        its columns."""
        prepared = self._prepared.setdefault(conn, {})
        readable = prepared.get(compiled.name)
        if readable is None:
            readable = prepared[compiled.name] = _prepare(conn.pgconn, compiled)
        return readable

    @contextmanager
    def sent_ahead(self, statement: ClauseElement, params: dict[str, Any]) -> Iterator[SentAhead]:
        """A transaction whose BEGIN and first statement go out together, without waiting: the
        caller works meanwhile (builds its messages), then reads the statement's rows with
        ``result()``. One round trip for the statement, overlapped with the caller's work.

        Committed when the block ends, rolled back if it raises. Once the caller's messages
        have left (it sets ``sent`` to their number) the COMMIT does not wait for its answer:
        see :meth:`_commit_later`.
        ``result()`` raises :class:`StaleConnectionError` when the connection was found dropped
        by the server (nothing was written): the caller may start again. Only text parameters
        (see ``_as_text``; anything else raises ``TypeError`` before anything is sent).
        """
        compiled = self._compile(statement)
        values = compiled.bind(params)
        try:
            texts = [_as_text(values[name]) for name in compiled.order]
        except _NotText as exc:
            raise TypeError(f"{exc} is not a parameter libpq's path sends") from exc
        conn = self._acquire()
        ahead = SentAhead(self, conn, compiled, texts)
        try:
            try:
                ahead.send()
                yield ahead
                ahead.result()
                if ahead.sent:
                    self._commit_later(conn, ahead.sent)
                else:
                    _check(conn.pgconn, conn.pgconn.exec_(_COMMIT))
            except BaseException:
                ahead.abandon()
                raise
        except _Dropped as exc:
            raise StoreUnavailableError(f"the store is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
        finally:
            self._release(conn)

    def _commit_later(self, conn: psycopg.Connection[Any], sent: int) -> None:
        """Send the COMMIT of a transaction whose messages have left, without waiting for its
        answer: it is read before the connection is used again, and before any statement of
        this process through a store's engine (:func:`settle_commits`), so that whatever this
        process reads next sees the jobs. Nothing waits on it meanwhile: the jobs are sent, and
        should the COMMIT fail, the worker that takes a message whose job is not stored writes
        it from the message (``JobStore.claim``), as when the COMMIT's answer is lost."""
        pgconn = conn.pgconn
        try:
            pgconn.send_query(_COMMIT)
            flushed = pgconn.flush() == 0
        except psycopg.Error as exc:  # the connection is gone: closed when it is released
            _log_lost_commit(sent, exc)
            return
        self._pending[conn] = (os.getpid(), sent)
        _WITH_PENDING_COMMITS.add(self)
        if not flushed:  # still in the client's buffer: wait for it instead
            self._settle(conn)

    def _settle(self, conn: psycopg.Connection[Any]) -> None:
        """Read the answer of the connection's COMMIT sent without waiting, if it has one."""
        if not self._pending:  # the worker path's usual case: no weak reference made
            return
        pending = self._pending.pop(conn, None)
        if pending is None:
            return
        sent = pending[1]
        pgconn = conn.pgconn
        last = None
        try:
            while (result := pgconn.get_result()) is not None:
                last = result
            if last is None:
                raise _Dropped(pgconn.error_message.decode("utf-8", "replace") or "no answer")
            _check(pgconn, last)
        except (psycopg.Error, _Dropped, StoreError) as exc:
            _log_lost_commit(sent, exc)

    def settle(self) -> None:
        """Read the answers of the COMMITs this process sent without waiting (idle
        connections), then wait for those another thread took from the idle ones an instant
        ago, which it reads first thing (see ``_acquire``)."""
        if not self._pending:
            return
        pid = os.getpid()
        taken = []
        while True:
            try:
                taken.append(self._idle.pop())
            except IndexError:
                break
        for owner, conn in taken:
            if owner == pid:
                self._settle(conn)
                self._put_back(conn)
            else:  # a parent's, after a fork: left alone, and forgotten here
                self._pending.pop(conn, None)
                self._idle.append((owner, conn))
        self._wait_for_other_threads(pid)

    def _wait_for_other_threads(self, pid: int) -> None:
        """Until no COMMIT of this process is pending: another thread holds each connection
        left, between taking it and reading its answer (no thread holds one otherwise). Given
        up, with a debug line, after :data:`SETTLE_WAIT_SECONDS`."""
        deadline = time.monotonic() + SETTLE_WAIT_SECONDS
        while True:
            try:
                waiting = any(owner == pid for owner, _ in list(self._pending.values()))
            except RuntimeError:  # changed by another thread while it was read
                waiting = True
            if not waiting:
                return
            if time.monotonic() > deadline:
                logger.debug("hfcelery: a COMMIT another thread reads is still unanswered")
                return
            time.sleep(0.0002)

    def close(self) -> None:
        """Close every connection this process opened (new ones are opened on next use)."""
        self.settle()
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
        sql = str(compiled)
        numbered, order = _numbered(sql)
        name = f"hfcelery_{len(self._compiled) + 1}".encode()
        result = _Compiled(sql, compiled, processors, defaults, name, numbered.encode(), order)
        self._compiled[id(statement)] = (statement, result)  # keeps the statement alive
        return result

    def _acquire(self) -> psycopg.Connection[Any]:
        """A connection of this process, from the idle ones or new; once
        :data:`MAX_CONNECTIONS_IN_USE` are in use, the first one another thread releases."""
        in_use = self._slots()
        if not in_use.acquire(timeout=CONNECTION_WAIT_SECONDS):
            raise StoreUnavailableError(
                f"the store is unavailable: all {MAX_CONNECTIONS_IN_USE} connections of this "
                f"process were in use for {CONNECTION_WAIT_SECONDS:.0f} s"
            )
        try:
            return self._take(os.getpid())
        except BaseException:
            in_use.release()
            raise

    def _slots(self) -> threading.BoundedSemaphore:
        """This process's count of connections in use (a fork's child starts its own)."""
        owner, in_use = self._in_use
        pid = os.getpid()
        if owner != pid:
            in_use = threading.BoundedSemaphore(MAX_CONNECTIONS_IN_USE)
            self._in_use = (pid, in_use)
        return in_use

    def _take(self, pid: int) -> psycopg.Connection[Any]:
        while True:
            try:
                owner, conn = self._idle.pop()
            except IndexError:
                break
            if owner != pid:  # a parent's, after a fork: left to it, its COMMIT too
                if self._pending:
                    self._pending.pop(conn, None)
                continue
            self._settle(conn)  # the answer of a COMMIT sent without waiting, first
            if not conn.closed:
                return conn
        extra: dict[str, Any] = {"options": self._options} if self._options else {}
        if self._connect_timeout is not None:
            extra["connect_timeout"] = self._connect_timeout
        try:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, row_factory=namedtuple_row, **extra
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
        self._opened.append((pid, conn))
        return conn

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        """Back to the idle ones (see :meth:`_put_back`); another thread may take one."""
        try:
            self._put_back(conn)
        finally:
            with suppress(ValueError):  # taken before a fork, released after
                self._slots().release()

    def _put_back(self, conn: psycopg.Connection[Any]) -> None:
        """Back to the idle ones, unless it is broken or enough are idle already."""
        pid = os.getpid()
        pending = bool(self._pending) and conn in self._pending
        idle = conn.info.transaction_status == _IDLE or pending
        idle = idle and conn.pgconn.pipeline_status == pq.PipelineStatus.OFF
        if idle and not _dropped(conn) and len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append((pid, conn))
            return
        if pending:  # its COMMIT's answer first, so that what this process reads next sees it
            self._settle(conn)
        conn.close()
        with suppress(ValueError):  # closed with the store meanwhile
            self._opened.remove((pid, conn))


def _close(opened: list[tuple[int, psycopg.Connection[Any]]]) -> None:
    pid = os.getpid()
    for owner, conn in list(opened):
        if owner == pid:
            conn.close()
            opened.remove((owner, conn))


class SentAhead:
    """The transaction :meth:`FastStatements.sent_ahead` began: its first statement's rows, and
    more statements in it."""

    def __init__(
        self,
        fast: FastStatements,
        conn: psycopg.Connection[Any],
        compiled: _Compiled,
        texts: list[bytes | None],
    ) -> None:
        self._fast = fast
        self._conn = conn
        self._compiled = compiled
        self._texts = texts
        self._rows: list[Any] | None = None
        self._error: BaseException | None = None
        #: Set by the caller to the number of messages that left once they have.
        self.sent = 0

    def send(self) -> None:
        """BEGIN and the statement, in libpq's pipeline mode: neither waits for the server."""
        pgconn = self._conn.pgconn
        try:
            self._fast._prepared_on(self._conn, self._compiled)
            for observe in STATEMENT_OBSERVERS:
                observe(self._compiled.sql)
            pgconn.enter_pipeline_mode()
            pgconn.send_query_params(_BEGIN, None)
            pgconn.send_query_prepared(self._compiled.name, self._texts)
            pgconn.pipeline_sync()
        except _Dropped as exc:
            raise StaleConnectionError(str(exc)) from exc
        except psycopg.OperationalError as exc:
            if _dropped(self._conn):
                raise StaleConnectionError(_summary(exc)) from exc
            raise

    def result(self) -> list[Any]:
        """Wait for the statement's rows (raises its error, every time it is asked)."""
        if self._error is not None:
            raise self._error
        if self._rows is None:
            try:
                self._rows = self._read()
            except _Dropped as exc:
                self._error = StaleConnectionError(str(exc))
                raise self._error from exc
            except BaseException as exc:
                self._error = exc
                raise
        return self._rows

    def _read(self) -> list[Any]:
        pgconn = self._conn.pgconn
        began, done = _pipeline_results(pgconn)
        pgconn.exit_pipeline_mode()
        _check(pgconn, began)
        if done.status == pq.ExecStatus.FATAL_ERROR and _sqlstate(done) == _NO_SUCH_STATEMENT:
            # Prepared statements are per session: one that is gone (a pooler's DISCARD ALL)
            # is prepared again, in a new transaction.
            _check(pgconn, pgconn.exec_(_ROLLBACK))
            _prepare(pgconn, self._compiled)
            _check(pgconn, pgconn.exec_(_BEGIN))
            done = pgconn.exec_prepared(self._compiled.name, self._texts)  # type: ignore[arg-type]
        _check(pgconn, done)
        return _read_rows(done)

    def abandon(self) -> None:
        """After an error: the transaction rolled back, the connection out of pipeline mode (a
        connection left otherwise is closed when it is released)."""
        pgconn = self._conn.pgconn
        with suppress(Exception):
            if pgconn.pipeline_status != pq.PipelineStatus.OFF:
                _pipeline_results(pgconn)
                pgconn.exit_pipeline_mode()
            if pgconn.transaction_status != pq.TransactionStatus.IDLE:
                pgconn.exec_(_ROLLBACK)

    def run(self, statement: ClauseElement, params: dict[str, Any]) -> list[Any]:
        """Another statement in the same transaction (after the first one's rows)."""
        self.result()
        compiled = self._fast._compile(statement)
        values = compiled.bind(params)
        texts = [_as_text(values[name]) for name in compiled.order]
        rows = self._fast._execute_raw(self._conn, compiled, texts)
        if rows is None:
            raise TypeError(f"{compiled.sql} returns columns libpq's path does not read")
        return rows


def _pipeline_results(pgconn: Any) -> tuple[Any, Any]:
    """The results of a pipeline of BEGIN and one statement, read up to its sync."""
    results = []
    nothing = 0  # consecutive empty answers: one separates two commands' results
    while True:
        result = pgconn.get_result()
        if result is None:
            nothing += 1
            if nothing > 1 or pgconn.status == pq.ConnStatus.BAD:
                raise _Dropped(pgconn.error_message.decode("utf-8", "replace") or "no result")
            continue
        nothing = 0
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            break
        results.append(result)
    if len(results) != 2:
        raise _Dropped(pgconn.error_message.decode("utf-8", "replace") or "no result")
    return results[0], results[1]


#: The stores' fast statements of this process with COMMITs whose answers are unread.
_WITH_PENDING_COMMITS: weakref.WeakSet[FastStatements] = weakref.WeakSet()


def settle_commits() -> None:
    """Read the answers of the COMMITs this process sent without waiting (every store's), so
    that a read that follows sees what they committed. Called as a store's engine connects."""
    for fast in list(_WITH_PENDING_COMMITS):
        fast.settle()


def _log_lost_commit(sent: int, exc: BaseException) -> None:
    logger.warning(
        "hfcelery sent %d job(s) but could not commit them (%s); the worker that takes each "
        "message stores its job then",
        sent,
        _summary(exc),
    )


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


# -- libpq's path: text parameters in, typed columns out ------------------------------------------


class _NotText(Exception):
    """A value the text path does not send (psycopg adapts it instead)."""


class _Dropped(Exception):
    """The server dropped the connection (a restart): nothing was written."""


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """SQLAlchemy's ``%(name)s`` placeholders as libpq's ``$n``, and the name behind each n."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"  # a literal percent sign, escaped
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return _PLACEHOLDER.sub(number, sql), tuple(order)


def _as_text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format (the statements cast each one to its type)."""
    if value is None:
        return None
    if value is True or value is False:
        return b"t" if value else b"f"
    if isinstance(value, str):  # a StrEnum too: its value
        if "\x00" in value:
            raise StoreDataError("the store refused the data: PostgreSQL text cannot hold NUL")
        try:
            return str.encode(value)
        except UnicodeEncodeError as exc:  # a lone surrogate
            raise StoreDataError(f"the store refused the data: {exc}") from exc
    if type(value) is int:
        return str(value).encode()
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat().encode()
    raise _NotText(type(value).__name__)


def _prepare(pgconn: Any, compiled: _Compiled) -> bool:
    """Prepare the statement on the connection; whether libpq's path can read its columns."""
    _check(pgconn, pgconn.prepare(compiled.name, compiled.numbered_sql))
    description = pgconn.describe_prepared(compiled.name)
    _check(pgconn, description)
    return all(description.ftype(i) in _READERS for i in range(description.nfields))


def _check(pgconn: Any, result: Any) -> None:
    """Raise for a result that is an error: the data's, the connection's, or the store's."""
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return
    message = (result.error_message or pgconn.error_message or b"").decode("utf-8", "replace")
    summary = (message.strip().splitlines() or ["unknown error"])[0]
    if pgconn.status == pq.ConnStatus.BAD:
        raise _Dropped(summary)
    state = _sqlstate(result)
    if state[:2] in (b"22", b"23"):  # data exception, integrity constraint violation
        raise StoreDataError(f"the store refused the data: {summary}")
    raise StoreUnavailableError(f"the store is unavailable: {summary}")


def _sqlstate(result: Any) -> bytes:
    return bytes(result.error_field(pq.DiagnosticField.SQLSTATE) or b"")


_NO_SUCH_STATEMENT = b"26000"  # invalid_sql_statement_name


def _utc_timestamp(text: bytes) -> datetime:
    return datetime.fromisoformat(text.decode()).astimezone(UTC)


#: How a column of each type (by OID) is read back: text, integers, booleans, timestamps.
_READERS: dict[int, Callable[[bytes], Any]] = {
    25: bytes.decode,  # text
    1043: bytes.decode,  # varchar
    20: int,  # bigint
    21: int,  # smallint
    23: int,  # integer
    16: lambda text: text == b"t",  # boolean
    1184: _utc_timestamp,  # timestamptz
}

_ROW_TYPES: dict[tuple[str, ...], Any] = {}


def _read_rows(result: Any) -> list[Any]:
    """The result's rows as named tuples (a statement without rows gives none)."""
    if result.status != pq.ExecStatus.TUPLES_OK:
        return []
    fields = tuple(result.fname(i).decode() for i in range(result.nfields))
    row_type: Any = _ROW_TYPES.get(fields)
    if row_type is None:
        row_type = _ROW_TYPES[fields] = namedtuple("Row", fields, rename=True)
    readers = []
    for i in range(result.nfields):
        reader = _READERS.get(result.ftype(i))
        if reader is None:
            raise TypeError(f"column {fields[i]} has a type the worker path does not read")
        readers.append(reader)
    rows = []
    for r in range(result.ntuples):
        values = [result.get_value(r, c) for c in range(result.nfields)]
        rows.append(
            row_type._make(
                read(v) if v is not None else None for v, read in zip(values, readers, strict=True)
            )
        )
    return rows
