"""What a worker knows of the services it depends on, and how it says so in its log.

A store or broker outage is logged as one line when it begins (with the error's summary; the
first traceback at debug level), a reminder while it lasts, and one line when the service is
back: not a traceback from every background loop on every pass. The store's record also tells
dead-server detection how long the store has been reachable without a break: a server is dead
only when it missed heartbeats while the store was reachable, never from the gap an outage left
in everybody's heartbeats.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("hfcelery.worker.server")

#: How often an outage that goes on is mentioned again.
REMINDER_INTERVAL_SECONDS = 60.0


class ServiceHealth:
    """Whether a service (the store, the broker) answered this worker's last request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reminded_at = 0.0
        self._up_since = time.monotonic()
        self._stall_noted_at = -REMINDER_INTERVAL_SECONDS

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def reachable_for(self) -> float:
        """Seconds since the service last failed (since this worker started, if never)."""
        with self._lock:
            if self._down_since is not None:
                return 0.0
            return time.monotonic() - self._up_since

    def failed(self, exc: BaseException, where: str) -> None:
        """A request to the service failed in ``where`` (a loop's name)."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = self._reminded_at = now
                first = True
            elif now - self._reminded_at >= REMINDER_INTERVAL_SECONDS:
                self._reminded_at = now
                first = False
            else:
                return
            since = now - self._down_since
        if first:
            logger.warning(
                "hfcelery: the %s is unreachable (%s); retrying until it is back",
                self.name,
                summary(exc),
            )
            logger.debug("hfcelery: the %s's first failure (in %s)", self.name, where, exc_info=exc)
        else:
            logger.warning(
                "hfcelery: the %s is still unreachable after %.0f s (%s)",
                self.name,
                since,
                summary(exc),
            )

    def stalled(self, seconds: float, where: str) -> None:
        """A request to the service answered, but only after ``seconds`` (the service stalled,
        or a lock held it): for judging other servers, as if it had been unreachable until
        now, since nobody could write a heartbeat meanwhile."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is not None:
                return
            self._up_since = now
            # One line, then one a reminder interval at most while the store stays slow.
            quiet = now - self._stall_noted_at < REMINDER_INTERVAL_SECONDS
            if not quiet:
                self._stall_noted_at = now
        (logger.debug if quiet else logger.warning)(
            "hfcelery: the %s took %.1f s to answer (in %s); no server is judged dead until it "
            "has answered promptly for a whole server timeout",
            self.name,
            seconds,
            where,
        )

    def answered(self) -> None:
        """A request to the service succeeded."""
        with self._lock:
            if self._down_since is None:
                return
            now = time.monotonic()
            outage = now - self._down_since
            self._down_since = None
            self._up_since = now
        logger.warning("hfcelery: the %s is reachable again after %.1f s", self.name, outage)


def summary(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its text."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__
