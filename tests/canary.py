"""A module workers must never run functions of: it is not in the test app's allowed modules.

``tests.jobs`` imports it, so forged messages can try to reach it through an allowed module.
"""

from __future__ import annotations

import os

import redis


def touch(token: str) -> str:
    """Leave a trace that security tests look for: it must never appear."""
    redis.Redis.from_url(os.environ["HF_TEST_SIDE_EFFECTS_URL"]).set(f"hftests:canary:{token}", 1)
    return "touched"
