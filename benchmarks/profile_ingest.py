"""Where the ingest path spends its time: the poller in-process on SQLite under cProfile.

    .venv/bin/python benchmarks/profile_ingest.py [--messages 300] [--database sqlite]
        [--save /tmp/ingest.prof] [--top 30]

Starts a private Dovecot and capturing SMTP server, seeds a database with
clients and quoted requests, delivers N realistic messages (benchmarks/mailgen.py),
then runs `Poller.poll_once()` and `send_due()` — what `poll --once` does —
under cProfile, counting every SQL statement on the way.  Prints:

1. time per stage (cumulative, so nested stages overlap: parse is inside
   handle_message, render inside queue_message, ...), per message;
2. the SQL statements run, grouped by shape, with count per message and time;
3. the top functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import event  # noqa: E402

from benchmarks import mailgen, world  # noqa: E402
from mailflow.adapters.imap import Mailbox  # noqa: E402
from mailflow.db import create_db_engine  # noqa: E402
from mailflow.poller import Poller  # noqa: E402
from mailflow.sender import send_due  # noqa: E402
from tests.servers.dovecot import Dovecot  # noqa: E402

console = Console(width=160) if not sys.stdout.isatty() else Console()

# (label, file suffix, function name): cumulative time of that function.
STAGES = [
    ("poll_once (fetch + process + move)", "mailflow/poller.py", "poll_once"),
    ("  IMAP fetch", "mailflow/adapters/imap.py", "fetch"),
    ("  receive_batch (all DB work + commit)", "mailflow/intake.py", "receive_batch"),
    ("    handle_message", "mailflow/services/inbound.py", "handle_message"),
    ("      parse_message", "mailflow/core/message.py", "parse_message"),
    ("        html_to_text", "mailflow/core/message.py", "html_to_text"),
    ("      find_processed (dedupe queries)", "mailflow/services/inbound.py", "find_processed"),
    ("      gather (facts: trim, classify, lookups)", "mailflow/services/inbound.py", "gather"),
    ("        trim_reply", "mailflow/core/trim.py", "trim_reply"),
    ("        classify_automatic", "mailflow/core/autoreply.py", "classify_automatic"),
    ("        detect_command", "mailflow/core/keywords.py", "detect_command"),
    ("        client_by_address", "mailflow/services/clients.py", "client_by_address"),
    ("        _linked_request", "mailflow/services/inbound.py", "_linked_request"),
    ("        may_answer", "mailflow/services/requests.py", "may_answer"),
    ("      act (the use case)", "mailflow/services/inbound.py", "act"),
    ("        create_request", "mailflow/services/requests.py", "create_request"),
    ("        approve_request", "mailflow/services/requests.py", "approve_request"),
    ("        notify_staff", "mailflow/services/outbox.py", "notify_staff"),
    ("        queue_message", "mailflow/services/outbox.py", "queue_message"),
    ("          Renderer.render", "mailflow/render.py", "render"),
    ("          balance_context", "mailflow/services/outbox.py", "balance_context"),
    ("          thread_ids", "mailflow/services/outbox.py", "thread_ids"),
    ("          over_autoreply_limit", "mailflow/services/outbox.py", "over_autoreply_limit"),
    ("        sweep_expired", "mailflow/services/credits.py", "sweep_expired"),
    ("    Session.flush (all)", "sqlalchemy/orm/session.py", "flush"),
    ("    Session.commit", "sqlalchemy/orm/session.py", "commit"),
    ("  IMAP move", "mailflow/adapters/imap.py", "move"),
    ("send_due (claim, SMTP, record)", "mailflow/sender.py", "send_due"),
    ("  build_email", "mailflow/sender.py", "build_email"),
    ("  SMTP send", "mailflow/adapters/smtp_out.py", "send"),
    ("  _record (one transaction per row)", "mailflow/sender.py", "_record"),
    ("  claim", "mailflow/sender.py", "claim"),
]

_LITERALS = re.compile(r"\((?:\s*(?:\?|%\(\w+\)s|:\w+|__\[POSTCOMPILE_\w+\])\s*,?)+\)")
_SPACE = re.compile(r"\s+")


def statement_shape(statement: str) -> str:
    text = _SPACE.sub(" ", statement).strip()
    text = _LITERALS.sub("(…)", text)
    text = re.sub(r"SELECT .*? FROM", "SELECT … FROM", text, count=1)
    return text[:150]


class SqlCounter:
    def __init__(self, engine) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.enabled = False
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not self.enabled:
            return
        shape = statement_shape(statement)
        self.count[shape] += 1
        self.seconds[shape] += time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())


def stage_times(stats: pstats.Stats) -> list[tuple[str, int, float]]:
    out = []
    for label, suffix, name in STAGES:
        calls, total = 0, 0.0
        for (path, _line, func), (_cc, nc, _tt, ct, _callers) in stats.stats.items():
            if func == name and path.replace("\\", "/").endswith(suffix):
                calls += nc
                total += ct
        out.append((label, calls, total))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--client-pool", type=int, default=100)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", help="also write the raw cProfile data here")
    parser.add_argument("--no-profile", action="store_true",
                        help="no cProfile: print the wall and CPU time of poll_once and of "
                             "send_due (in this process, one after the other) and stop")
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args(argv)

    workdir = world.temp_workdir()
    dovecot = Dovecot(users=("support",)).start()
    smtp, capture = world.start_smtp()
    db = None
    try:
        rng = random.Random(args.seed)
        db = world.new_database(args.database, workdir, "profile")
        user = "profile"
        dovecot.create_user(user)
        config = world.make_config(workdir, "profile", db, dovecot, smtp, user)
        desk = world.load_desk(config, dovecot.password)
        engine = create_db_engine(db.url)
        clients = mailgen.make_clients(args.client_pool, rng)
        kinds = mailgen.plan(args.messages, rng)
        world.seed_clients(engine, desk, clients)
        quotes, acks = world.seed_threads(engine, desk, clients,
                                          quotes=mailgen.quotes_needed(kinds),
                                          acks=min(100, max(10, args.messages // 20)), rng=rng)
        mails = mailgen.generate(kinds, clients, quotes=quotes, acks=acks, rng=rng)
        world.append_all(dovecot, user, [m.raw for m in mails])
        console.print(f"{len(mails)} messages in the inbox: {mailgen.describe(mails)}")

        sql = SqlCounter(engine)
        mailbox = Mailbox(desk.settings.mailbox.imap)
        mailbox.connect()
        poller = Poller(engine, desk, mailbox)
        profile = cProfile.Profile()
        sql.enabled = not args.no_profile
        started = time.perf_counter()
        if args.no_profile:
            cpu = time.process_time()
            report = poller.poll_once()
            poll_wall, poll_cpu = time.perf_counter() - started, time.process_time() - cpu
            sent = send_due(engine, desk)
            wall = time.perf_counter() - started
            send_cpu = time.process_time() - cpu - poll_cpu
        else:
            profile.enable()
            report = poller.poll_once()
            sent = send_due(engine, desk)
            profile.disable()
            wall = time.perf_counter() - started
        sql.enabled = False
        mailbox.close()
        engine.dispose()
    finally:
        smtp.stop()
        dovecot.cleanup()
        if db is not None:
            db.drop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)

    n = len(mails)
    if args.no_profile:
        console.print(f"{n} messages, {report.processed} processed, {sent.sent} sent: poll_once "
                      f"{poll_wall:.2f} s wall, {poll_cpu / n * 1000:.2f} ms CPU/msg in this "
                      f"process; send_due {wall - poll_wall:.2f} s wall, "
                      f"{send_cpu / max(sent.sent, 1) * 1000:.2f} ms CPU/mail sent")
        return 0
    console.print(f"poll_once + send_due under cProfile: {wall:.1f} s for {n} messages "
                  f"({n / wall:.1f} msg/s with profiling overhead); {report.processed} processed, "
                  f"{report.failed} failed, {sent.sent} sent; verdicts {report.verdicts}")
    if args.save:
        profile.dump_stats(args.save)
    stats = pstats.Stats(profile)

    table = Table(title="Time by stage (cumulative; nested rows are inside their parent)")
    for column in ("stage", "calls", "calls/msg", "seconds", "ms/msg", "% of run"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for label, calls, seconds in stage_times(stats):
        table.add_row(label, f"{calls:,}", f"{calls / n:.2f}", f"{seconds:.2f}",
                      f"{seconds / n * 1000:.1f}", f"{seconds / wall * 100:.1f}")
    console.print(table)

    total_sql = sum(sql.count.values())
    table = Table(title=f"SQL statements: {total_sql:,} in all = {total_sql / n:.1f} per message "
                        f"({sum(sql.seconds.values()):.2f} s in the driver)")
    for column in ("count", "per msg", "ms total", "statement shape"):
        table.add_column(column, justify="right" if column != "statement shape" else "left",
                         overflow="fold")
    for shape, count in sorted(sql.count.items(), key=lambda kv: -kv[1])[:args.top]:
        table.add_row(f"{count:,}", f"{count / n:.2f}", f"{sql.seconds[shape] * 1000:.0f}", shape)
    console.print(table)

    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        table = Table(title=f"Top {args.top} functions by {title}")
        for column in ("function", "calls", "own s", "cum s"):
            table.add_column(column, justify="left" if column == "function" else "right",
                             overflow="fold")
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2 if key == "tottime" else 3])
        for (path, line, func), (_cc, nc, tt, ct, _callers) in rows[:args.top]:
            short = path.split("site-packages/")[-1].split("/work/main/")[-1]
            short = short.split("/lib/python3.11/")[-1]
            table.add_row(f"{short}:{line}({func})", f"{nc:,}", f"{tt:.2f}", f"{ct:.2f}")
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
