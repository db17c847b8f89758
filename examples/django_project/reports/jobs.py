"""Plain functions the views enqueue as jobs."""

from __future__ import annotations


def build_report(region: str) -> str:
    return f"report for {region}"
