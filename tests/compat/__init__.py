"""Celery's own integration suite against hfcelery (``make compat``); see ``suite.py``."""
