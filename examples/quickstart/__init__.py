"""The quick start: all of hfcelery on an embedded Redis and a SQLite store (``make demo``)."""
