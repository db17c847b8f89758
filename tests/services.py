"""Private services for fault tests: a PostgreSQL cluster of their own (initdb into a temporary
directory), which they may stop, crash and restart. The machine's shared services are never
touched.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from hfcelery.embedded import free_port

START_TIMEOUT_SECONDS = 60


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def postgres_available() -> str | None:
    """Why a private PostgreSQL cannot be started here, or None if it can."""
    for name in ("initdb", "pg_ctl"):
        if _postgres_bin(name) is None:
            return f"{name} was not found (install PostgreSQL's server package)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run the server as"
    return None


class PrivatePostgres:
    """A PostgreSQL server on 127.0.0.1 with its data in a temporary directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hfcelery-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = list(command)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            record = pwd.getpwnam("postgres")
            os.chown(self.root, record.pw_uid, record.pw_gid)
        initdb = _postgres_bin("initdb")
        assert initdb is not None
        self._run(
            initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        return self

    def start(self) -> None:
        pg_ctl = _postgres_bin("pg_ctl")
        assert pg_ctl is not None
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        done = self._run(
            pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
            "-t", str(START_TIMEOUT_SECONDS), "start", check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"private PostgreSQL did not start: {done.stderr}\n{self.logs()}")
        self._started = True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (a clean restart's first half) or ``immediate`` (a crash)."""
        pg_ctl = _postgres_bin("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop", check=False)
        self._started = False

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def destroy(self) -> None:
        if self._started:
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        self.init()
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()
