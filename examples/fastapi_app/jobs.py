"""The example's job functions: plain functions, no decorator needed."""

from __future__ import annotations


def build_report(region: str) -> str:
    return f"report for {region}"
