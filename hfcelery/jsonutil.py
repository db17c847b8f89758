"""JSON as Celery messages carry it (kombu's encoder: datetimes, decimals, UUIDs, bytes).

Arguments, results and state data are stored with the same encoder the messages use, so what a
job was enqueued with reads back the same way.
"""

from __future__ import annotations

from typing import Any, cast

from kombu.utils import json as kombu_json


def to_json(value: Any) -> str:
    """Serialise ``value``; raises TypeError (or ValueError) when JSON cannot carry it."""
    return cast(str, kombu_json.dumps(value))  # type: ignore[no-untyped-call]


def from_json(text: str | bytes) -> Any:
    """Read JSON written by :func:`to_json`."""
    return kombu_json.loads(text)  # type: ignore[no-untyped-call]


def to_json_or_repr(value: Any) -> str:
    """JSON of ``value``, or JSON of its ``repr`` when JSON cannot carry it (for display)."""
    try:
        return to_json(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        pass
    try:
        return to_json(repr(value))
    except RecursionError:
        return to_json(f"<{type(value).__name__} nested too deeply to show>")


def from_json_or_raw(text: str | bytes) -> Any:
    """Read JSON written by :func:`to_json`; text it cannot read (written by an older version,
    or refused by kombu's decoder) comes back as ``{"unreadable": text}`` instead of raising."""
    try:
        return from_json(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raw = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        return {"unreadable": raw, "error": f"{type(exc).__name__}: {exc}"}
