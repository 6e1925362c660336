"""Start and stop a throwaway PostgreSQL server for tests.

``initdb`` makes a cluster in a temporary directory and ``postgres`` serves it
on a free loopback port (and a Unix socket in the same directory), with
``fsync`` on as in production. Authentication is ``trust`` for the superuser
``postgres`` unless a password is asked for (then ``scram-sha-256``). Run as
root, the cluster's files belong to the ``postgres`` user and the server runs
as that user (PostgreSQL refuses to run as root). Readiness is checked with
``pg_isready`` in a polling loop bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from tests.redis_server import free_port

__all__ = ["PostgresServer", "PostgresServerError", "find_postgres_bin"]

#: How long a server may take to accept connections.
START_TIMEOUT = 30.0


class PostgresServerError(RuntimeError):
    """The test server could not be started."""


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or ``None`` when not installed.

    Debian keeps them in ``/usr/lib/postgresql/<version>/bin``, off the PATH.
    """
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [
        Path(path)
        for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        if Path(path).is_dir()
    ]
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return directory
    return None


class PostgresServer:
    """One ``postgres`` process on ``127.0.0.1``.

    :param password: the ``postgres`` user's password (then clients must send it).
    :param port: a fixed port (default: a free one).
    :param settings: extra ``-c name=value`` server settings.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        bindir = find_postgres_bin()
        if bindir is None:
            raise PostgresServerError("PostgreSQL (initdb, postgres) is not installed")
        self.bindir = bindir
        self.password = password
        self.port = port or free_port()
        self._may_change_port = port is None
        self.settings = dict(settings or {})
        self._tmp = tempfile.TemporaryDirectory(prefix="asyncjobs-pg-")
        self.dir = Path(self._tmp.name)
        self.data = self.dir / "data"
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: the files and the server are the postgres user's.
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresServerError("as root, the tests need a 'postgres' user") from exc
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self._process: subprocess.Popen[bytes] | None = None
        self._initdb()

    # -- addresses ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` superuser on the ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, database: str, *, user: str = "postgres", password: str | None = None) -> str:
        """The URL of *database* as *user* (with the server's password by default)."""
        secret = self.password if password is None else password
        auth = quote(user, safe="") + (f":{quote(secret, safe='')}" if secret else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    # -- lifecycle ------------------------------------------------------------

    def _run(self, *args: str) -> None:
        subprocess.run(
            args, check=True, capture_output=True, cwd=self.dir, **self._user
        )  # the user switch needs root, which is when it is set

    def _initdb(self) -> None:
        options = ["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync"]
        if self.password:
            pwfile = self.dir / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self._user:
                os.chown(pwfile, self._user["user"], self._user["group"])
            options = [
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ]
        try:
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), *options)
        except subprocess.CalledProcessError as exc:
            raise PostgresServerError(
                f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}"
            ) from exc

    def start(self) -> None:
        """Start the server (again) and return once it accepts connections.

        :raises PostgresServerError: when it exits or does not come up in time.
        """
        if self.running:
            return
        for _ in range(3):
            try:
                self._start_once()
            except PostgresServerError:
                if not self._may_change_port or "could not bind" not in self.log():
                    raise
                self.port = free_port()
            else:
                self._may_change_port = False
                return
        raise PostgresServerError("postgres found no free port")

    def _start_once(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "fsync": "on",
            "max_connections": "300",
            "shared_buffers": "64MB",
            **self.settings,
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 (closed with the process)
        try:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, **self._user
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self._process.poll() is not None:
                raise PostgresServerError(
                    f"postgres exited with {self._process.returncode}: {self.log()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise PostgresServerError(f"postgres did not come up in {START_TIMEOUT}s")
            time.sleep(0.05)  # bounded polling for a process to come up: no event to wait on

    def _ready(self) -> bool:
        result = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while running."""
        return self._process.pid if self.running and self._process is not None else None

    def stop(self) -> None:
        """Stop the server fast (SIGINT: roll back open transactions, shut down cleanly)."""
        self._end(signal.SIGINT)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL to the postmaster and its children)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        children = _children(process.pid)
        process.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
        # The next start must not find the old shared memory attached.
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def restart(self, *, hard: bool = True) -> None:
        """Kill (or stop) the server and start it again on the same port and files."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        self.kill()
        self._tmp.cleanup()

    def log(self) -> str:
        """The server's log so far."""
        path = self.dir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, running={self.running})"


def _children(pid: int) -> list[int]:
    """The direct children of *pid* (the backends of a postmaster), from ``/proc``."""
    found: list[int] = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields and int(fields[1]) == pid:
            found.append(int(Path(stat).parent.name))
    return found
