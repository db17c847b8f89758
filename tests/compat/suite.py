"""Celery's own integration suite, run plainly and with hfcelery loaded (``make compat``).

The suite's files (``t/integration`` and the helpers it imports) come from the sdist of the
installed Celery, which ``pip download`` fetches once into ``.compat/`` (git-ignored; ``make
install`` does it). Each run starts Celery's own in-process worker (the suite's
``celery_session_worker``, prefork pool) with a real Redis as broker and result backend (a
private ``redis-server``, so that nothing shared is emptied); the hfcelery run adds
``hfcelery.init_app`` to every app the suite creates, with a new PostgreSQL database as the
store. The two runs go at the same time, and each records each test's outcome; a test whose
outcome differs fails ``make compat`` unless ``docs/celery-compat.md`` lists it with the
reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".compat"
KNOWN_DIFFERENCES = ROOT / "docs" / "celery-compat.md"
#: The runs use databases 12 and 13 of one Redis server, emptied before each run: by default a
#: private ``redis-server`` started for the comparison; ``HF_COMPAT_REDIS_URL`` names another.
PLAIN_DB, HFCELERY_DB = 12, 13
PG_ADMIN_URL = os.environ.get(
    "HF_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

#: What ``make compat`` runs: the tasks, canvas and inspect parts of the suite.
FULL = (
    "t/integration/test_tasks.py",
    "t/integration/test_canvas.py",
    "t/integration/test_inspect.py",
)

#: The short subset ``make test`` runs: the mechanisms an existing project relies on that
#: hfcelery's delivery tracking touches (replacement, re-used ids, Reject, retries, class-based
#: tasks, chords re-dispatching their body, errbacks, inspect).
SHORT = (
    "t/integration/test_tasks.py::test_task_replacement",
    "t/integration/test_tasks.py::test_class_based_tasks",
    "t/integration/test_tasks.py::test_tasks::test_reject_with_requeue_redelivers_and_succeeds",
    "t/integration/test_tasks.py::test_tasks::test_task_accepted",
    "t/integration/test_tasks.py::test_tasks::test_task_retried_once",
    "t/integration/test_tasks.py::test_tasks::test_ignore_result",
    "t/integration/test_tasks.py::test_tasks::test_properties",
    "t/integration/test_canvas.py::test_chord::test_reapplying_frozen_chord_dispatches_body_again",
    "t/integration/test_canvas.py::test_chain::test_chain_child_replaced_with_chain_first",
    "t/integration/test_canvas.py::test_chain::test_chain_with_eb_replaced_with_chain_with_eb",
    "t/integration/test_canvas.py::test_group::test_callback_called_by_group",
    "t/integration/test_canvas.py::test_chord::test_mutable_errback_called_by_chord_from_simple",
    "t/integration/test_inspect.py",
)

PYTEST_INI = """\
[pytest]
# As Celery's own pyproject.toml: its test classes are named test_*.
python_classes = test_*
xfail_strict = true
markers =
    flaky
    timeout
    amqp
    celery
"""


class SuiteUnavailable(RuntimeError):
    """Celery's sdist could not be fetched (no index reachable, say)."""


def celery_version() -> str:
    from importlib.metadata import version

    return version("celery")


def suite_dir(version: str | None = None) -> Path:
    return CACHE / f"celery-{version or celery_version()}"


