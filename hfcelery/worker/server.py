"""The worker bootstep: a worker is a *server* that heartbeats and runs maintenance.

The server id is fixed in the bootstep's constructor, before the prefork pool starts, so every
child process reports the same id. Two daemon threads run in the worker's main process: the
heartbeat, and the maintenance loop. The loop requeues this server's jobs that are Processing
in the store but not running (their outcome was lost), and, under a store lock (one worker at a
time), requeues the jobs of servers whose heartbeat stopped and publishes jobs whose message
never left.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from celery import bootsteps, signals
from celery.worker import state as worker_state

from hfcelery.errors import HfceleryError, StoreUnavailableError
from hfcelery.extension import Extension, find_extension
from hfcelery.monitoring import broker_queue_length
from hfcelery.publishing import publish
from hfcelery.records import Dispatch, ServerRecord
from hfcelery.store import BROKER_UNAVAILABLE
from hfcelery.validation import problem_with_job_id, storable_text
from hfcelery.worker.compose import compose_task_classes
from hfcelery.worker.health import ServiceHealth

logger = logging.getLogger(__name__)

MAINTENANCE_LOCK = "maintenance"
CLEANUP_LOCK = "cleanup"
#: How long notes of dropped messages are kept for the monitoring API.
DROPPED_MESSAGES_KEPT_SECONDS = 7 * 24 * 60 * 60
#: The maintenance lease outlives a few missed passes before another worker may take it, but
#: never the server timeout: the jobs of a killed worker that held it are recovered as soon as
#: the worker counts as dead.
MAINTENANCE_LOCK_TTL_LOOPS = 3


class ServerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Registers the worker as a server in the store; runs its heartbeat and maintenance."""

    label = "hfcelery"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.extension: Extension | None = find_extension(worker.app)
        self.server: Server | None = None
        if self.extension is not None:
            self.extension.server_id = f"{worker.hostname}:{uuid4().hex[:12]}"
            compose_task_classes(worker.app, self.extension.worker_hooks)

    def include_if(self, worker: Any) -> bool:
        return self.extension is not None

    def start(self, worker: Any) -> None:
        assert self.extension is not None
        queues = sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        self.server = Server(self.extension, worker, queues)
        self.server.start()
        # Stop heartbeating only once the pool has finished its jobs (warm shutdown).
        signals.worker_shutdown.connect(self._on_worker_shutdown, sender=worker, weak=False)

    def stop(self, worker: Any) -> None:
        """Nothing yet: a warm shutdown lets running jobs finish, so heartbeats go on."""

    def terminate(self, worker: Any) -> None:
        """Cold shutdown: running jobs are cut off, so sign off (and requeue them) now."""
        self._on_worker_shutdown()

    def _on_worker_shutdown(self, **_: Any) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class Server:
    """A running worker's presence in the store: registration, heartbeat, maintenance."""

    def __init__(self, extension: Extension, worker: Any, queues: list[str]) -> None:
        assert extension.server_id is not None
        self.extension = extension
        self.worker = worker
        self.id = extension.server_id
        hostname, concurrency = worker.hostname, worker.concurrency or 1
        self.record = ServerRecord(
            id=self.id,
            hostname=hostname,
            pid=os.getpid(),
            queues=queues,
            concurrency=concurrency,
            started_at=datetime.now(UTC),
            heartbeat_at=datetime.now(UTC),
        )
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.store_health = ServiceHealth("store")
        self.broker_health = ServiceHealth("broker")
        #: Jobs this server sent again as lost, and when (each once per republish period).
        self._republished: dict[str, float] = {}
        #: When this server's own heartbeat was last written (time.monotonic()).
        self._heartbeat_written = time.monotonic()
        #: Whether the store knows this server (not yet, when it started during an outage).
        self._registered = True

    def start(self) -> None:
        config = self.extension.config
        try:
            self.extension.store.register_server(self.record)
        except StoreUnavailableError as exc:
            # The worker starts all the same (its claims hand messages back and wait, as in
            # any outage); the heartbeat registers it once the store answers.
            self._registered = False
            self.store_health.failed(exc, "start")
            logger.warning(
                "hfcelery server %s starts without the store; it registers once the store answers",
                self.id,
            )
        else:
            logger.info("hfcelery server %s started (store %s)", self.id, self.extension.store.url)
        self._spawn("heartbeat", self.heartbeat, config.heartbeat_interval_seconds)
        self._spawn("maintenance", self.maintain, config.poll_interval_seconds)
        self._spawn("scheduler", self.schedule, config.schedule_poll_interval_seconds)
        self._spawn("cleanup", self.clean_up, config.cleanup_interval_seconds)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=10)
        store = self.extension.store
        try:
            store.release_lock(MAINTENANCE_LOCK, self.id)
            store.release_lock(CLEANUP_LOCK, self.id)
            requeued = store.remove_server(self.id, reason="Server stopped before the job ended")
        except HfceleryError:
            logger.exception("hfcelery server %s could not sign off", self.id)
            return
        if requeued:
            logger.warning(
                "hfcelery server %s stopped with %d job(s) requeued", self.id, len(requeued)
            )
            self._publish_now(requeued)
        logger.info("hfcelery server %s stopped", self.id)

    def heartbeat(self) -> None:
        store = self.extension.store
        if not self._registered:
            self._register()
            self._registered = True
            logger.info("hfcelery server %s registered (store %s)", self.id, store.url)
            return
        started = time.monotonic()
        alive = store.heartbeat(self.id)
        self._timed(started, "heartbeat")
        if alive:
            self._heartbeat_written = time.monotonic()
            return
        # Declared dead while alive: the store was out of reach for longer than the server
        # timeout from here, but not from the others. Register again with a fresh heartbeat
        # (the one from the start would be judged dead again at once), and take back the jobs
        # that still run here and that nobody else claimed.
        logger.warning("hfcelery server %s was declared dead; registering again", self.id)
        self._register()
        kept = store.reclaim_running(self.id, _running_job_ids())
        if kept:
            logger.warning("hfcelery server %s keeps %d running job(s)", self.id, len(kept))

    def _register(self) -> None:
        """Register (again) with a fresh heartbeat."""
        self.record = replace(self.record, heartbeat_at=datetime.now(UTC))
        self.extension.store.register_server(self.record)
        self._heartbeat_written = time.monotonic()

    def maintain(self) -> None:
        """One maintenance pass: this server's own orphans, then (with the lease) the rest.

        Each step runs even when an earlier one failed, so one bad row cannot stop the others;
        the first failure is raised at the end, for the loop to log.
        """
        config = self.extension.config
        store = self.extension.store
        timeout = timedelta(seconds=config.server_timeout_seconds)
        failures: list[Exception] = []

        def step(work: Callable[[], object]) -> None:
            try:
                work()
            except Exception as exc:
                failures.append(exc)

        step(lambda: self.requeue_orphans(timeout))
        step(self.terminate_deleted)
        ttl = timedelta(
            seconds=min(
                max(config.poll_interval_seconds * MAINTENANCE_LOCK_TTL_LOOPS, 5),
                config.server_timeout_seconds,
            )
        )
        started = time.monotonic()
        leased = store.try_lock(MAINTENANCE_LOCK, self.id, ttl)
        self._timed(started, "maintenance")
        if leased:
            step(lambda: self.recover_dead_servers(timeout))
            step(self.publish_pending)
            step(self.republish_lost)
            step(self.roll_up_statistics)
        if failures:
            raise failures[0]

    def requeue_orphans(self, timeout: timedelta) -> int:
        """Requeue this server's jobs that are Processing in the store but not running here."""
        # Read what runs before asking the store, so a job that finishes in between is not
        # taken for an orphan (its outcome is written before the pool reports it done).
        orphans = self.extension.store.requeue_orphans(self.id, _running_job_ids(), timeout)
        if orphans:
            logger.warning("hfcelery requeued %d job(s) whose outcome was lost", len(orphans))
            self._publish_now(orphans)
        return len(orphans)

    def recover_dead_servers(self, timeout: timedelta) -> int:
        """Requeue the jobs of servers whose heartbeat stopped, and send them at once.

        A server counts as dead only when it missed heartbeats while the store was reachable:
        after an outage, everybody's heartbeats are old, so nothing is judged until the store
        has been reachable from here for a whole server timeout.
        """
        if self.store_health.reachable_for() < timeout.total_seconds():
            return 0
        # This server's own heartbeat must be on time too: one that is late means the store (or
        # this process) stalled, and everybody's heartbeats are late for the same reason. The
        # store checks the same of the judge's stored heartbeat as it judges (a judgement that
        # waited out a stall itself).
        fresh = self._fresh_heartbeat_seconds()
        if time.monotonic() - self._heartbeat_written > fresh:
            return 0
        requeued = self.extension.store.recover_dead_servers(
            timeout, judge=self.id, judge_fresh=timedelta(seconds=fresh)
        )
        if requeued:
            logger.warning("hfcelery requeued %d job(s) of servers that stopped", len(requeued))
            self._publish_now(requeued)
        return len(requeued)

    def _fresh_heartbeat_seconds(self) -> float:
        """How old this server's own heartbeat may be when it judges others. A stall of the
        store that makes a live server's heartbeat older than the timeout lasts longer than
        the timeout less an interval, and leaves the judge's own heartbeat at least that old."""
        config = self.extension.config
        interval = config.heartbeat_interval_seconds
        return max(0.75 * (config.server_timeout_seconds - interval), interval)

    def _timed(self, started: float, where: str) -> None:
        """A store request (a heartbeat, a lease) slow enough to matter (half the time a stall
        needs to make a live server look dead, and at least a heartbeat interval) is a stall of
        the store: see :meth:`ServiceHealth.stalled`."""
        config = self.extension.config
        interval = config.heartbeat_interval_seconds
        took = time.monotonic() - started
        if took > max(0.5 * (config.server_timeout_seconds - interval), interval):
            self.store_health.stalled(took, where)

    def roll_up_statistics(self) -> int:
        """Add the newest state history to the hourly counters; return how many entries."""
        store = self.extension.store
        return self._in_batches(lambda size: store.roll_up_statistics(limit=size))

    def schedule(self) -> float:
        """One scheduler pass; return how long to wait for the next (until the next due job
        this pass knows of, at most the poll interval)."""
        self.enqueue_due()
        interval = self.extension.config.schedule_poll_interval_seconds
        next_due = self.extension.store.next_due_at()
        if next_due is None:
            return interval
        return min(interval, max((next_due - datetime.now(UTC)).total_seconds(), 0.01))

    def terminate_deleted(self) -> list[str]:
        """Kill the worker processes of running jobs deleted with ``terminate=True``."""
        requests = {
            request.id: request
            for request in list(worker_state.active_requests)
            if problem_with_job_id(request.id) is None
        }
        doomed = self.extension.store.terminations(list(requests))
        for job_id in doomed:
            logger.warning("hfcelery terminates deleted job %s", job_id)
            requests[job_id].terminate(self.worker.pool, signal="SIGTERM")
        return doomed

    def enqueue_due(self) -> int:
        """Enqueue the Scheduled jobs that are due, a batch at a time; return how many."""
        grace = timedelta(seconds=self.extension.config.publish_grace_seconds)
        store = self.extension.store
        total = self._in_batches(
            lambda size: store.enqueue_due(limit=size, grace=grace, publish=self._publish)
        )
        if total:
            logger.info("hfcelery enqueued %d scheduled job(s)", total)
        return total

    def clean_up(self) -> int:
        """Remove expired jobs (and Failed ones past their limits); return how many."""
        config = self.extension.config
        store = self.extension.store
        ttl = timedelta(seconds=max(config.cleanup_interval_seconds * 3, 60))
        if not store.try_lock(CLEANUP_LOCK, self.id, ttl):
            return 0
        # Count the history before any of it is deleted with its job.
        self.roll_up_statistics()
        seconds = config.failed_retention_seconds
        older_than = None if seconds is None else timedelta(seconds=seconds)
        removed = self._in_batches(
            lambda size: (
                store.delete_expired(limit=size)
                + store.trim_failed(older_than=older_than, keep=config.max_failed_jobs, limit=size)
            )
        )
        store.delete_orphan_progress()
        store.prune_statistics()
        if removed:
            logger.info("hfcelery removed %d expired job(s)", removed)
        store.trim_dropped_messages(timedelta(seconds=DROPPED_MESSAGES_KEPT_SECONDS))
        return removed

    def _in_batches(self, step: Callable[[int], int]) -> int:
        """Run ``step(batch_size)`` until it handles less than a full batch; return the total."""
        size = self.extension.config.maintenance_batch_size
        total = 0
        while not self._stopping.is_set():
            handled = step(size)
            total += handled
            if handled < size:
                break
        return total

    def _publish(self, dispatch: Dispatch) -> None:
        publish(self.extension.app, dispatch)

    def republish_lost(self) -> int:
        """Send again the Enqueued jobs whose message the broker lost; return how many.

        A job counts as lost when its message left ``hfcelery_republish_after_seconds`` ago,
        no worker has claimed it since, and its queue is empty at the broker: with messages
        still waiting there, its own may be among them (a backlog), so it waits. Each job is
        sent again at most once per period by this server; should the old message turn up
        after all, the claim runs one copy and skips the other.
        """
        after = self.extension.config.republish_after_seconds
        if after is None:
            return 0
        now = time.monotonic()
        self._republished = {k: t for k, t in self._republished.items() if now - t < after}
        stale = self.extension.store.stale_enqueued(
            timedelta(seconds=after), self.extension.config.maintenance_batch_size
        )
        by_queue: dict[str, list[Dispatch]] = {}
        for dispatch in stale:
            if dispatch.id not in self._republished:
                by_queue.setdefault(dispatch.queue, []).append(dispatch)
        sent = 0
        for queue, dispatches in by_queue.items():
            try:
                waiting = queue_length(self.extension.app, queue)
            except BROKER_UNAVAILABLE as exc:
                self.broker_health.failed(exc, "republish")
                break
            if waiting:
                continue
            for dispatch in dispatches:
                try:
                    self._publish(dispatch)
                except BROKER_UNAVAILABLE as exc:
                    self.broker_health.failed(exc, "republish")
                    return sent
                self._republished[dispatch.id] = now
                sent += 1
        if sent:
            logger.warning(
                "hfcelery sent %d job(s) again: Enqueued for over %.0f s, unclaimed, and their "
                "queue empty at the broker (the broker lost their messages)",
                sent,
                after,
            )
        return sent

    def _publish_now(self, job_ids: list[str]) -> None:
        """Send the jobs maintenance requeued itself, without the grace a client's publish gets;
        those not sent now are found by :meth:`publish_pending` later."""
        try:
            self.publish_pending(job_ids)
        except HfceleryError as exc:
            logger.warning("hfcelery could not publish requeued jobs now: %s", exc)

    def publish_pending(self, job_ids: list[str] | None = None) -> int:
        """Publish Enqueued jobs whose message may not have left (or the given ones); return how
        many were sent."""
        config = self.extension.config
        store = self.extension.store
        size = config.maintenance_batch_size
        sent: list[str] = []
        for start in range(0, len(job_ids), size) if job_ids is not None else (0,):
            ids = job_ids[start : start + size] if job_ids is not None else None
            grace = timedelta(seconds=config.publish_grace_seconds)
            if not self._publish_batch(store.unpublished_jobs(grace, size, ids), sent):
                break
        store.mark_published(sent)
        if sent:
            logger.info("hfcelery published %d pending job(s)", len(sent))
        return len(sent)

    def _publish_batch(self, pending: list[Dispatch], sent: list[str]) -> bool:
        """Publish ``pending``, adding what was sent to ``sent``; False if the broker is away."""
        store = self.extension.store
        for dispatch in pending:
            try:
                self._publish(dispatch)
            except BROKER_UNAVAILABLE as exc:  # try again on the next pass
                self.broker_health.failed(exc, "publish")
                return False
            except Exception as exc:  # this message cannot be sent at all: fail its job
                logger.error("hfcelery cannot publish job %s: %r", dispatch.id, exc)
                try:
                    store.fail_enqueued(
                        dispatch.id,
                        reason=storable_text(f"The job's message could not be sent: {exc!r}"),
                        data={"exception_type": type(exc).__qualname__},
                        transition="fail_unsendable",
                    )
                except HfceleryError:
                    logger.exception("hfcelery could not fail unsendable job %s", dispatch.id)
                continue
            self.broker_health.answered()
            sent.append(dispatch.id)
        return True

    def _spawn(self, name: str, step: Callable[[], object], interval: float) -> None:
        """Run ``step`` every ``interval`` seconds, or after as long as it returns (a float)."""

        def loop() -> None:
            wait = interval
            while not self._stopping.wait(wait):
                try:
                    result = step()
                except StoreUnavailableError as exc:  # an outage: one line, not a traceback
                    self.store_health.failed(exc, name)
                    result = None
                except BROKER_UNAVAILABLE as exc:
                    self.broker_health.failed(exc, name)
                    result = None
                except Exception:
                    logger.exception("hfcelery %s step failed; retrying", name)
                    result = None
                else:
                    self.store_health.answered()
                wait = result if isinstance(result, float) else interval

        thread = threading.Thread(target=loop, name=f"hfcelery-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)


def queue_length(app: Any, queue: str) -> int:
    """Messages ready in ``queue`` at the broker (see :func:`broker_queue_length`)."""
    with app.connection_for_write() as conn:
        return broker_queue_length(conn, queue)


def _running_job_ids() -> list[str]:
    """Ids of the jobs this worker runs now (a message whose id no job can have is left out:
    it has no row, and the store would refuse it)."""
    ids = (request.id for request in list(worker_state.active_requests))
    return [job_id for job_id in ids if problem_with_job_id(job_id) is None]
