"""The job store: the only package that opens sessions and issues queries.

Every state change is a compare-and-set ``UPDATE`` on the job row followed by an ``INSERT`` into
its state history, in one transaction. The worker path costs two statements per job on
PostgreSQL (claim and finish, each a data-modifying CTE in autocommit mode) and four on SQLite.
One module per concern: ``base`` (engine, transactions), ``statements`` (the worker path's
prebuilt statements), ``jobs``, ``continuations``, ``recurring``, ``servers``, ``reads``,
``messages`` (invalid messages), ``search`` (the pages' lists), ``stats`` (statistics, progress
and log lines).

On PostgreSQL, transactions commit asynchronously (``synchronous_commit=off``) unless they are
marked durable: a crash of the database server may then forget the last fraction of a second of
commits, and each such loss is repaired rather than prevented. A lost job row is written again
from its message by the worker that receives it (:meth:`Store.claim`); a lost outcome leaves the
job Processing on a live server, which requeues it (:meth:`Store.requeue_orphans`); a lost claim
is recognised when the outcome is recorded (:meth:`Store.finish`). What has no other record (a
job whose message could not be sent, an operator's delete or requeue) commits durably.
"""

from __future__ import annotations

from hfcelery.store.base import BROKER_UNAVAILABLE, count_statements, normalise_url, utcnow
from hfcelery.store.jobs import JobStore
from hfcelery.store.messages import MessageStore
from hfcelery.store.reads import ReadStore
from hfcelery.store.recurring import RecurringStore
from hfcelery.store.search import SearchStore
from hfcelery.store.servers import ServerStore
from hfcelery.store.stats import StatisticsStore

__all__ = ["BROKER_UNAVAILABLE", "Store", "count_statements", "normalise_url", "utcnow"]


class Store(
    JobStore, RecurringStore, ServerStore, ReadStore, SearchStore, StatisticsStore, MessageStore
):
    """The job store over one SQLAlchemy engine.

    The engine is created lazily and again after a fork, so a store made in a prefork worker's
    parent is safe to use in its children. A SQLite store creates or upgrades its schema on first
    use; a PostgreSQL store must be migrated with ``celery hf migrate``.
    """
