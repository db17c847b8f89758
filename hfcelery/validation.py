"""Checks on what enters hfcelery, shared by the client and the worker, and storable text.

Everything a message or a caller gives (job ids, function paths, queue names, header numbers,
argument nesting) is checked against what the store can hold before anything is written, so bad
input is refused with a typed error instead of failing in the database. Texts the worker writes
(exception messages, tracebacks, results) are made storable instead: NUL escaped, lone
surrogates replaced, long texts cut with a visible mark.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hfcelery.errors import InvalidArgumentError

#: Column lengths of the store (see ``hfcelery/store/models.py``).
MAX_JOB_ID_LENGTH = 64
MAX_NAME_LENGTH = 255
MAX_RECURRING_ID_LENGTH = 100
MAX_CRON_LENGTH = 100
#: Largest value of an integer column (a message's ``retries`` header, say).
MAX_INT32 = 2**31 - 1
#: Deepest nesting of lists and dicts in a job's arguments. Deeper structures make Celery's
#: worker fail on the message (a recursion error in its own code), so they never go out.
MAX_ARGUMENT_DEPTH = 100
#: Default cap of a stored exception message, traceback or result text.
DEFAULT_MAX_TEXT_CHARS = 64 * 1024

TRUNCATED_MARK = "… [truncated {} characters]"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def problem_with_identifier(
    value: object, what: str, max_length: int, *, allow_whitespace: bool = False
) -> str | None:
    """Why ``value`` is not a storable identifier (a non-empty string of at most
    ``max_length`` characters without control characters or lone surrogates), or None."""
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if not value:
        return f"{what} must not be empty"
    if len(value) > max_length:
        return f"{what} is longer than {max_length} characters ({len(value)})"
    if _CONTROL.search(value):
        return f"{what} contains a control character (NUL, newline, ...)"
    if _SURROGATE.search(value):
        return f"{what} contains a lone surrogate (text that is not valid Unicode)"
    if not allow_whitespace and value != value.strip():
        return f"{what} starts or ends with white space"
    return None


def problem_with_job_id(value: object) -> str | None:
    """Why ``value`` cannot be a job id, or None."""
    return problem_with_identifier(value, "job id", MAX_JOB_ID_LENGTH)


def problem_with_function_path(value: object) -> str | None:
    """Why ``value`` cannot name a function (``module:qualname``) or task, or None."""
    return problem_with_identifier(value, "function name", MAX_NAME_LENGTH)


def problem_with_queue(value: object) -> str | None:
    """Why ``value`` cannot be a queue name, or None."""
    problem = problem_with_identifier(value, "queue name", MAX_NAME_LENGTH)
    if problem is None and any(c.isspace() for c in str(value)):
        return "queue name contains white space"
    return problem


_HANGFIRE_QUEUE = re.compile(r"[a-z0-9_-]+")


def problem_with_job_queue(value: object) -> str | None:
    """Why ``value`` cannot be the queue of a job created through hfcelery (the ``queue=``
    argument, ``@hfcelery.queue``), or None: as in Hangfire, lower-case letters, digits, ``_``
    and ``-`` only. Queues that come from Celery's own routing are the project's and are only
    checked by :func:`problem_with_queue`."""
    problem = problem_with_queue(value)
    if problem is None and not _HANGFIRE_QUEUE.fullmatch(str(value)):
        return (
            f"queue name {str(value)[:80]!r} must consist of lower-case letters, digits, "
            "'_' and '-' only (as Hangfire's queue names)"
        )
    return problem


def problem_with_count(value: object, what: str) -> str | None:
    """Why ``value`` is not a whole number the store can hold (0 to 2**31-1), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{what} must be a whole number, got {type(value).__name__}"
    if not 0 <= value <= MAX_INT32:
        return f"{what} {value} is out of range (0 to {MAX_INT32})"
    return None


def check(problem: str | None) -> None:
    """Raise :class:`InvalidArgumentError` for a problem a ``problem_with_*`` found."""
    if problem is not None:
        raise InvalidArgumentError(problem)


def check_job_id(value: object) -> str:
    """``value`` if it can be a job id; raises InvalidArgumentError."""
    check(problem_with_job_id(value))
    return str(value)


