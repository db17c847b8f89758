"""Recurring (cron) jobs: definitions in the store, fired through RedBeat by ``hfcelery.beat``."""

from hfcelery.recurring.cron import Cron, CronExpression, MisfireHandling
from hfcelery.recurring.manager import RecurringJob, RecurringJobManager

__all__ = ["Cron", "CronExpression", "MisfireHandling", "RecurringJob", "RecurringJobManager"]
