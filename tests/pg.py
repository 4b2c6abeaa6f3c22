"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, run as the ``postgres`` user.

``initdb`` and ``pg_ctl`` refuse root, so they run through ``runuser -u postgres``; the data folder and the
Unix socket are in a temporary folder owned by ``postgres`` (not under pytest's tmp dirs, which only root may
enter). The cluster listens on its socket and on 127.0.0.1 at a free port (for the tests that need TCP: a
proxy that cuts a connection, a password login from the install chroot). Outages are real: ``stop()``,
``start()`` and ``restart("immediate")`` are ``pg_ctl`` itself.

Each test gets its own schema (``Cluster.schema()``): an index URL whose ``search_path`` is a fresh schema of
the one database, so tests start empty without the cost of CREATE DATABASE.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import psycopg

from tests.servers import free_port

DATABASE = "mospool"
SUPERUSER = "postgres"
_schemas = itertools.count(1)


def server_binaries() -> Path:
    """The folder of initdb and pg_ctl: Debian's /usr/lib/postgresql/<version>/bin (not on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path is None:
        raise RuntimeError("no PostgreSQL server: scripts/test installs Debian's postgresql package")
    return Path(on_path).resolve().parent


class Cluster:
    def __init__(self, parent: Path | None = None) -> None:
        """``parent``: where its folder goes (default: the temp dir); the postgres user must reach it."""
        self.bin = server_binaries()
        self.holder = Path(tempfile.mkdtemp(prefix="mospool-pg-", dir=parent))
        self.data = self.holder / "data"
        self.socket_dir = self.holder / "run"
        self.log = self.holder / "server.log"
        self.port = free_port()
        self.socket_dir.mkdir()
        shutil.chown(self.holder, SUPERUSER, SUPERUSER)
        shutil.chown(self.socket_dir, SUPERUSER, SUPERUSER)

    def as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", SUPERUSER, "--", *args], capture_output=True, text=True, check=True, cwd="/"
        )

    def init(self) -> Cluster:
        self.as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "--auth-local=trust", "--auth-host=scram-sha-256",
            "--username", SUPERUSER, "--encoding=UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\nmax_connections = 300\n"
                "synchronous_commit = on\nfsync = on\n"
            )
        self.start()
        with self.connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        return self

    def start(self) -> None:
        self.as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self.as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "restart"
        )

    def running(self) -> bool:
        status = subprocess.run(
            ["runuser", "-u", SUPERUSER, "--", str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            cwd="/",
        )
        return status.returncode == 0

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.holder, ignore_errors=True)

    # --- connecting

    def url(self, database: str = DATABASE, schema: str | None = None) -> str:
        """A libpq URL over the Unix socket, as the postgres superuser (trust), optionally in a schema."""
        query = {"host": str(self.socket_dir), "port": str(self.port)}
        if schema:
            query["options"] = f"-csearch_path={schema}"
        return f"postgresql://{SUPERUSER}@/{database}?{urllib.parse.urlencode(query)}"

    def connect(
        self, database: str = DATABASE, schema: str | None = None
    ) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(database, schema), autocommit=True)

    def schema(self) -> str:
        """A fresh, empty schema; returns an index URL that works in it."""
        name = f"t{next(_schemas)}"
        with self.connect() as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(schema=name)

    def login(self, url: str, role: str, password: str, port: int | None = None) -> str:
        """A role that logs in with a password over TCP (scram-sha-256), owning the schema of ``url``; returns
        the URL for it, at ``port`` (a proxy's) or the cluster's own, without the password."""
        schema = _schema_of(url)
        with self.connect() as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute(f"ALTER ROLE {role} PASSWORD '{password}'")
            conn.execute(f"ALTER SCHEMA {schema} OWNER TO {role}")
        query = urllib.parse.urlencode({"options": f"-csearch_path={schema}"})
        return f"postgresql://{role}@127.0.0.1:{port or self.port}/{DATABASE}?{query}"

    def drop_schema(self, url: str) -> None:
        with self.connect() as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f"DROP SCHEMA IF EXISTS {_schema_of(url)} CASCADE")


def _schema_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["options"][0].split("=", 1)[1]


class CuttingProxy:
    """A TCP proxy to the cluster that cuts one connection at a chosen message, as a network or a server
    crash would: ``arm(marker)`` makes the next client message holding ``marker`` either reach the server,
    whose answer is then dropped (``forward=True``: the statement ran, the client cannot know), or not
    (``forward=False``); both sides are then closed. ``cut`` is set once it happened."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.cut = threading.Event()
        self._armed: tuple[bytes, bool] | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes, forward: bool) -> None:
        with self._lock:
            self._armed = (marker, forward)
        self.cut.clear()

    def _take(self, chunk: bytes) -> tuple[bytes, bool] | None:
        with self._lock:
            if self._armed and self._armed[0] in chunk:
                armed, self._armed = self._armed, None
                return armed
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            muted = threading.Event()
            threading.Thread(target=self._up, args=(client, server, muted), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, muted), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                armed = self._take(chunk)
                if armed is None:
                    server.sendall(chunk)
                    continue
                muted.set()
                if armed[1]:
                    server.sendall(chunk)
                    time.sleep(0.5)  # the server runs (and commits) it; its answer is dropped
                break
        for end in (client, server):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        if muted.is_set():
            self.cut.set()

    def _down(self, server: socket.socket, client: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while chunk := server.recv(65536):
                if not muted.is_set():
                    client.sendall(chunk)

    def close(self) -> None:
        self.listener.close()
