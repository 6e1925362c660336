"""Start and stop a throwaway ``redis-server`` for tests.

The server listens on a free loopback port and keeps its files in a
temporary directory. Persistence is off unless asked for (``appendonly``,
``save``), so a test that needs durability says so. Readiness is checked by
sending ``PING`` over a raw socket (a ``NOAUTH`` reply counts too: the
server is up), in a polling loop bounded by a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

__all__ = ["RedisServer", "RedisServerError", "find_redis_server", "free_port"]

#: How long a server may take to answer its first PING.
START_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    """The test server could not be started."""


def find_redis_server() -> str | None:
    """Return the path of ``redis-server``, or ``None`` when it is not installed."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1``.

    :param password: the ``default`` user's password (``requirepass``).
    :param users: ACL rules, one ``user ...`` line each without the leading
        ``user`` word, e.g. ``"alice on >secret ~app:* &app:* +@all -@dangerous"``.
    :param appendonly: turn the append-only file on.
    :param appendfsync: the AOF fsync policy (``always``, ``everysec``, ``no``).
    :param save: RDB snapshot rules (``""`` turns snapshots off).
    :param port: a fixed port (default: a free one).
    :param unixsocket: also listen on a Unix socket in the server's directory.
    :param tls: serve TLS only, with a throwaway CA and certificate made by the
        ``openssl`` command (see :attr:`ca_file` and :attr:`tls_url`).
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        users: Sequence[str] = (),
        appendonly: bool = False,
        appendfsync: str = "everysec",
        save: str = "",
        port: int | None = None,
        unixsocket: bool = False,
        tls: bool = False,
    ) -> None:
        executable = find_redis_server()
        if executable is None:
            raise RedisServerError("redis-server is not installed")
        self.executable = executable
        self.password = password
        self.users = list(users)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.save = save
        self.port = port or free_port()
        # A free port can be taken between free_port() and the server's bind:
        # a port we picked may be replaced on the first start, a given one never.
        self._may_change_port = port is None
        self._tmp = tempfile.TemporaryDirectory(prefix="asyncjobs-redis-")
        self.dir = Path(self._tmp.name)
        self.socket_path = self.dir / "redis.sock" if unixsocket else None
        self.tls = tls
        self.ca_file = self.dir / "ca.crt"
        if tls:
            self._make_certificates()
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL of the ``default`` user (with its password, if any)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """The ``unix://`` URL of the server's socket (``unixsocket=True`` only)."""
        if self.socket_path is None:
            raise RedisServerError("this server was started without a Unix socket")
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}"

    @property
    def tls_url(self) -> str:
        """The ``rediss://`` URL, trusting the throwaway CA (``tls=True`` only)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.ca_file))}"

    def url_for(self, user: str, password: str) -> str:
        """The URL that logs in as ACL *user* with *password*."""
        return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/0"

    # -- lifecycle ------------------------------------------------------------

    def _make_certificates(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RedisServerError("a TLS test server needs the openssl command")

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], cwd=self.dir, check=True, capture_output=True)

        run(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=asyncjobs test CA", "-keyout", "ca.key", "-out", "ca.crt",
        )  # fmt: skip
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr",
        )  # fmt: skip
        (self.dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.crt",
        )  # fmt: skip

    def _write_config(self) -> Path:
        if self.tls:
            listen = [
                "port 0",
                f"tls-port {self.port}",
                f'tls-cert-file "{self.dir / "server.crt"}"',
                f'tls-key-file "{self.dir / "server.key"}"',
                f'tls-ca-cert-file "{self.ca_file}"',
                "tls-auth-clients no",
            ]
        else:
            listen = [f"port {self.port}"]
        lines = [
            *listen,
            "bind 127.0.0.1",
            f'dir "{self.dir}"',
            f'logfile "{self.dir / "redis.log"}"',
            f'save "{self.save}"',
            f"appendonly {'yes' if self.appendonly else 'no'}",
            f"appendfsync {self.appendfsync}",
            "daemonize no",
        ]
        if self.socket_path is not None:
            lines += [f'unixsocket "{self.socket_path}"', "unixsocketperm 700"]
        if self.password:
            lines.append(f'requirepass "{self.password}"')
        lines.extend(f"user {rule}" for rule in self.users)
        config = self.dir / "redis.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> None:
        """Start the server (again) and return once it answers PING.

        :raises RedisServerError: when it exits or does not answer in time.
        """
        if self.running:
            return
        for _ in range(3):
            try:
                self._start_once()
            except RedisServerError:
                if not self._may_change_port or "Address already in use" not in self.log():
                    raise
                self.port = free_port()
            else:
                self._may_change_port = False
                return
        raise RedisServerError("redis-server found no free port")

    def _start_once(self) -> None:
        config = self._write_config()
        self._process = subprocess.Popen(
            [self.executable, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers_ping():
            if self._process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self._process.returncode}: {self.log()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RedisServerError(f"redis-server did not answer PING in {START_TIMEOUT}s")
            time.sleep(0.01)  # bounded polling for a process to come up: no event to wait on

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                if self.tls:
                    context = ssl.create_default_context(cafile=str(self.ca_file))
                    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                        sock.sendall(b"PING\r\n")
                        reply = sock.recv(64)
                else:
                    raw.sendall(b"PING\r\n")
                    reply = raw.recv(64)
        except OSError:
            return False
        # "+PONG", or "-NOAUTH ..." from a server with a password: either way it is up.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM), killing it if it hangs."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): only what reached its files survives."""
        self._end(signal.SIGKILL)

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
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and delete its files."""
        self.kill()
        self._tmp.cleanup()

    def log(self) -> str:
        """The server's log so far."""
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> RedisServer:
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
        return f"RedisServer(port={self.port}, running={self.running})"
