"""``celery -A proj hf migrate`` against a new PostgreSQL database and a new SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hfcelery.store import schema
from tests.conftest import PG_ADMIN_URL, ROOT, service_missing


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
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"hfcelery_cli_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        service_missing("PostgreSQL", exc)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        head = schema.head_revision()
        assert f"migrated from empty to schema {head}" in migrate(url)
        assert f"up to date (schema {head})" in migrate(url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migrate_sqlite(tmp_path: Path) -> None:
    out = migrate(f"sqlite:///{tmp_path / 'cli.db'}")
    assert f"schema {schema.head_revision()}" in out
    assert (tmp_path / "cli.db").exists()