def check_queue(value: object) -> str:
    """``value`` if it can be a queue name; raises InvalidArgumentError."""
    check(problem_with_queue(value))
    return str(value)


def check_job_queue(value: object) -> str:
    """``value`` if it can be the queue a caller gives a job; raises InvalidArgumentError."""
    check(problem_with_job_queue(value))
    return str(value)


#: Longest job parameter name, and largest parameter value (its JSON).
MAX_PARAMETER_NAME_LENGTH = 100
MAX_PARAMETER_CHARS = 64 * 1024


def check_parameter(name: object, value: object) -> str:
    """``name`` if ``name``/``value`` can be a job parameter: a short name and a small JSON
    value. Raises InvalidArgumentError (or ArgumentSerializationError for a value that is not
    JSON)."""
    check(problem_with_identifier(name, "a job parameter name", MAX_PARAMETER_NAME_LENGTH))
    from hfcelery.errors import ArgumentSerializationError
    from hfcelery.jsonutil import to_json

    try:
        text = to_json(value)
    except (TypeError, ValueError) as exc:
        raise ArgumentSerializationError(
            f"job parameter {name!r} must be JSON-serialisable: {exc}"
        ) from exc
    if len(text) > MAX_PARAMETER_CHARS:
        raise InvalidArgumentError(
            f"job parameter {name!r} is {len(text)} characters of JSON; the limit is "
            f"{MAX_PARAMETER_CHARS}: store large data elsewhere and keep its key here"
        )
    return str(name)


def nesting_depth_exceeds(value: Any, limit: int = MAX_ARGUMENT_DEPTH) -> bool:
    """Whether lists, tuples and dicts in ``value`` nest deeper than ``limit`` (iteratively,
    so a structure too deep for recursion is measured too)."""
    return _argument_problem(value, limit, markers=False) is not None


#: The keys of kombu's JSON marker of a typed value (``{"__type__": "bytes", "__value__": ...}``).
TYPE_MARKER_KEYS = frozenset({"__type__", "__value__"})
#: What :func:`argument_problem` finds.
TOO_DEEP, TYPE_MARKER = "too deep", "type marker"


def argument_problem(value: Any, limit: int = MAX_ARGUMENT_DEPTH) -> str | None:
    """Why ``value`` cannot go out as a job's arguments through Celery's JSON (kombu's), if it
    cannot: :data:`TOO_DEEP` (lists, tuples and dicts nested deeper than ``limit``, or a cycle)
    or :data:`TYPE_MARKER` (a dict with exactly the keys of kombu's marker of a typed value,
    which the message's reader turns into a value of another type, or refuses)."""
    return _argument_problem(value, limit, markers=True)


def _argument_problem(value: Any, limit: int, *, markers: bool) -> str | None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if markers and item.keys() == TYPE_MARKER_KEYS:
                return TYPE_MARKER
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            return TOO_DEEP
        if id(item) in seen:  # a cycle: JSON cannot carry it, and it is deep without end
            return TOO_DEEP
        seen.add(id(item))
        stack.extend((child, depth + 1) for child in children)
    return None


def storable_chars(text: str) -> str:
    """``text`` with NUL written as ``\\x00`` and lone surrogates replaced by U+FFFD (what
    every store can hold, whole)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return without_surrogates(text)


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (which UTF-8 cannot encode) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def storable_text(text: str, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """``text`` as every store can keep it: NUL written as ``\\x00``, lone surrogates replaced
    by U+FFFD, and anything past ``max_chars`` cut with a mark saying how much."""
    text = storable_chars(text)
    if len(text) > max_chars:
        cut = len(text) - max_chars
        text = text[:max_chars] + TRUNCATED_MARK.format(cut)
    return text


def storable_value(value: Any, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> Any:
    """``value`` with every string in it (keys too) made storable (see :func:`storable_text`).

    Containers are rebuilt only where something changes; other values are returned as they are.
    """
    if isinstance(value, str):
        return storable_text(value, max_chars)
    if isinstance(value, list | tuple):
        return [storable_value(v, max_chars) for v in value]
    if isinstance(value, dict):
        return {
            (storable_text(k, max_chars) if isinstance(k, str) else k): storable_value(v, max_chars)
            for k, v in value.items()
        }
    return value
