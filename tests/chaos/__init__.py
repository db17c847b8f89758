"""``make chaos``: jobs under faults, on services of the suite's own."""
