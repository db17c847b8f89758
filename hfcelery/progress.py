"""Progress and log lines a running job reports, shown on its page.

Both write through the store from the job's own process. Progress is written at most every
``PROGRESS_MIN_INTERVAL_SECONDS`` per job (calls within that interval are skipped; 0 and 1
are always written), so a tight loop calling it costs the job almost nothing. The store keeps
the newest ``MAX_LOG_LINES`` log lines of a job, each cut to ``MAX_LOG_LINE_CHARS`` characters.
"""

from __future__ import annotations

import math
import time
from typing import Any

from celery._state import get_current_task

from hfcelery.errors import InvalidArgumentError
from hfcelery.extension import find_extension
from hfcelery.store.stats import MAX_LOG_LINE_CHARS, MAX_LOG_LINES

__all__ = ["MAX_LOG_LINES", "MAX_LOG_LINE_CHARS", "log", "progress"]

PROGRESS_MIN_INTERVAL_SECONDS = 0.5


def _running_job(what: str) -> tuple[Any, Any]:
    task = get_current_task()
    extension = None if task is None else find_extension(task.app)
    if task is None or extension is None or not task.request.id:
        raise InvalidArgumentError(f"hfcelery.{what}() must be called inside a running job")
    return task.request, extension.store


def progress(fraction: float) -> bool:
    """Report how far the running job is, from 0.0 to 1.0; True if it was written now."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise InvalidArgumentError("progress fraction must be a number from 0 to 1")
    if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
        raise InvalidArgumentError(f"progress fraction must be from 0 to 1, not {fraction!r}")
    request, store = _running_job("progress")
    now = time.monotonic()
    last = getattr(request, "hf_progress_written_at", None)
    if last is not None and now - last < PROGRESS_MIN_INTERVAL_SECONDS and 0 < fraction < 1:
        return False
    store.record_progress(request.id, fraction=float(fraction))
    request.hf_progress_written_at = now
    return True


def log(text: object) -> None:
    """Append a line to the running job's log (shown on its page)."""
    request, store = _running_job("log")
    store.record_progress(request.id, line=str(text))
