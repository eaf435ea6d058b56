"""`mailflow dev`: mailflow running against a sandbox mail world on loopback.

`mailflow dev` starts an embedded IMAP server and a delivering SMTP server
(`mailflow.sandbox.MailWorld`), a SQLite database in `./.sandbox/`, two demo
clients, prints how to connect any mail program, and runs mailflow's service
against the sandbox until Ctrl-C.  `mailflow dev --demo` plays one whole
conversation (request, quote, APPROVE, completion) through the same world and
prints it as a transcript.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import smtplib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

from mailflow.cli.app import App, console, pass_app
from mailflow.errors import MailflowError
from mailflow.sandbox import (
    DEFAULT_IMAP_PORT,
    DEFAULT_SMTP_PORT,
    Account,
    MailWorld,
    SandboxError,
    sandbox_settings,
)

if TYPE_CHECKING:
    from mailflow.desk import Desk

log = logging.getLogger("mailflow.sandbox")

DEFAULT_DATABASE = Path(".sandbox") / "mailflow.db"
STEP_TIMEOUT = 20.0
ACCOUNT_SYNC_SECONDS = 5.0


# -- the demo clients ----------------------------------------------------------------------

DEMO_CLIENTS = (
    {"name": "Demo Co", "email": "client@sandbox.example", "lang": "en"},
    {"name": "デモ株式会社", "email": "kyaku@sandbox.example", "lang": "ja"},
)
PLAN_CREDITS = 5
BOUGHT_CREDITS = 2


def ensure_demo_clients(engine, desk: Desk) -> list[str]:
    """Create the demo clients (5 plan credits granted, 2 bought) unless they exist."""
    from mailflow.core.ledger import LotKind
    from mailflow.db import transaction
    from mailflow.services import clients as client_service
    from mailflow.services import credits as ledger

    created = []
    with transaction(engine) as session:
        for demo in DEMO_CLIENTS:
            if client_service.client_by_address(session, demo["email"]) is not None:
                continue
            client = client_service.add_client(session, desk, name=demo["name"],
                                               emails=[demo["email"]], plan=PLAN_CREDITS,
                                               lang=demo["lang"])
            ledger.add_lot(session, desk, client=client, kind=LotKind.PLAN,
                           credits=PLAN_CREDITS, period=desk.today().strftime("%Y-%m"),
                           note="sandbox: this month's plan")
            ledger.add_lot(session, desk, client=client, kind=LotKind.PURCHASE,
                           credits=BOUGHT_CREDITS, note="sandbox: bought")
            created.append(demo["email"])
    return created


def client_addresses(engine) -> list[str]:
    from mailflow.db import transaction
    from mailflow.services import clients as client_service

    with transaction(engine) as session:
        return [address for client in client_service.list_clients(session)
                for address in client_service.client_emails(session, client.id)]


def sync_accounts(world: MailWorld, engine) -> None:
    """Give every client address in the database a mailbox in the world, so a
    client added with `mailflow clients add` meanwhile can be played too."""
    for address in client_addresses(engine):
        if world.account_for(address) is None:
            local, _, domain = address.partition("@")
            taken = {a.username for a in world.accounts}
            username = local if domain == world.domain and local not in taken else address
            world.add_account(address, username=username)
            log.info("sandbox mailbox added for %s (login %s)", address, username)


# -- the command ---------------------------------------------------------------------------

@click.command()
@click.option("--demo", is_flag=True,
              help="Play one scripted conversation through the sandbox, print it, exit.")
@click.option("--database-url", metavar="URL",
              help=f"Database (default: sqlite:///{DEFAULT_DATABASE}; with --demo a fresh "
                   "temporary one).")
@click.option("--imap-port", type=click.IntRange(0, 65535), default=DEFAULT_IMAP_PORT,
              show_default=True, help="IMAP port on 127.0.0.1 (0: any free port).")
@click.option("--smtp-port", type=click.IntRange(0, 65535), default=DEFAULT_SMTP_PORT,
              show_default=True, help="SMTP port on 127.0.0.1 (0: any free port).")
@click.option("--poll-seconds", type=click.IntRange(1, 3600), default=2, show_default=True,
              help="How often mailflow looks at the support mailbox besides IDLE.")
@click.option("--step-timeout", type=click.FloatRange(1, 600), default=STEP_TIMEOUT,
              show_default=True, help="--demo: longest wait for each mail, in seconds.")
@pass_app
def dev(app: App, demo: bool, database_url: str | None, imap_port: int, smtp_port: int,
        poll_seconds: int, step_timeout: float) -> None:
    """A sandbox mail world on loopback: try mailflow with any mail program.

    \b
    mailflow dev              # run until Ctrl-C; connect Thunderbird or mutt
    mailflow dev --demo       # watch one request go from e-mail to completed
    """
    from mailflow.db import create_db_engine, upgrade_schema
    from mailflow.desk import Desk

    temporary = None
    if database_url is None:
        if demo:
            temporary = Path(tempfile.mkdtemp(prefix="mailflow-demo-"))
            database_url = f"sqlite:///{temporary / 'mailflow.db'}"
        else:
            DEFAULT_DATABASE.parent.mkdir(parents=True, exist_ok=True)
            database_url = f"sqlite:///{DEFAULT_DATABASE.resolve()}"
    _configure_logging(logging.WARNING if demo else logging.INFO)
    stop = threading.Event()
    restore = {} if demo else _stop_on_signals(stop)
    world = MailWorld(imap_port=imap_port, smtp_port=smtp_port)
    for demo_client in DEMO_CLIENTS:
        world.add_account(demo_client["email"])
    try:
        try:
            world.start()
        except SandboxError as error:
            hint = (" (another `mailflow dev` running? --imap-port 0 --smtp-port 0 picks"
                    " free ports)" if isinstance(error.__cause__, OSError) else "")
            raise MailflowError(f"{error}{hint}") from None
        settings = sandbox_settings(world, database_url, poll_seconds=poll_seconds,
                                    base=app.settings)
        desk = Desk(settings)
        upgrade_schema(database_url)
        engine = create_db_engine(database_url)
        try:
            ensure_demo_clients(engine, desk)
            sync_accounts(world, engine)
            if demo:
                code = run_demo(world, engine, desk, step_timeout=step_timeout)
            else:
                staff_config = write_staff_config(settings, DEFAULT_DATABASE.parent
                                                  / "mailflow.yaml")
                print_instructions(world, settings, staff_config=staff_config)
                code = serve_until_stopped(world, engine, desk, stop)
        finally:
            engine.dispose()
    finally:
        world.stop()
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    sys.exit(code)


def _configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logger = logging.getLogger("mailflow")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    for noisy in ("mail.log", "pymap", "imapclient", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- how to connect ----------------------------------------------------------------------

def write_staff_config(settings, path: Path) -> Path:
    """A config file for staff commands (`mailflow quote`, `complete`, ...) in
    another terminal: the same database, mailbox and SMTP as the sandbox.  Returns
    its absolute path, so `export MAILFLOW_CONFIG=...` works from any directory."""
    import yaml

    path = path.resolve()
    data = settings.model_dump(mode="json")
    url = data["database_url"]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        data["database_url"] = "sqlite:///" + str(Path(url[len("sqlite:///"):]).resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `mailflow dev` for staff commands against the sandbox:\n"
                    f"#   export MAILFLOW_CONFIG={path}\n"
                    + yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    return path


def activate_script() -> Path | None:
    """The virtualenv's `activate` when the `mailflow` a new shell would find is
    not this one (a checkout's .venv not activated): sourcing it fixes that."""
    here = Path(sys.executable).parent / "mailflow"
    found = shutil.which("mailflow")
    if found is not None and Path(found).resolve() == here.resolve():
        return None
    activate = Path(sys.prefix) / "bin" / "activate"
    return activate if sys.prefix != sys.base_prefix and activate.exists() else None


def instructions(world: MailWorld, database_url: str, staff_config: Path | None = None,
                 due: str = "YYYY-MM-DD", activate: Path | None = None) -> str:
    """The connection details for people, as plain text.  The staff commands name
    files by absolute path: they work from any directory."""
    lines = [
        "A private mail world on this computer: loopback only, in memory",
        "(mailboxes start empty each time; requests stay in the database).",
        "",
        "Connect any mail program (Thunderbird, mutt, ...), one account each:",
        f"  incoming: IMAP {world.host} port {world.imap_port}, no SSL/TLS,",
        "            normal (plain-text) password",
        f"  outgoing: SMTP {world.host} port {world.smtp_port}, no SSL/TLS,",
        "            no authentication",
        "",
        f"  {'address':<24} {'user':<8} {'password':<9} role",
    ]
    roles = {"support": "support (mailflow reads it)", "staff": "staff notices",
             **{d["email"]: f"client {d['name']} ({d['lang']})" for d in DEMO_CLIENTS}}
    for account in world.accounts:
        role = roles.get(account.address) or roles.get(account.role) or account.role
        lines.append(f"  {account.address:<24} {account.username:<8} {account.password:<9}"
                     f" {role}")
    client = next((a for a in world.accounts if a.role == "client"), world.support)
    lines += [
        "",
        f"Try it: as {client.address}, write to {world.support.address};",
        "the acknowledgement arrives within seconds.  Then, as staff, in",
        "another terminal:",
    ]
    if activate is not None:
        lines.append(f"  source {activate}")
    if staff_config is not None:
        lines.append(f"  export MAILFLOW_CONFIG={staff_config}")
    lines += [
        "  mailflow requests",
        f"  mailflow quote 1 --task banner --due {due}",
        "and reply APPROVE to the quote from the mail program.",
        f"Or run the desk by mail: as {world.staff.address}, reply to the staff",
        "notice with text for the client, or lines like QUOTE 1 DUE "
        f"{due} (docs/staff.md).",
        "",
        "mutt as the client:",
        f"  mutt -f imap://{client.username}:{client.password}@{world.host}:"
        f"{world.imap_port}/ \\",
        f"    -e 'set smtp_url=smtp://{world.host}:{world.smtp_port}/' \\",
        f"    -e 'set from={client.address} ssl_starttls=no'",
        "",
        f"Database: {database_url}",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def print_instructions(world: MailWorld, settings, *, staff_config: Path | None) -> None:
    from mailflow.desk import Desk

    due = (Desk(settings).today() + timedelta(days=7)).isoformat()
    text = instructions(world, settings.database_url, staff_config, due, activate_script())
    if max(map(len, text.splitlines())) + 4 <= console().width:
        console().print(Panel(Text(text), title="mailflow dev", expand=False))
    else:  # a panel would break the long paths of the commands to copy
        console().print(Rule("mailflow dev"))
        console().print(Text(text), soft_wrap=True)
        console().print(Rule())
    console().file.flush()


# -- running mailflow against the world -----------------------------------------------------

def _run_service() -> Callable | None:
    """`mailflow.serve.run_service` when that module provides it."""
    try:
        from mailflow.serve import run_service
    except ImportError:
        return None
    return run_service


def run_mailflow(engine, desk: Desk, stop: threading.Event) -> int:
    """Run mailflow's service until STOP: `mailflow serve`'s own loop when present
    (without the periodic jobs: the sandbox lives minutes, not months)."""
    run_service = _run_service()
    if run_service is not None:
        return run_service(engine, desk, stop, scheduler=False)
    return poll_loop(engine, desk, stop)


def poll_loop(engine, desk: Desk, stop: threading.Event) -> int:
    """Poll (or IDLE-wait for) the support mailbox and send the outbox until STOP."""
    from mailflow.adapters.imap import Mailbox, MailboxError
    from mailflow.poller import Poller
    from mailflow.sender import send_due

    imap = desk.settings.mailbox.imap
    mailbox = Mailbox(imap, timeout=10)
    poller = Poller(engine, desk, mailbox)
    try:
        while not stop.is_set():
            try:
                if not mailbox.connected:
                    mailbox.connect()
                poller.poll_once()
                send_due(engine, desk)
                if mailbox.has_idle:
                    mailbox.idle_wait(imap.poll_seconds)
                else:
                    stop.wait(imap.poll_seconds)
            except MailboxError as error:
                log.warning("IMAP: %s; reconnecting", error)
                mailbox.close()
                stop.wait(1.0)
    finally:
        mailbox.close()
    return 0


def _stop_on_signals(stop: threading.Event) -> dict:
    """Ctrl-C and SIGTERM set STOP; returns the handlers they replaced."""
    def on_signal(_signum, _frame) -> None:
        stop.set()

    return {signum: signal.signal(signum, on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)}


def serve_until_stopped(world: MailWorld, engine, desk: Desk, stop: threading.Event) -> int:
    def keep_accounts_in_sync() -> None:
        while not stop.wait(ACCOUNT_SYNC_SECONDS):
            try:
                sync_accounts(world, engine)
            except Exception as error:  # never let the helper take the sandbox down
                log.warning("sandbox: cannot add mailboxes for new clients: %s", error)

    helper = threading.Thread(target=keep_accounts_in_sync, name="sandbox-accounts",
                              daemon=True)
    helper.start()
    try:
        code = run_mailflow(engine, desk, stop)
    finally:
        stop.set()
        helper.join(10)
    console().print("sandbox stopped")
    return code


# -- the demo ------------------------------------------------------------------------------

class DemoFailed(MailflowError):
    """A step of the demo did not happen in time."""


class Reader:
    """A mail program's view of one account: IMAP, new messages only."""

    def __init__(self, world: MailWorld, account: Account) -> None:
        import imapclient

        self.account = account
        self.client = imapclient.IMAPClient(world.host, port=world.imap_port, ssl=False,
                                            timeout=10)
        self.client.login(account.username, account.password)
        self.client.select_folder("INBOX")
        self.seen: set[int] = set()

    def wait_for(self, what: str, predicate: Callable[[EmailMessage], bool],
                 timeout: float) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while True:
            self.client.noop()
            new = sorted(set(self.client.search(["ALL"])) - self.seen)
            if new:
                fetched = self.client.fetch(new, ["BODY.PEEK[]"])
                for uid in new:  # the reply may hold unsolicited FETCHes keyed otherwise
                    raw = fetched.get(uid, {}).get(b"BODY[]")
                    if raw is None:
                        continue
                    message = message_from_bytes(raw, policy=policy.default)
                    if predicate(message):
                        self.seen.add(uid)
                        return message
            if time.monotonic() >= deadline:
                raise DemoFailed(f"{what} did not arrive in {self.account.address}'s INBOX"
                                 f" within {timeout:.0f}s")
            time.sleep(0.2)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.logout()


def template_is(name: str) -> Callable[[EmailMessage], bool]:
    return lambda message: message.get("X-Mailflow-Template") == name


def body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


def first_lines(text: str, limit: int = 5) -> list[str]:
    """The first meaningful lines: no quoted history, no blank lines, no rules."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(">") or set(stripped) <= set("-=_*"):
            continue
        if stripped.startswith("On ") and stripped.endswith("wrote:"):
            break
        lines.append(stripped)
        if len(lines) >= limit:
            break
    return lines


def balance_line(text: str) -> str | None:
    """The balance footer's headline, if the body has one."""
    for line in text.splitlines():
        lowered = line.strip().lower()
        if not lowered.startswith(">") and (
                "credit" in lowered and "available" in lowered or "残高" in lowered):
            return line.strip()
    return None


class Transcript:
    def __init__(self) -> None:
        self.step = 0

    def heading(self, title: str) -> None:
        self.step += 1
        console().print(Rule(Text(f"{self.step}. {title}", style="bold"), align="left"))

    def mail(self, message: EmailMessage, *, via: str, ours: bool = True) -> None:
        sender = parseaddr(str(message.get("From", "")))[1]
        recipients = ", ".join(parseaddr(a)[1] for a in str(message.get("To", "")).split(","))
        head = Text()
        head.append(f"{sender} → {recipients}", style="cyan")
        head.append(f"   ({via})", style="dim")
        console().print(head)
        self._line(Text("Subject: ", style="bold") + Text(str(message.get("Subject", "")).strip()))
        text = body_text(message)
        shown = first_lines(text)
        for line in shown:
            self._line(Text("  │ ", style="dim") + Text(line))
        footer = balance_line(text) if ours else None
        if footer and footer not in shown:
            self._line(Text("  │ … ", style="dim") + Text(footer))

    @staticmethod
    def _line(text: Text) -> None:
        console().print(text, no_wrap=True, overflow="ellipsis")

    def action(self, who: str, what: str) -> None:
        console().print(Text(f"{who}: ", style="magenta") + Text(what))


def client_mail(*, sender: str, to: str, subject: str, body: str,
                in_reply_to: str | None = None, references: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr(("Demo Co", sender))
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(_now())
    message["Message-ID"] = make_msgid(domain="sandbox.example")
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = " ".join(filter(None, [references, in_reply_to]))
    message["User-Agent"] = "mailflow dev --demo"
    message.set_content(body)
    return message


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def quoted_reply(original: EmailMessage, answer: str) -> str:
    """A reply as mail programs write it: the answer on top, the original quoted."""
    original_from = str(original.get("From", "support"))
    quoted = "\n".join(f"> {line}" if line else ">" for line in
                       body_text(original).splitlines())
    return f"{answer}\n\nOn {original.get('Date', 'an earlier day')}, {original_from} wrote:\n" \
           f"{quoted}\n"


def send_as(world: MailWorld, message: EmailMessage) -> None:
    envelope_from = parseaddr(str(message["From"]))[1]
    with smtplib.SMTP(world.host, world.smtp_port, timeout=10) as smtp:
        smtp.send_message(message, from_addr=envelope_from)


@contextlib.contextmanager
def service_in_background(engine, desk: Desk) -> Iterator[None]:
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_mailflow(engine, desk, stop)),
                              name="mailflow-service", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        if thread.is_alive():
            log.warning("the mailflow service did not stop within 30s")


def run_demo(world: MailWorld, engine, desk: Desk, *, step_timeout: float) -> int:
    """Request → acknowledgement → quote → APPROVE → confirmation → completion."""
    from mailflow.db import transaction
    from mailflow.services import credits as ledger
    from mailflow.services import requests as request_service

    client = world.account_for(DEMO_CLIENTS[0]["email"])
    support, staff = world.support, world.staff
    show = Transcript()
    console().print(Panel(Text(
        f"A sandbox mail world on {world.host}: IMAP port {world.imap_port}, SMTP port "
        f"{world.smtp_port}.\nmailflow reads {support.address} and answers by SMTP; "
        f"{client.address} plays the client (Demo Co: {PLAN_CREDITS} plan credits,"
        f" {BOUGHT_CREDITS} bought)."), title="mailflow dev --demo", expand=False))
    with service_in_background(engine, desk), \
            contextlib.closing(Reader(world, client)) as inbox, \
            contextlib.closing(Reader(world, staff)) as staff_inbox:
        show.heading("The client asks for work (by e-mail)")
        request_mail = client_mail(
            sender=client.address, to=support.address,
            subject="Please replace the banner on the top page",
            body="Hello,\n\nPlease replace the banner on the top page with the new spring "
                 "campaign image.\n\nThanks,\nDemo Co")
        send_as(world, request_mail)
        show.mail(request_mail, via="SMTP", ours=False)

        show.heading("mailflow acknowledges it and tells staff")
        ack = inbox.wait_for("the acknowledgement", template_is("client/ack"), step_timeout)
        show.mail(ack, via="client's IMAP INBOX")
        notice = staff_inbox.wait_for("the staff notice", template_is("staff/new_request"),
                                      step_timeout)
        show.mail(notice, via="staff's IMAP INBOX")

        request_id = int(ack["X-Mailflow-Request"])
        due = desk.today() + timedelta(days=3)
        show.heading("Staff quote it")
        with transaction(engine) as session:
            terms = request_service.terms_from_task(desk, "banner", due,
                                                    "We will use the image you sent.")
            request_service.quote_request(session, desk, request_id=request_id, terms=terms)
        show.action("staff", f"mailflow quote {request_id} --task banner "
                             f"--due {due.isoformat()}  ({terms.credits} credit)")
        quote = inbox.wait_for("the quote", template_is("client/quote"), step_timeout)
        show.mail(quote, via="client's IMAP INBOX")

        show.heading("The client replies APPROVE to the quote")
        answer = client_mail(sender=client.address, to=support.address,
                             subject=f"Re: {quote['Subject']}",
                             body=quoted_reply(quote, "APPROVE\n\nGo ahead, thank you!"),
                             in_reply_to=quote["Message-ID"],
                             references=quote.get("References"))
        send_as(world, answer)
        show.mail(answer, via="SMTP, In-Reply-To the quote", ours=False)
        approved = inbox.wait_for("the confirmation", template_is("client/approved"),
                                  step_timeout)
        show.mail(approved, via="client's IMAP INBOX")

        show.heading("Staff complete the work")
        with transaction(engine) as session:
            request_service.complete_request(session, desk, request_id=request_id,
                                             note="The new banner is live on the top page.")
        show.action("staff", f"mailflow complete {request_id} --note "
                             "\"The new banner is live on the top page.\"")
        completed = inbox.wait_for("the completion notice", template_is("client/completed"),
                                   step_timeout)
        show.mail(completed, via="client's IMAP INBOX")

    with transaction(engine) as session:
        request = request_service.get_request(session, request_id)
        summary = ledger.balance(session, desk, request.client_id)
        status = request.status.value if hasattr(request.status, "value") else request.status
    show.heading("Where things stand")
    console().print(Text(f"{desk.tag(request_id)} {request.subject}: {status}, "
                       f"{request.credits} credit taken", style="bold green"))
    console().print(Text(f"Balance of Demo Co: {summary.available} credits available "
                       f"({summary.never_expiring} never expire)", style="bold"))
    return 0
