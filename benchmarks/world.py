"""What the benchmarks share: the private mail servers, databases, seeding,
and running `mailflow` as a measured subprocess.

Only loopback; every server and process started here is stopped by its own
pid (Dovecot by its process group, aiosmtpd by its controller).
"""

from __future__ import annotations

import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks import mailgen  # noqa: E402
from tests.integration.procs import write_config  # noqa: E402
from tests.servers.dovecot import Dovecot, dovecot_version  # noqa: E402
from tests.servers.smtp import Captured, CaptureHandler, SmtpServer  # noqa: E402

PG_ADMIN = os.environ.get("MAILFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- SMTP with arrival times ----------------------------------------------------------

class TimedCapture(CaptureHandler):
    """The tests' capture handler, also noting when each message arrived
    (time.monotonic()), so latency is measured at the server, not when we look."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self._lock:
                self.arrivals.append(time.monotonic())
        return reply

    def count(self) -> int:
        with self._lock:
            return len(self._messages)

    def since(self, index: int) -> list[tuple[float, Captured]]:
        with self._lock:
            return list(zip(self.arrivals[index:], self._messages[index:], strict=False))

    def wait_count(self, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(min(remaining, 1.0))
            return len(self._messages)

    def wait_new(self, index: int, timeout: float) -> bool:
        """Block until a message beyond INDEX arrives (or TIMEOUT)."""
        return self.wait_count(index + 1, timeout) > index


def start_smtp() -> tuple[SmtpServer, TimedCapture]:
    server = SmtpServer()
    handler = TimedCapture()
    server.handler = handler
    server.start()
    return server, handler


# --- databases --------------------------------------------------------------------------

@dataclass
class Database:
    kind: str          # "sqlite" or "postgresql"
    url: str
    name: str          # file path or database name

    def drop(self) -> None:
        if self.kind == "postgresql":
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(self.name + suffix).unlink(missing_ok=True)


def new_database(kind: str, workdir: Path, label: str) -> Database:
    """A fresh, migrated database of KIND."""
    from mailflow.db import upgrade_schema

    if kind == "sqlite":
        path = workdir / f"{label}.db"
        db = Database(kind, f"sqlite:///{path}", str(path))
    else:
        name = f"mailflow_bench_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        db = Database(kind, f"{base}/{name}", name)
    upgrade_schema(db.url)
    return db


def postgres_version() -> str:
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])
    except psycopg.OperationalError as error:
        return f"unreachable ({str(error).strip()[:80]})"


def postgres_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5):
            return None
    except psycopg.OperationalError as error:
        return f"PostgreSQL not reachable at {PG_ADMIN}: {str(error).strip()[:120]}"


# --- config -------------------------------------------------------------------------

def make_config(workdir: Path, label: str, db: Database, dovecot: Dovecot, smtp: SmtpServer,
                user: str) -> Path:
    return write_config(
        workdir / f"{label}.yaml", db_url=db.url, imap_port=dovecot.port, smtp_port=smtp.port,
        mailbox__imap__username=user,
        policy__autoreply_limit_per_hour=1_000_000,
        smtp__timeout_seconds=30,
    )


def env_for(config: Path, dovecot: Dovecot) -> dict[str, str]:
    return {**os.environ, "MAILFLOW_CONFIG": str(config),
            "MAILFLOW_IMAP_PASSWORD": dovecot.password, "PYTHONUNBUFFERED": "1"}


def load_desk(config: Path, password: str):
    from mailflow.config import load_settings
    from mailflow.desk import Desk

    os.environ["MAILFLOW_IMAP_PASSWORD"] = password
    return Desk(load_settings(config))


# --- seeding ------------------------------------------------------------------------

def seed_clients(engine, desk, clients: list[mailgen.ClientSpec]) -> None:
    """The clients with their contacts, 1,000 purchased credits and a 30-credit grant."""
    from mailflow.core.ledger import LotKind
    from mailflow.db import transaction
    from mailflow.services import clients as client_service
    from mailflow.services import credits as ledger

    with transaction(engine) as session:
        for spec in clients:
            client = client_service.add_client(session, desk, name=spec.name,
                                               emails=[c.email for c in spec.contacts],
                                               lang=spec.lang, plan=10)
            ledger.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=1000)
            ledger.add_lot(session, desk, client=client, kind=LotKind.GRANT, credits=30)


def seed_threads(engine, desk, clients: list[mailgen.ClientSpec], *, quotes: int, acks: int,
                 rng: random.Random) -> tuple[list[mailgen.Thread], list[mailgen.Thread]]:
    """Requests for replies to answer: QUOTES quoted ones and ACKS acknowledged
    ones, as the mail program would see them (our acknowledgement and quote).
    Their outbox rows are then marked sent, so the measured run sends only its own."""
    from sqlmodel import select

    from mailflow.db import transaction
    from mailflow.models import Client, Outbox, OutboxStatus
    from mailflow.services import requests as svc

    quote_threads: list[mailgen.Thread] = []
    ack_threads: list[mailgen.Thread] = []
    total = quotes + acks
    done = 0
    while done < total:
        with transaction(engine) as session:
            by_name = {c.name: c for c in session.exec(select(Client))}
            for _ in range(min(200, total - done)):
                spec = rng.choice(clients)
                person = rng.choice(spec.contacts)
                pool = mailgen.JA_REQUESTS if spec.lang == "ja" else mailgen.EN_REQUESTS
                subject, text = rng.choice(pool)
                request = svc.create_request(session, desk, client=by_name[spec.name],
                                             requester=person.email, subject=subject, text=text,
                                             actor=person.email, auto=True)
                ack = session.exec(select(Outbox).where(Outbox.request_id == request.id,
                                                        Outbox.template == "client/ack")).one()
                ack_thread = mailgen.Thread(request.id, person.email, spec.lang, ack.subject,
                                            ack.message_id, ack.body_text)
                if done < quotes:
                    quote = svc.quote_request(
                        session, desk, request_id=request.id,
                        terms=svc.QuoteTerms(rng.randint(1, 5),
                                             desk.today() + timedelta(days=rng.randint(7, 30))))
                    row = session.exec(select(Outbox).where(
                        Outbox.message_id == quote.message_id)).one()
                    quote_threads.append(mailgen.Thread(
                        request.id, person.email, spec.lang, row.subject, row.message_id,
                        row.body_text, references=[ack.message_id]))
                else:
                    ack_threads.append(ack_thread)
                done += 1
    with transaction(engine) as session:
        session.execute(sa.update(Outbox).values(status=OutboxStatus.SENT,
                                                 sent_at=datetime.now(UTC)))
    return quote_threads, ack_threads


def seed_digest_clients(engine, count: int, rng: random.Random) -> None:
    """COUNT clients in bulk, as an agency's database holds them after a while:
    contacts, a plan lot (expiring), for some a purchase, some debits, and a few
    requests open, approved or completed."""
    from mailflow.core.ledger import EntryKind, LotKind
    from mailflow.core.states import Status
    from mailflow.models import Client, Contact, Entry, Lot, Request

    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.insert(Client), [
            {"id": i, "name": f"Digest Client {i:05d}", "lang": "ja" if i % 4 == 0 else "en",
             "plan_credits": 10 if i % 3 else None, "active": True,
             "created_at": now - timedelta(days=200)} for i in range(1, count + 1)])
        contacts = []
        for i in range(1, count + 1):
            contacts.append({"client_id": i, "email": f"owner@digest{i:05d}.example"})
            if i % 5 == 0:
                contacts.append({"client_id": i, "email": f"office@digest{i:05d}.example"})
        conn.execute(sa.insert(Contact), contacts)
        lots, entries, requests = [], [], []
        lot_id = 0
        for i in range(1, count + 1):
            lot_id += 1
            granted = now - timedelta(days=rng.randint(5, 60))
            lots.append({"id": lot_id, "client_id": i, "kind": LotKind.PLAN.value, "credits": 10,
                         "granted_at": granted, "expires_at": granted + timedelta(days=90),
                         "price_yen": None, "period": f"b{lot_id}", "note": None,
                         "actor": "system"})
            entries.append({"client_id": i, "lot_id": lot_id, "delta": 10,
                            "kind": EntryKind.GRANT.value, "request_id": None,
                            "actor": "system", "at": granted, "note": "plan lot"})
            if i % 3 == 0:
                lot_id += 1
                lots.append({"id": lot_id, "client_id": i, "kind": LotKind.PURCHASE.value,
                             "credits": 20, "granted_at": granted, "expires_at": None,
                             "price_yen": 160000, "period": None, "note": None,
                             "actor": "staff"})
                entries.append({"client_id": i, "lot_id": lot_id, "delta": 20,
                                "kind": EntryKind.PURCHASE.value, "request_id": None,
                                "actor": "staff", "at": granted, "note": "purchase lot"})
            if i % 2 == 0:
                status = rng.choice([Status.RECEIVED, Status.QUOTED, Status.APPROVED,
                                     Status.COMPLETED])
                requests.append({"id": len(requests) + 1, "client_id": i,
                                 "requester": f"owner@digest{i:05d}.example",
                                 "subject": "Replace the banner on the top page",
                                 "text": "Please replace the banner.", "status": status.value,
                                 "credits": 2 if status != Status.RECEIVED else None,
                                 "due": (now + timedelta(days=10)).date()
                                 if status != Status.RECEIVED else None,
                                 "current_quote_id": None, "created_at": now - timedelta(days=3),
                                 "updated_at": now - timedelta(days=2)})
        conn.execute(sa.insert(Lot), lots)
        conn.execute(sa.insert(Request), requests)
        debits = []
        lot_of = {}
        for lot in lots:
            lot_of.setdefault(lot["client_id"], lot["id"])
        for request in requests:
            if request["status"] in (Status.APPROVED.value, Status.COMPLETED.value):
                debits.append({"client_id": request["client_id"],
                               "lot_id": lot_of[request["client_id"]], "delta": -2,
                               "kind": EntryKind.DEBIT.value, "request_id": request["id"],
                               "actor": request["requester"], "at": now - timedelta(days=2),
                               "note": None})
        conn.execute(sa.insert(Entry), entries + debits)
    if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
        with engine.begin() as conn:
            for table in ("client", "lot", "request"):
                conn.execute(sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"))
            conn.execute(sa.text("ANALYZE"))


# --- IMAP -----------------------------------------------------------------------------

def append_all(dovecot: Dovecot, user: str, raws: list[bytes], folder: str = "INBOX",
               chunk: int = 100) -> float:
    """Deliver RAWS into USER's FOLDER over one connection (MULTIAPPEND); seconds taken."""
    dovecot.create_user(user)
    started = time.perf_counter()
    client = dovecot.client(user)
    try:
        for start in range(0, len(raws), chunk):
            client.multiappend(folder, raws[start:start + chunk])
    finally:
        client.logout()
    return time.perf_counter() - started


def folder_count(dovecot: Dovecot, user: str, folder: str) -> int:
    client = dovecot.client(user)
    try:
        if folder.upper() != "INBOX" and not client.folder_exists(folder):
            return 0
        return int(client.select_folder(folder, readonly=True)[b"EXISTS"])
    finally:
        client.logout()


# --- measured subprocesses ------------------------------------------------------------

@dataclass
class Run:
    returncode: int
    seconds: float
    max_rss_kb: int        # the child's peak resident set (getrusage via wait4)
    sampled_rss_kb: int    # the highest VmRSS seen while sampling /proc
    stdout: str
    stderr: str
    #: user + system CPU of the child and the children it waited for (the
    #: sender, the parse worker): what the work cost, whatever the machine's load
    cpu_seconds: float = 0.0
    #: each process of the tree's own peak (VmHWM, KiB) by role: "main",
    #: "sender", "forkserver", "parse worker", ...; the largest is what
    #: max_rss_kb reports, as wait4 folds the waited-for children into it
    peaks_kb: dict[str, int] = field(default_factory=dict)
    #: this benchmark process's own peak when it started the run: what a child
    #: spawned from it directly would have reported as its ru_maxrss
    runner_hwm_kb: int = 0
    #: CPU seconds (user + system) of each role's processes, as last read from
    #: /proc while sampling (a process's last few milliseconds may be missed)
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    #: CPU seconds the whole machine was busy (all cores, every process: the
    #: SMTP capture server, Dovecot and the database server too) during the run
    machine_busy_seconds: float = 0.0
    #: CPU seconds of this benchmark process during the run: the SMTP capture
    #: server's thread that receives the answers, and the /proc sampling
    runner_cpu_seconds: float = 0.0

    def cpu_text(self, per: int, unit: str = "msg") -> str:
        return ", ".join(f"{role} {seconds / per * 1000:.2f}" for role, seconds in
                         sorted(self.cpu_by_role.items(), key=lambda item: -item[1])
                         if seconds) + f" ms CPU/{unit}"

    def peaks_text(self) -> str:
        return ", ".join(f"{role} {kb / 1024:.0f}" for role, kb in
                         sorted(self.peaks_kb.items(), key=lambda item: -item[1]))


#: How often the process tree's memory is read while a measured run goes on.
SAMPLE_SECONDS = 0.005

#: Starts `python -m mailflow ARGV[2:]`, waits for it and writes its rusage
#: (ru_maxrss in KiB, CPU seconds) to ARGV[1].  Linux folds the high-water
#: mark of the memory a process had before exec into its ru_maxrss for good
#: (exec_mmap), and a process spawned by this benchmark would so report the
#: benchmark's own peak (the generated mail, the seeding: 300 MB after the
#: SQLite rows); started from this small process, it reports its own.
LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "mailflow", *sys.argv[2:]],
                     os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_mailflow(args: list[str], env: dict[str, str], *, timeout: float,
                 workdir: Path) -> Run:
    """`python -m mailflow ARGS` to the end, timing it and sampling its memory.

    It is started by LAUNCHER, which reaps it with os.wait4: its ru_maxrss (KiB)
    is the largest of its own and its waited-for children's peaks (the sender,
    the forkserver and through it the parse worker).  Every SAMPLE_SECONDS the
    process tree is read from /proc: each process's VmHWM (its own peak, kept
    by the kernel, so a spike between two samples is still seen) under its
    role, and the main process's VmRSS as a cross-check.  Past TIMEOUT the
    launcher's process group is killed (by its id)."""
    out_path = workdir / f"run-{uuid.uuid4().hex[:8]}.out"
    err_path = workdir / f"run-{uuid.uuid4().hex[:8]}.err"
    usage_path = workdir / f"run-{uuid.uuid4().hex[:8]}.usage"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        runner_hwm_kb = _vm_kb(os.getpid())[1]
        busy_before = _machine_busy()
        runner_before = time.process_time()
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(usage_path), *args],
                                   env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        tree = _TreeSampler(process.pid)
        deadline = started + timeout
        timed_out = False
        while process.poll() is None:
            tree.sample()
            if time.perf_counter() > deadline:
                os.killpg(process.pid, signal.SIGKILL)  # its own group, by its id
                process.wait()
                timed_out = True
                break
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - started
        busy = _machine_busy() - busy_before
        runner_cpu = time.process_time() - runner_before
    max_rss_kb, cpu_seconds = 0, 0.0
    if usage_path.exists():
        rss, cpu = usage_path.read_text().split()
        max_rss_kb, cpu_seconds = int(rss), float(cpu)
    run = Run(process.returncode, seconds, max_rss_kb, tree.main_rss_kb,
              out_path.read_text(errors="replace"), err_path.read_text(errors="replace"),
              cpu_seconds, tree.peaks_by_role(), runner_hwm_kb, tree.cpu_by_role(), busy,
              runner_cpu)
    for path in (out_path, err_path, usage_path):
        path.unlink(missing_ok=True)
    if timed_out:
        raise TimeoutError(f"mailflow {' '.join(args)} did not finish in {timeout:.0f} s")
    return run


