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
    except (TypeError, ValueError, OverflowError):
        return to_json(repr(value))
