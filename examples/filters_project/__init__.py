"""A Celery project with its own job filters: a tenant stamped on every job, jobs of suspended
tenants vetoed, and Failed jobs routed to an alert. See ``app.py`` and docs/filters.md."""
