"""The README's quick-start code, run as written against a real worker (only the broker URL is
pointed at the test Redis)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hfcelery.states import State
from hfcelery.store import Store
from tests.conftest import ROOT, wait_for

README_BROKER = "redis://127.0.0.1:6379/0"


def readme_block(label: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- readme-test: {re.escape(label)} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no block labelled {label!r}"
    return match.group(1)


@pytest.mark.acceptance
def test_readme_quick_start_runs(tmp_path: Path, redis_url: str) -> None:
    proj = readme_block("proj.py")
    assert README_BROKER in proj
    (tmp_path / "proj.py").write_text(proj.replace(README_BROKER, redis_url))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "proj", "worker", "-c", "1", "-l", "info",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    store = Store(f"sqlite:///{tmp_path / 'hfcelery.db'}")
    try:
        wait_for(lambda: store.servers(), timeout=60, what="the README's worker to start")
        client = subprocess.run(
            [sys.executable, "-c", readme_block("client")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        assert "Enqueued" in client.stdout or "Succeeded" in client.stdout

        def all_succeeded() -> bool:
            counts = store.state_counts()
            return counts[State.SUCCEEDED] == 4 and sum(counts.values()) == 4

        wait_for(all_succeeded, timeout=30, what=f"4 succeeded jobs\n{log_path.read_text()}")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        store.dispose()
    assert "Fire-and-forget" in log_path.read_text()
