"""``celery -A proj hf migrate`` against a new PostgreSQL database and a new SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfcelery.store import schema
from tests.conftest import ROOT, new_postgres_database


def migrate(store_url: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.app", "hf", "migrate"],
        cwd=ROOT,
        env={**os.environ, "HF_TEST_STORE_URL": store_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_migrate_postgresql() -> None:
    with new_postgres_database("hfcelery_cli") as url:
        head = schema.head_revision()
        assert f"migrated from empty to schema {head}" in migrate(url)
        assert f"up to date (schema {head})" in migrate(url)


def test_migrate_sqlite(tmp_path: Path) -> None:
    out = migrate(f"sqlite:///{tmp_path / 'cli.db'}")
    assert f"schema {schema.head_revision()}" in out
    assert (tmp_path / "cli.db").exists()


def run_hf(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.app", "hf", *args],
        cwd=ROOT,
        env={**os.environ, "HF_TEST_STORE_URL": store_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_sql_prints_the_ddl_a_dba_applies() -> None:
    from sqlalchemy import create_engine, inspect

    with new_postgres_database("hfcelery_cli") as url:
        printed = run_hf(url, "migrate", "--sql")
        assert printed.returncode == 0, printed.stderr
        assert "CREATE TABLE hfcelery_jobs" in printed.stdout
        engine = create_engine(url)
        assert inspect(engine).get_table_names() == []  # printed, not run
        with engine.begin() as conn:
            conn.exec_driver_sql(printed.stdout)  # what the DBA applies by hand
        engine.dispose()
        assert f"up to date (schema {schema.head_revision()})" in migrate(url)
        assert "up to date" in run_hf(url, "migrate", "--sql").stdout


def test_migrate_sql_on_sqlite_is_a_one_line_error(tmp_path: Path) -> None:
    ran = run_hf(f"sqlite:///{tmp_path / 'cli.db'}", "migrate", "--sql")
    assert ran.returncode != 0
    assert "migrates itself" in ran.stderr and "Traceback" not in ran.stderr


def test_migrate_with_the_store_unreachable_is_a_one_line_error() -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
    for args in (("migrate",), ("migrate", "--sql")):
        ran = run_hf(unreachable, *args)
        assert ran.returncode != 0
        assert "the store is unavailable" in ran.stderr, ran.stderr
        assert "Traceback" not in ran.stderr, ran.stderr


def test_a_store_migrated_by_a_newer_hfcelery_is_named_so_everywhere(tmp_path: Path) -> None:
    """A deploy rolled back onto a store a newer version migrated: `hf migrate` (and its
    `--sql`), the store's own check and the other commands say so in one line, instead of
    Alembic's traceback or advice to run `hf migrate`."""
    from sqlalchemy import create_engine, text

    import hfcelery
    from hfcelery.store import Store

    with new_postgres_database("hfcelery_cli") as url:
        for store_url in (url, f"sqlite:///{tmp_path / 'newer.db'}"):
            assert "schema" in migrate(store_url)
            engine = create_engine(store_url)
            with engine.begin() as conn:
                conn.execute(text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '9999'"))
            engine.dispose()
            for args in (("migrate",), ("migrate", "--sql"), ("stats",)):
                if store_url.startswith("sqlite") and args == ("migrate", "--sql"):
                    continue  # a SQLite store has no SQL to print
                ran = run_hf(store_url, *args)
                assert ran.returncode != 0, (args, ran.stdout)
                assert "at 9999, which this version of hfcelery does not know" in ran.stderr, (
                    args,
                    ran.stderr,
                )
                assert "Traceback" not in ran.stderr, ran.stderr
            store = Store(store_url)
            try:
                with pytest.raises(hfcelery.SchemaTooNewError, match="a newer hfcelery"):
                    store.state_counts()
            finally:
                store.dispose()
