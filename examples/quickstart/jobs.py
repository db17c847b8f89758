"""Plain functions the quick start runs as jobs: no decorator needed."""

from __future__ import annotations


def print_line(text: str) -> str:
    print(text, flush=True)
    return text


def add(x: int, y: int) -> int:
    return x + y


def flaky(reason: str) -> None:
    raise RuntimeError(reason)
