"""How a worker logs an outage of the store or broker: a line when it starts, a reminder a
minute, a line when it ends; and how long the store has been reachable, for dead-server
detection."""

from __future__ import annotations

import logging

import pytest

from hfcelery.worker import health
from hfcelery.worker.health import ServiceHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(health.time, "monotonic", fake)
    return fake


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def test_an_outage_is_a_line_a_reminder_a_minute_and_a_line_when_it_ends(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = ServiceHealth("store")
    error = ConnectionError("connection refused\nand a long driver message below")
    with caplog.at_level(logging.DEBUG, logger="hfcelery"):
        for _ in range(30):  # every loop of every pass fails for 30 s
            store.failed(error, "heartbeat")
            store.failed(error, "maintenance")
            clock.now += 1
        assert lines(caplog) == [
            "hfcelery: the store is unreachable (ConnectionError: connection refused); "
            "retrying until it is back"
        ]
        clock.now += 31  # a minute after the first failure
        store.failed(error, "heartbeat")
        store.failed(error, "heartbeat")
        assert lines(caplog)[1:] == [
            "hfcelery: the store is still unreachable after 61 s (ConnectionError: connection "
            "refused)"
        ]
        store.answered()
        store.answered()
    assert lines(caplog)[2:] == ["hfcelery: the store is reachable again after 61.0 s"]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 1 and debug[0].exc_info is not None  # the first failure's traceback


def test_reachable_for_counts_from_the_end_of_the_last_outage(clock: Clock) -> None:
    store = ServiceHealth("store")
    clock.now += 20
    assert store.reachable_for() == 20
    store.failed(OSError("down"), "heartbeat")
    assert store.reachable_for() == 0 and store.down
    clock.now += 30
    store.answered()
    assert store.reachable_for() == 0
    clock.now += 4
    assert store.reachable_for() == 4


def test_a_stall_counts_as_an_outage_for_judging_and_is_a_line_a_minute(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = ServiceHealth("store")
    clock.now += 20
    with caplog.at_level(logging.WARNING, logger="hfcelery"):
        for _ in range(30):  # a store slow for a while: a slow heartbeat every 2 s
            store.stalled(12.5, "heartbeat")
            assert store.reachable_for() == 0 and not store.down
            clock.now += 2
        assert len(lines(caplog)) == 1  # 60 s: one line
        assert "took 12.5 s to answer (in heartbeat)" in lines(caplog)[0]
        store.stalled(3.0, "maintenance")
        assert len(lines(caplog)) == 2  # a reminder a minute
    clock.now += 7
    assert store.reachable_for() == 7
    store.failed(OSError("down"), "heartbeat")
    store.stalled(9.0, "heartbeat")  # during an outage: the outage says it all
    assert store.reachable_for() == 0 and store.down