def fetch(version: str | None = None) -> Path:
    """The installed Celery's integration suite, fetched from its sdist on first use."""
    version = version or celery_version()
    target = suite_dir(version)
    if (target / "t" / "integration" / "conftest.py").exists():
        return target
    CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as download:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-binary", ":all:",
             f"celery=={version}", "--dest", download],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        archives = list(Path(download).glob(f"celery-{version}.tar.gz"))
        if done.returncode != 0 or not archives:
            raise SuiteUnavailable(
                f"pip could not download the sdist of celery=={version}: "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        staging = Path(download) / "suite"
        prefix = f"celery-{version}/"
        wanted = ("t/__init__.py", "t/canvas_helpers.py", "t/skip.py", "t/integration/", "LICENSE")
        with tarfile.open(archives[0]) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(wanted)
            ]
            for member in members:
                member.name = member.name[len(prefix) :]
            tar.extractall(staging, members=members, filter="data")
        (staging / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
        staging.rename(target)
    return target


# -- the known differences -------------------------------------------------------------------

_ENTRY = re.compile(r"^- `(?P<test>t/integration/[^`]+)`(?P<rest>.*)$")


def known_differences(path: Path = KNOWN_DIFFERENCES) -> dict[str, str]:
    """Test id -> reason, from the list items of ``docs/celery-compat.md`` that start with a
    test id in backticks (the reason goes on over the item's indented lines). An entry without
    a reason is an error."""
    entries: dict[str, str] = {}
    current: str | None = None
    starts: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _ENTRY.match(line)
        if match:
            current = match["test"]
            entries[current] = match["rest"].strip(" :-\u2013\u2014")
            starts[current] = number
        elif current is not None and line.startswith("  ") and line.strip():
            entries[current] = f"{entries[current]} {line.strip()}".strip()
        else:
            current = None
    for test, reason in entries.items():
        if not reason:
            raise ValueError(f"{path.name}:{starts[test]}: {test} is listed without a reason")
    return entries


# -- running the suite -----------------------------------------------------------------------


@dataclass
class Run:
    name: str
    outcomes: dict[str, str]
    returncode: int
    log: Path

    def count(self, outcome: str) -> int:
        return sum(1 for value in self.outcomes.values() if value == outcome)

    def summary(self) -> str:
        order = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
        return ", ".join(f"{self.count(o)} {o}" for o in order if self.count(o))


@contextmanager
def new_store_database() -> Iterator[str]:
    """A new, migrated PostgreSQL database for the hfcelery run, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from hfcelery.store import Store

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"hfcelery_compat_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        store = Store(url)
        store.migrate()
        store.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def suite_redis() -> Iterator[str]:
    """The Redis server of a comparison (its URL without a database number)."""
    given = os.environ.get("HF_COMPAT_REDIS_URL")
    if given:
        yield given.rstrip("/")
        return
    from hfcelery.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        yield f"redis://127.0.0.1:{server.port}"


def _clear(redis_url: str) -> None:
    """Empty the run's own Redis database (12 or 13), so that no message of an earlier,
    interrupted run is delivered into this one."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


#: The runs under way (see :func:`compare`, which stops them if it is interrupted).
_RUNNING: set[subprocess.Popen[bytes]] = set()


def run_suite(
    name: str,
    tests: Sequence[str],
    *,
    redis: str,
    db: int,
    store_url: str | None,
    extra_args: Sequence[str] = (),
    timeout: float = 3600,
) -> Run:
    """Run ``tests`` of the suite once; ``store_url`` set means with hfcelery loaded."""
    suite = fetch()
    redis_url = f"{redis}/{db}"
    _clear(redis_url)
    report = CACHE / f"outcomes-{name}.json"
    log = CACHE / f"{name}.log"
    report.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        TEST_BROKER=redis_url,
        TEST_BACKEND=redis_url,
        HFCELERY_COMPAT_REDIS_URL=redis_url,
        HFCELERY_COMPAT_REPORT=str(report),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(suite)]),
    )
    env.pop("HFCELERY_COMPAT_STORE_URL", None)
    if store_url:
        env["HFCELERY_COMPAT_STORE_URL"] = store_url
    cmd = [
        sys.executable, "-m", "pytest", "-c", str(suite / "pytest.ini"), "--rootdir", str(suite),
        "-p", "celery.contrib.pytest", "-p", "tests.compat.plugin", "-p", "no:cacheprovider",
        "-q", "-rfE", "--timeout", "300", *extra_args, *tests,
    ]  # fmt: skip
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(cmd, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT)
        _RUNNING.add(process)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
            out.write(f"\nhfcelery compat: the run took longer than {timeout:.0f} s\n")
        finally:
            _RUNNING.discard(process)
    outcomes = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return Run(name, outcomes, returncode, log)


