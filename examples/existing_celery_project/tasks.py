"""The project's tasks: plain ``@app.task`` functions, a ``bind=True`` retry, canvas helpers."""

from __future__ import annotations

from typing import Any

from celery import chain, chord, group

from examples.existing_celery_project.celery_app import app


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def multiply(x: int, y: int) -> int:
    return x * y


@app.task
def total(values: list[int]) -> int:
    return sum(values)


@app.task(bind=True, max_retries=3)
def flaky_fetch(self: Any, url: str, failures: int) -> str:
    """Fails ``failures`` times, retrying with ``self.retry``, then succeeds."""
    if self.request.retries < failures:
        raise self.retry(countdown=0.2, exc=ConnectionError(f"{url} did not answer"))
    return f"fetched {url} after {self.request.retries} retries"


def workflow() -> dict[str, Any]:
    """Run one of each: a task, a retrying task, a chain, a group and a chord; return results."""
    timeout = 60
    return {
        "add": add.delay(2, 3).get(timeout=timeout),
        "retry": flaky_fetch.delay("https://example.org/a", 2).get(timeout=timeout),
        "chain": chain(add.s(1, 2), multiply.s(10), add.s(5)).apply_async().get(timeout=timeout),
        "group": group(multiply.s(i, i) for i in range(5)).apply_async().get(timeout=timeout),
        "chord": chord(add.s(i, i) for i in range(4))(total.s()).get(timeout=timeout),
    }
