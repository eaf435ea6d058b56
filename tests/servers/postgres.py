"""A private PostgreSQL cluster for tests that stop or restart the server.

The shared PostgreSQL on 5432 serves every other test at the same time and
must never be stopped; a test that needs a database outage gets its own
cluster: `initdb` into a temporary directory, `pg_ctl start` on a free
loopback port with its socket in that directory, trust authentication for the
`postgres` role, durability off (a test cluster outlives no machine crash).

initdb refuses to run as root, so as root every server command runs as the
`postgres` OS user (`runuser -u postgres --`) and the directory belongs to it.
`stop()`, `start()` and `restart()` act on this cluster's data directory only
(`pg_ctl -D DIR`), and `cleanup()` kills what is left by the postmaster's own
pid from `postmaster.pid`.

    with PrivatePostgres() as pg:
        url = pg.create_database("mailflow")   # postgresql+psycopg://...
        pg.restart()
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

import psycopg

from tests.servers.dovecot import HOST, free_port


class PostgresError(RuntimeError):
    """The private cluster could not be created, started or stopped."""


def postgres_bindir() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb and pg_ctl."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda path: int(Path(path).parent.name)
                        if Path(path).parent.name.isdigit() else 0, reverse=True)
    for path in candidates:
        if os.access(Path(path) / "initdb", os.X_OK) and os.access(Path(path) / "pg_ctl", os.X_OK):
            return Path(path)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


class PrivatePostgres:
    """One throwaway cluster on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise PostgresError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.root = Path(tempfile.mkdtemp(prefix="mailflow-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_path = self.root / "postgres.log"
        self.host = HOST
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError("running as root needs the 'postgres' OS user") from None
            self.root.chmod(0o755)
            self.socket_dir.mkdir()
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        else:
            self.socket_dir.mkdir()
        self._initdb()

    # -- running the server's commands ------------------------------------------

    def _command(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=self.root)
        return done

    def _check(self, *args: str, timeout: float = 60) -> None:
        done = self._command(*args, timeout=timeout)
        if done.returncode != 0:
            raise PostgresError(f"{' '.join(args[:2])} failed ({done.returncode}): "
                                f"{done.stdout.strip()} {done.stderr.strip()}\n{self.log_tail()}")

    def _initdb(self) -> None:
        self._check("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--locale=C", "--no-sync", timeout=120)

    def _options(self) -> str:
        return (f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=60 -c shared_buffers=16MB")

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: int = 60) -> PrivatePostgres:
        if self.running:
            return self
        self._check("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                    "-o", self._options(), "-w", "-t", str(timeout), "start",
                    timeout=timeout + 10)
        self._wait_accepting(timeout)
        return self

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        """Stop this cluster: `fast` (clients disconnected, clean shutdown) or
        `immediate` (like a crash: recovery on the next start)."""
        if not self.running:
            return
        self._check("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(timeout),
                    "stop", timeout=timeout + 10)

    def restart(self, mode: str = "fast", down_seconds: float = 0.0) -> None:
        self.stop(mode)
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                last = error
                time.sleep(0.1)
        raise PostgresError(f"cluster on port {self.port} not accepting connections: {last}")

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from its own pid file."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def cleanup(self) -> None:
        """Stop the cluster (by pg_ctl, else its postmaster's pid) and delete its files."""
        try:
            self.stop("immediate", timeout=20)
        except (PostgresError, subprocess.TimeoutExpired):
            pid = self.pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if os.environ.get("MAILFLOW_KEEP_POSTGRES"):
            print(f"PostgreSQL directory kept: {self.root}")
            return
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    # -- databases -------------------------------------------------------------------

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create NAME (empty) and return its SQLAlchemy URL."""
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
