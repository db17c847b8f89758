# The first command on a fresh checkout may be any target: each one installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench compat chaos lint clean

install: $(STAMP)

# The build backend's notes on editable installs are not problems: PYTHONWARNINGS keeps the
# install quiet when all is well.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet \
		--disable-pip-version-check -e '.[dev]' 
	@# Celery's own integration suite, from the installed Celery's sdist (make compat; a short
	@# part runs in make test, which reports it if this download failed).
	-$(BIN)/python -m tests.compat --fetch
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m examples.quickstart --serve

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.pages $(BENCH_PAGES_ARGS)

# Celery's integration suite (tasks, canvas, inspect), plainly and with hfcelery, side by side.
compat: $(STAMP)
	$(BIN)/python -m tests.compat $(COMPAT_ARGS)

# Jobs under faults (workers killed, Redis and PostgreSQL restarted, an outage, a crash), on
# services of its own; prints the account of every job. CHAOS_ARGS=--short: the make test one.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .compat .chaos .pytest_cache .mypy_cache .ruff_cache build *.egg-info
