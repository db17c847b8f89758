"""Plain functions the quick start runs as jobs: no decorator needed."""

from __future__ import annotations

from pathlib import Path

import hfcelery


def print_line(text: str) -> str:
    print(text, flush=True)
    return text


def add(x: int, y: int) -> int:
    return x + y


@hfcelery.automatic_retry(attempts=0)
def flaky(reason: str) -> None:
    raise RuntimeError(reason)


@hfcelery.automatic_retry(attempts=3, delays=[1])
def call_unreliable_api(counter_file: str) -> str:
    """Fail twice, succeed on the third attempt (hfcelery retries it after 1 s each time)."""
    path = Path(counter_file)
    attempt = int(path.read_text() or "0") + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt < 3:
        raise ConnectionError(f"attempt {attempt}: the API is down")
    return f"answered on attempt {attempt}"


def long_report(seconds: int) -> str:
    """Run for a while, reporting progress and log lines (shown on the job's page)."""
    import time

    for step in range(seconds):
        hfcelery.progress(step / seconds)
        hfcelery.log(f"step {step + 1} of {seconds}")
        time.sleep(1)
    hfcelery.progress(1.0)
    return f"report of {seconds} steps"
