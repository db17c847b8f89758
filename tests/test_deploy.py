"""deploy/: every file parses, has what an operator relies on, and names only commands that run.

Each command named in the compose file, the Kubernetes manifests and the systemd units is run
with ``--help`` against the installed package, and the units are checked by
``systemd-analyze verify`` where that tool is present.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI, ROOT

DEPLOY = ROOT / "deploy"
APP = "examples.quickstart.app"
LONGEST_JOB_SECONDS = 300


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def manifests() -> list[dict[str, Any]]:
    return [
        d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "hfcelery.yaml").read_text()) if d
    ]


def units() -> dict[str, str]:
    return {p.name: p.read_text() for p in (DEPLOY / "systemd").glob("*.service")}


def _substitute(word: str) -> str:
    return re.sub(r"\$\(CELERY_APP\)|\$\{CELERY_APP\}|\$CELERY_APP", APP, word)


def named_commands() -> list[list[str]]:
    """Every ``celery ...`` command the deploy files run, as argument lists."""
    commands: list[list[str]] = []
    for service in compose()["services"].values():
        for command in (service.get("command"), service.get("healthcheck", {}).get("test")):
            if isinstance(command, list) and "celery" in command:
                commands.append(command[command.index("celery") :])
    for doc in manifests():
        for container in (
            doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            commands.append(container["command"])
            probe = container.get("livenessProbe", {}).get("exec", {}).get("command")
            if probe:
                commands.append(shlex.split(probe[-1]))
    for text in units().values():
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.removeprefix("ExecStart="))
                commands.append(["celery", *argv[1:]])
    return [[_substitute(word) for word in command] for command in commands]


def help_invocation(command: list[str]) -> list[str]:
    """``celery -A app sub [sub ...] --help`` for a named command."""
    assert command[:2] == ["celery", "-A"], command
    words = command[3:]
    subcommands = []
    for word in words:
        if word.startswith("-"):
            break
        subcommands.append(word)
    return [sys.executable, "-m", "celery", "-A", command[2], *subcommands, "--help"]


def test_compose_has_the_production_shape() -> None:
    services = compose()["services"]
    assert {
        "redis",
        "postgres",
        "migrate",
        "worker-1",
        "worker-2",
        "beat-1",
        "beat-2",
        "flower",
    } <= set(services)
    for name in ("redis", "postgres", "worker-1", "worker-2", "flower"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"][-2:] == ["hf", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker-1", "worker-2", "beat-1", "beat-2", "flower"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    for name in ("worker-1", "worker-2"):
        assert services[name]["stop_signal"] == "SIGTERM"
        assert str(LONGEST_JOB_SECONDS) in services[name]["stop_grace_period"]
    for name in ("beat-1", "beat-2"):
        assert "hfcelery.beat:RecurringScheduler" in services[name]["command"]
    assert services["flower"]["command"][3:5] == ["hf", "flower"]


def test_kubernetes_manifests_have_probes_grace_and_two_beats() -> None:
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in manifests()}
    assert ("Job", "hfcelery-migrate") in by_name
    worker = by_name[("Deployment", "hfcelery-worker")]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] == LONGEST_JOB_SECONDS
    assert "livenessProbe" in worker["containers"][0]
    beat = by_name[("Deployment", "hfcelery-beat")]
    assert beat["spec"]["replicas"] == 2
    pages = by_name[("Deployment", "hfcelery-pages")]["spec"]["template"]["spec"]["containers"][0]
    assert {"readinessProbe", "livenessProbe"} <= set(pages)
    assert ("Service", "hfcelery-pages") in by_name


def test_systemd_units_warm_shutdown_fits_the_longest_job() -> None:
    worker = units()["hfcelery-worker@.service"]
    assert "KillSignal=SIGTERM" in worker
    assert f"TimeoutStopSec={LONGEST_JOB_SECONDS}" in worker


def test_every_setting_the_files_use_is_documented_in_one_place() -> None:
    documented = set(
        re.findall(r"^([A-Z_]+)=", (DEPLOY / "hfcelery.env.example").read_text(), re.M)
    )
    used: set[str] = set()
    for path in [
        DEPLOY / "docker-compose.yml",
        *DEPLOY.glob("kubernetes/*.yaml"),
        *DEPLOY.glob("systemd/*"),
    ]:
        used |= set(re.findall(r"\$\{?\(?([A-Z][A-Z_]+)", path.read_text()))
    used -= {"HOSTNAME", "POD_NAME", "POSTGRES_PASSWORD", "WORKER_STOP_GRACE"}
    assert used <= documented, used - documented
    readme = (DEPLOY / "README.md").read_text()
    assert all(name in readme for name in documented)


@pytest.mark.parametrize("command", named_commands(), ids=lambda c: " ".join(c[3:6]))
def test_every_named_command_runs_with_help(command: list[str]) -> None:
    env = {
        **os.environ,
        "CELERY_BROKER_URL": "memory://",
        "HFCELERY_STORE_URL": "sqlite:///unused.db",
    }
    ran = subprocess.run(
        help_invocation(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "Usage" in ran.stdout or "usage" in ran.stdout


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if IN_CI:
            pytest.fail("systemd-analyze is not installed")
        pytest.skip("systemd-analyze is not installed here")
    celery = Path(sys.executable).with_name("celery")
    for name, text in units().items():
        (tmp_path / name).write_text(text.replace("/srv/hfcelery/.venv/bin/celery", str(celery)))
    ran = subprocess.run(
        [analyze, "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
    )
    problems = [line for line in (ran.stdout + ran.stderr).splitlines() if "hfcelery" in line]
    assert ran.returncode == 0 and not problems, ran.stdout + ran.stderr
