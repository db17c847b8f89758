"""The distribution: what the wheel and sdist hold, and a wheel that installs and runs.

The wheel is installed into a fresh virtual environment, away from this checkout, where
``celery hf migrate`` and one job end to end (a real worker, the real Redis) run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"},
    )
    return out


def tracked_package_files() -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "hfcelery"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return {name for name in listed if (ROOT / name).is_file()}


def test_wheel_holds_every_package_file_and_nothing_else(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = tracked_package_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert any(n.startswith("hfcelery/store/migrations/versions/0001") for n in names)
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n or ".pyc" in n]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: MIT" in text
    assert "Provides-Extra: postgres" in text


def test_sdist_holds_the_package_and_no_tests_or_caches(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert tracked_package_files() <= names
    assert {"pyproject.toml", "README.md", "LICENSE"} <= names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]


def test_wheel_installs_and_runs_a_job_in_a_fresh_environment(
    dist: Path, tmp_path: Path, redis_url: str
) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{wheel}[embedded]"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    project = tmp_path / "project"
    project.mkdir()
    (project / "proj.py").write_text(
        textwrap.dedent(
            f"""
            from celery import Celery
            import hfcelery

            app = Celery("proj", broker={redis_url!r})
            app.conf.task_default_queue = "packaging-{os.getpid()}"
            hfcelery.init_app(
                app, store_url="sqlite:///{project / "store.db"}", allowed_modules=["proj"]
            )


            def shout(text):
                return text.upper()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    celery = [str(python), "-m", "celery", "-A", "proj"]
    migrated = subprocess.run(
        [*celery, "hf", "migrate"], cwd=project, env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "schema" in migrated.stdout
    where = subprocess.run(
        [str(python), "-c", "import hfcelery; print(hfcelery.__file__)"],
        cwd=project, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(venv) in where  # the wheel's copy, not this checkout's
    worker = subprocess.Popen(
        [*celery, "worker", "-P", "solo", "-l", "info", "--without-gossip", "--without-mingle"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        script = textwrap.dedent(
            """
            import time
            import hfcelery
            from hfcelery import BackgroundJob, call
            from proj import app, shout

            job_id = BackgroundJob.enqueue(call(shout, "hello"))
            api = hfcelery.monitoring(app)
            deadline = time.monotonic() + 60
            while api.job(job_id).state.value != "Succeeded":
                assert time.monotonic() < deadline, api.job(job_id)
                time.sleep(0.2)
            print(api.job(job_id).history[-1].data["result"])
            """
        )
        started = time.monotonic()
        ran = subprocess.run(
            [str(python), "-c", script], cwd=project, env=env, capture_output=True, text=True
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "HELLO"
        assert time.monotonic() - started < 90
    finally:
        worker.terminate()
        worker.wait(timeout=30)