@dataclass
class Comparison:
    plain: Run
    hfcelery: Run
    known: dict[str, str]
    #: test id -> (plain outcome, hfcelery outcome), for every test whose outcome differs.
    differences: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for test in sorted(set(self.plain.outcomes) | set(self.hfcelery.outcomes)):
            pair = (
                self.plain.outcomes.get(test, "not run"),
                self.hfcelery.outcomes.get(test, "not run"),
            )
            if _same(*pair):
                continue
            self.differences[test] = pair

    @property
    def unexplained(self) -> dict[str, tuple[str, str]]:
        return {t: pair for t, pair in self.differences.items() if t not in self.known}

    @property
    def explained(self) -> dict[str, tuple[str, str]]:
        return {t: pair for t, pair in self.differences.items() if t in self.known}

    @property
    def stale(self) -> list[str]:
        """Listed differences that ran here and no longer differ."""
        ran = set(self.plain.outcomes) & set(self.hfcelery.outcomes)
        return sorted(t for t in self.known if t in ran and t not in self.differences)

    @property
    def ok(self) -> bool:
        return bool(self.plain.outcomes) and bool(self.hfcelery.outcomes) and not self.unexplained

    def report(self) -> str:
        lines = [
            f"Celery {celery_version()} integration suite: {len(self.plain.outcomes)} tests",
            f"  plain Celery:      {self.plain.summary() or 'nothing ran'}  (log {self.plain.log})",
            f"  hfcelery loaded:   {self.hfcelery.summary() or 'nothing ran'}"
            f"  (log {self.hfcelery.log})",
        ]
        if self.differences:
            width = max(len(t) for t in self.differences)
            lines.append("")
            lines.append(f"{'test':<{width}}  {'plain':<8}  {'hfcelery':<8}  listed")
            for test, (plain, hf) in self.differences.items():
                listed = "yes" if test in self.known else "NO"
                lines.append(f"{test:<{width}}  {plain:<8}  {hf:<8}  {listed}")
        else:
            lines.append("Every test has the same outcome in both runs.")
        for test in self.stale:
            lines.append(
                f"note: {test} is listed in {KNOWN_DIFFERENCES.name} but no longer differs"
            )
        if self.unexplained:
            lines.append(
                f"FAILED: {len(self.unexplained)} test(s) differ and are not listed in "
                f"{KNOWN_DIFFERENCES.relative_to(ROOT)}"
            )
        elif not (self.plain.outcomes and self.hfcelery.outcomes):
            lines.append("FAILED: a run recorded no outcomes; see its log")
        return "\n".join(lines)


def _same(plain: str, hf: str) -> bool:
    # A skip is a skip, whatever the reason; "error" and "failed" are both a failure.
    failing = {"failed", "error"}
    return plain == hf or (plain in failing and hf in failing)


def compare(tests: Sequence[str], *, extra_args: Sequence[str] = (), reruns: int = 1) -> Comparison:
    """Run ``tests`` plainly and with hfcelery, then run the tests whose outcome differed once
    more both ways (``reruns``): a difference counts when it comes back; one that does not is
    reported as unstable in the run it came from, not hidden."""
    known = known_differences()
    fetch()  # once, before the two runs start
    with new_store_database() as store_url, suite_redis() as redis:

        def both(name: str, tests: Sequence[str], extra: Sequence[str] = ()) -> tuple[Run, Run]:
            """The plain run and the hfcelery run at once: each waits on its worker most of
            the time, and they share nothing but the Redis server (databases of their own;
            kombu prefixes its broadcasts with the database)."""
            with ThreadPoolExecutor(max_workers=2) as pool:
                plain = pool.submit(
                    run_suite, f"plain{name}", tests, redis=redis, db=PLAIN_DB, store_url=None,
                    extra_args=extra,
                )  # fmt: skip
                hf = pool.submit(
                    run_suite, f"hfcelery{name}", tests, redis=redis, db=HFCELERY_DB,
                    store_url=store_url, extra_args=extra,
                )  # fmt: skip
                try:
                    return plain.result(), hf.result()
                except BaseException:  # interrupted (make test's timeout): stop both runs
                    for process in list(_RUNNING):
                        process.kill()
                    raise

        plain, hf = both("", tests, extra_args)
        comparison = Comparison(plain, hf, known)
        for attempt in range(1, reruns + 1):
            retry = sorted(comparison.unexplained)
            if not retry:
                break
            again_plain, again_hf = both(f"-rerun{attempt}", retry)
            for test in retry:
                pair = (
                    again_plain.outcomes.get(test, "not run"),
                    again_hf.outcomes.get(test, "not run"),
                )
                if _same(*pair):
                    print(
                        f"unstable: {test} was {comparison.differences[test]} (plain, hfcelery), "
                        f"then {pair} when run again; counted as the same outcome",
                        file=sys.stderr,
                    )
                    plain.outcomes[test], hf.outcomes[test] = pair
            comparison = Comparison(plain, hf, known)
    return comparison


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="make compat", description="Celery's integration suite, plainly and with hfcelery."
    )
    parser.add_argument("--short", action="store_true", help="the short subset make test runs")
    parser.add_argument("--fetch", action="store_true", help="only fetch the suite and stop")
    parser.add_argument("tests", nargs="*", help="suite paths or node ids (default: the full set)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    args = parser.parse_args(argv)
    try:
        path = fetch()
    except SuiteUnavailable as exc:
        print(f"make compat: {exc}", file=sys.stderr)
        return 2
    if args.fetch:
        print(f"Celery's integration suite is in {path.relative_to(ROOT)}")
        return 0
    tests = args.tests or (SHORT if args.short else FULL)
    extra = ["-k", args.keyword] if args.keyword else []
    comparison = compare(tests, extra_args=extra)
    print(comparison.report())
    return 0 if comparison.ok else 1
