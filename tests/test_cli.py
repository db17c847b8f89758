"""``celery -A proj hf migrate`` against a new PostgreSQL database and a new SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
