"""A throwaway PostgreSQL cluster for the tests, started from Debian's server binaries.

The binaries live in ``/usr/lib/postgresql/<version>/bin`` (not on PATH).
``initdb`` refuses to run as root, so when the tests run as root the cluster
directory is given to the ``postgres`` user and every server command runs
through ``runuser -u postgres --``. The server listens on a free loopback port
and keeps its unix socket inside the cluster directory, so nothing outside the
temporary directory is touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

from tests.support.moto_server import free_port

# Read at import (conftest imports this module before any test hides RHEI_* variables).
REQUIRE_POSTGRES = os.environ.get("RHEI_REQUIRE_POSTGRES") == "1"
ROLE = "rhei_app"
PASSWORD = "s3cr3t-pw"
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (the reason says what is missing)."""


def find_bin_dir() -> str:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb`` and ``pg_ctl``."""
    candidates = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = os.path.basename(os.path.dirname(path))
        if os.path.exists(os.path.join(path, "initdb")) and os.path.exists(os.path.join(path, "pg_ctl")):
            try:
                candidates.append((float(version), path))
            except ValueError:
                continue
    if not candidates:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        )
    return max(candidates)[1]


@dataclass
class PostgresServer:
    """A running cluster: where it is and how to reach it."""

    bin_dir: str
    root: str
    port: int
    as_postgres: bool
    databases: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.root, "data")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.root, "sock")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_postgres:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket; returns stdout."""
        result = self._run(
            os.path.join(self.bin_dir, "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.socket_dir,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-At",
            "-c",
            sql,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str | None = None) -> str:
        """A fresh database owned by the test role; returns its name."""
        name = name or f"db_{uuid.uuid4().hex[:10]}"
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        self.databases.append(name)
        return name

    def url(self, database: str, *, user: str = ROLE, password: str = PASSWORD) -> str:
        """A ``postgresql://`` URL for the test role over TCP loopback."""
        return f"postgresql://{quote(user)}:{quote(password)}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str):
        """A psycopg connection (autocommit) as the test role, for writing test data."""
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True)

    def server_options(self) -> str:
        return (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=40"
        )

    def start_server(self) -> None:
        self._run(
            os.path.join(self.bin_dir, "pg_ctl"),
            "-D",
            self.data_dir,
            "-o",
            self.server_options(),
            "-l",
            os.path.join(self.root, "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop_server(self) -> None:
        """Stop the server but keep its data (an outage)."""
        self._run(os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data_dir, "-m", "fast", "-w", "stop", check=False)

    def stop(self) -> None:
        self._run(
            os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data_dir, "-m", "immediate", "-w", "stop", check=False
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Create and start a cluster in a temporary directory, with a password role."""
    bin_dir = find_bin_dir()
    as_postgres = os.geteuid() == 0
    if as_postgres and shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root but `runuser` is missing, so initdb cannot run as postgres")
    root = tempfile.mkdtemp(prefix="rhei-pg-")
    server = PostgresServer(bin_dir, root, free_port(), as_postgres)
    os.makedirs(server.socket_dir)
    if as_postgres:
        import pwd

        try:
            entry = pwd.getpwnam(SUPERUSER)
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable("running as root and there is no `postgres` user to run initdb as") from None
        os.chmod(root, 0o700)
        for path in (root, server.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        pwfile = os.path.join(root, "pw")
        with open(pwfile, "w") as fh:
            fh.write(PASSWORD + "\n")
        if as_postgres:
            os.chown(pwfile, pwd.getpwnam(SUPERUSER).pw_uid, -1)
        server._run(
            os.path.join(bin_dir, "initdb"),
            "-D",
            server.data_dir,
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        server.start_server()
        server.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    except subprocess.CalledProcessError as exc:
        log = ""
        try:
            with open(os.path.join(root, "server.log")) as fh:
                log = fh.read()[-2000:]
        except OSError:
            pass
        server.stop()
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr or exc.stdout}\n{log}") from exc
    except BaseException:
        server.stop()
        raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            server.psql("SELECT 1")
            break
        except RuntimeError:
            time.sleep(0.2)
    return server