class _TreeSampler:
    """The peak memory of every process below LAUNCHER, by role.

    The launcher's child is mailflow's main process; a fork of it (same command
    line) is the outbox sender; multiprocessing's forkserver and resource
    tracker are named on their command line; a child of the forkserver is a
    parse worker."""

    def __init__(self, launcher: int) -> None:
        self.launcher = launcher
        self.main_rss_kb = 0
        self.hwm_kb: dict[int, int] = {}
        self.roles: dict[int, str] = {}
        self.cpu: dict[int, float] = {}

    def sample(self) -> None:
        for pid, parent in self._tree():
            rss, hwm = _vm_kb(pid)
            if parent == self.launcher:
                self.main_rss_kb = max(self.main_rss_kb, rss)
            if not hwm:
                continue
            role = self._role(pid, parent)
            if self.roles.get(pid) != role:
                # Seen between fork and exec, it was still a copy of its parent.
                self.roles[pid], self.hwm_kb[pid] = role, hwm
            self.hwm_kb[pid] = max(self.hwm_kb[pid], hwm)
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                self.cpu[pid] = cpu

    def cpu_by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, seconds in self.cpu.items():
            role = self.roles.get(pid, "other")
            totals[role] = totals.get(role, 0.0) + seconds
        return totals

    def peaks_by_role(self) -> dict[str, int]:
        peaks: dict[str, int] = {}
        for pid, kb in self.hwm_kb.items():
            role = self.roles[pid]
            peaks[role] = max(peaks.get(role, 0), kb)
        return peaks

    def _tree(self) -> list[tuple[int, int | None]]:
        found: list[tuple[int, int | None]] = [(self.launcher, None)]
        index = 0
        while index < len(found):
            pid = found[index][0]
            index += 1
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                        found += [(int(child), pid) for child in f.read().split()]
                except (OSError, ValueError):
                    pass
        return found[1:]

    def _role(self, pid: int, parent: int | None) -> str:
        if parent == self.launcher:
            return "main"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = ""
        if "forkserver" in cmdline and self.roles.get(parent) == "forkserver":
            return "parse worker"
        if "forkserver" in cmdline:
            return "forkserver"
        if "resource_tracker" in cmdline:
            return "resource tracker"
        if self.roles.get(parent) == "main" and "mailflow" in cmdline:
            return "sender"
        return cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "other"


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of PID so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def _machine_busy() -> float:
    """CPU seconds all cores have spent not idle since boot (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


def _vm_kb(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of PID in KiB (0, 0 once it is gone)."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    return rss, hwm


# --- the machine --------------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "mailflow"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += " (+ uncommitted changes in mailflow/)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "CPU": cpu,
        "Cores": str(os.cpu_count()),
        "RAM": ram,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": postgres_version(),
        "Dovecot": dovecot_version(),
        "mailflow commit": commit or "?",
    }


def temp_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mailflow-bench-"))

