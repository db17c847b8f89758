"""Celery's own integration suite, in part: the short subset of ``make compat``.

Celery's tests of replacement, re-used ids, Reject, class-based tasks, chords, errbacks and
inspect run against a real worker, plainly and with hfcelery loaded, and must have the same
outcomes (or a difference listed with its reason in docs/celery-compat.md). ``make compat``
runs the whole tasks, canvas and inspect parts.
"""

from __future__ import annotations

import pytest

from tests.compat import suite
from tests.conftest import IN_CI, service_missing

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def suite_files() -> None:
    try:
        suite.fetch()
    except suite.SuiteUnavailable as exc:
        if IN_CI:
            pytest.fail(f"Celery's integration suite is required when CI=true: {exc}")
        pytest.skip(f"Celery's integration suite is not available ({exc}); skipped outside CI")


@pytest.fixture(scope="module")
def postgres_for_the_store(postgres_url: str) -> str:
    return postgres_url  # skips (or fails under CI) when PostgreSQL is missing


def test_the_known_differences_are_listed_with_reasons() -> None:
    known = suite.known_differences()
    assert known, "docs/celery-compat.md lists no known difference"
    for test, reason in known.items():
        assert test.startswith(suite.FULL), f"{test} is not in the part make compat runs"
        assert len(reason) > 20, f"{test}: give the reason, not a word"


def test_a_listed_difference_needs_a_reason(tmp_path: object) -> None:
    from pathlib import Path

    listing = Path(str(tmp_path)) / "compat.md"
    listing.write_text("- `t/integration/test_tasks.py::test_x`\n", encoding="utf-8")
    with pytest.raises(ValueError, match="without a reason"):
        suite.known_differences(listing)


@pytest.mark.timeout(1500)
def test_celery_integration_suite_has_the_same_outcomes_with_hfcelery(
    suite_files: None, postgres_for_the_store: str
) -> None:
    try:
        comparison = suite.compare(suite.SHORT)
    except OSError as exc:
        service_missing("redis-server or PostgreSQL", exc)
        raise
    print(comparison.report())
    assert comparison.plain.count("passed") >= 20, comparison.report()
    assert comparison.ok, comparison.report()
