"""The `mailflow` command: a thin shell around the use cases.

Each command opens one transaction, calls one use case, commits, and prints a
table for people or `--json` for scripts.  Exit codes: 0 success, 1 a domain
error (one line), 2 a usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from functools import cached_property
from typing import Any

import click
import sqlalchemy.exc
from rich.console import Console
from rich.table import Table

from mailflow import __version__
from mailflow.config import Settings, load_settings
from mailflow.core.ledger import LotKind
from mailflow.core.states import Status
from mailflow.db import create_db_engine, schema_revision, transaction, upgrade_schema
from mailflow.desk import Desk
from mailflow.errors import ConfigError, MailflowError
from mailflow.services import clients as client_service
from mailflow.services import credits as ledger
from mailflow.services import outbox as outbox_service
from mailflow.services import requests as request_service

console = Console()
DATE = click.DateTime(formats=["%Y-%m-%d"])


class App:
    """Settings, engine and desk, built on first use so `--help` needs no config."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    @cached_property
    def engine(self):
        return create_db_engine(self.settings.database_url)

    @cached_property
    def desk(self) -> Desk:
        return Desk(self.settings)

    def session(self, *, check_schema: bool = True):
        if check_schema and schema_revision(self.engine) is None:
            raise MailflowError("the database has no schema yet: run `mailflow db upgrade`")
        return transaction(self.engine)


class UsageProblem(click.ClickException):
    exit_code = 2


class MailflowGroup(click.Group):
    """Turns domain errors into one line and exit 1, configuration errors into exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            raise UsageProblem(str(error)) from None
        except MailflowError as error:
            raise click.ClickException(str(error)) from None
        except sqlalchemy.exc.OperationalError as error:
            detail = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise click.ClickException(f"database error: {detail}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return value


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_jsonable, ensure_ascii=False, indent=2))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("" if cell is None else str(_jsonable(cell)) for cell in row))
    console.print(grid)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(cls=MailflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="MAILFLOW_CONFIG", type=click.Path(dir_okay=False),
              help="Config file (default: $MAILFLOW_CONFIG, ./mailflow.yaml, built-in defaults).")
@click.version_option(__version__, prog_name="mailflow")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """mailflow runs a prepaid-support desk over ordinary e-mail.

    \b
    A first session:
      mailflow db upgrade
      mailflow clients add Acme --email a@acme.example --plan 5
      mailflow credits buy Acme 3
      mailflow request new Acme --subject "Replace banner"
      mailflow quote 1 --credits 2 --due 2026-12-10
      mailflow balance Acme
    """
    ctx.obj = App(config_path)


pass_app = click.make_pass_decorator(App)


# --- db -------------------------------------------------------------------

@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the schema, or migrate it to the newest version."""
    upgrade_schema(app.settings.database_url)
    click.echo(f"database at revision {schema_revision(app.engine)}")


# --- clients --------------------------------------------------------------

@cli.group()
def clients() -> None:
    """Clients and their addresses."""


@clients.command("add")
@click.argument("name")
@click.option("--email", "emails", multiple=True, required=True, help="A contact address (repeat).")
@click.option("--plan", type=click.IntRange(min=0), help="Monthly plan credits.")
@click.option("--lang", type=click.Choice(["en", "ja"]), default="en", show_default=True)
@json_option
@pass_app
def clients_add(app: App, name: str, emails: tuple[str, ...], plan: int | None, lang: str,
                as_json: bool) -> None:
    """Add a client: mailflow clients add Acme --email a@acme.example --plan 5"""
    with app.session() as session:
        client = client_service.add_client(session, app.desk, name=name, emails=list(emails),
                                           plan=plan, lang=lang)
        row = _client_row(session, app.desk, client)
    if as_json:
        emit_json(row)
    else:
        click.echo(f"client {row['id']} {row['name']} added ({', '.join(row['emails'])})")


def _client_row(session, desk: Desk, client) -> dict:
    return {"id": client.id, "name": client.name,
            "emails": client_service.client_emails(session, client.id),
            "plan": client.plan_credits, "lang": client.lang,
            "available": ledger.balance(session, desk, client.id).available}


@clients.command("list")
@json_option
@pass_app
def clients_list(app: App, as_json: bool) -> None:
    """List clients with their available credits."""
    with app.session() as session:
        rows = [_client_row(session, app.desk, c) for c in client_service.list_clients(session)]
    if as_json:
        emit_json(rows)
        return
    table("Clients", ["id", "name", "emails", "plan", "lang", "available"],
          [[r["id"], r["name"], ", ".join(r["emails"]), r["plan"], r["lang"], r["available"]]
           for r in rows])


# --- credits --------------------------------------------------------------

@cli.group()
def credits() -> None:
    """Grant or sell credits."""


@credits.command("grant")
@click.argument("client_ref", metavar="CLIENT")
@click.argument("amount", type=click.IntRange(min=1), metavar="N")
@click.option("--on", "on", type=DATE, help="Grant date YYYY-MM-DD (default today).")
@click.option("--expires-days", type=click.IntRange(min=1),
              help="Days until expiry (default credits.expiry_days).")
@click.option("--never-expires", is_flag=True, help="This grant never expires.")
@click.option("--note", help="Why the credits were granted.")
@json_option
@pass_app
def credits_grant(app: App, client_ref: str, amount: int, on: datetime | None,
                  expires_days: int | None, never_expires: bool, note: str | None,
                  as_json: bool) -> None:
    """Grant N credits to CLIENT (they expire; an earlier --on imports a balance).

    \b
    mailflow credits grant Acme 5                       # goodwill, expires in 90 days
    mailflow credits grant Acme 5 --on 2026-09-01       # a balance the agency already had
    mailflow credits grant Acme 2 --never-expires --note "apology for the outage"
    """
    if expires_days and never_expires:
        raise click.UsageError("--expires-days and --never-expires exclude each other")
    _add_lot(app, client_ref, LotKind.GRANT, amount, on, expires_days, never_expires, note,
             as_json)


@credits.command("buy")
@click.argument("client_ref", metavar="CLIENT")
@click.argument("amount", type=click.IntRange(min=1), metavar="N")
@click.option("--on", "on", type=DATE, help="Purchase date YYYY-MM-DD (default today).")
@click.option("--note", help="Invoice number or similar.")
@json_option
@pass_app
def credits_buy(app: App, client_ref: str, amount: int, on: datetime | None, note: str | None,
                as_json: bool) -> None:
    """Record a purchase of N credits (never expire; the price in yen is recorded).

    \b
    mailflow credits buy Acme 3                  # 3 x credits.price_yen recorded
    mailflow credits buy a@acme.example 10 --on 2026-11-01 --note "invoice 2026-118"
    """
    _add_lot(app, client_ref, LotKind.PURCHASE, amount, on, None, False, note, as_json)


def _add_lot(app: App, client_ref: str, kind: LotKind, amount: int, on: datetime | None,
             expires_days: int | None, never_expires: bool, note: str | None,
             as_json: bool) -> None:
    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        lot = ledger.add_lot(session, app.desk, client=client, kind=kind, credits=amount,
                             on=on.date() if on else None, expires_days=expires_days,
                             never_expires=never_expires, note=note)
        available = ledger.balance(session, app.desk, client.id).available
    if as_json:
        emit_json({"lot": lot.id, "client": client.name, "kind": kind.value, "credits": amount,
                   "price_yen": lot.price_yen, "granted_at": lot.granted_at,
                   "expires_at": lot.expires_at, "available": available})
        return
    expiry = (f"expires {lot.expires_at.astimezone(app.desk.tz).date().isoformat()}"
              if lot.expires_at else "never expires")
    price = f", {lot.price_yen:,} yen" if lot.price_yen else ""
    click.echo(f"{client.name}: {kind.value} of {amount} credits ({expiry}{price});"
               f" available now {available}")


@cli.command()
@click.argument("client_ref", metavar="CLIENT")
@json_option
@pass_app
def balance(app: App, client_ref: str, as_json: bool) -> None:
    """Available credits, lots with their expiry, and the recent ledger.

    \b
    mailflow balance Acme
    mailflow balance a@acme.example --json | jq .available
    """
    desk = app.desk
    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        ledger.sweep_expired(session, desk, client.id)
        summary = ledger.balance(session, desk, client.id)
        lots = ledger.lots_with_remaining(session, client.id)
        entries = ledger.recent_entries(session, client.id, limit=50)
    data = {
        "client": client.name, "available": summary.available,
        "never_expiring": summary.never_expiring,
        "next_expiry": ({"credits": summary.next_expiry_credits,
                         "expires_at": summary.next_expiry_at}
                        if summary.next_expiry_at else None),
        "lots": [{"id": lot.id, "kind": lot.kind, "credits": lot.credits, "remaining": left,
                  "granted_at": lot.granted_at, "expires_at": lot.expires_at,
                  "price_yen": lot.price_yen} for lot, left in lots],
        "entries": [{"id": e.id, "at": e.at, "kind": e.kind, "delta": e.delta, "lot": e.lot_id,
                     "request": e.request_id, "actor": e.actor, "note": e.note}
                    for e in entries],
    }
    if as_json:
        emit_json(data)
        return
    local = lambda value: value.astimezone(desk.tz).strftime("%Y-%m-%d %H:%M") if value else None  # noqa: E731
    click.echo(f"{client.name}: {summary.available} credits available"
               f" ({summary.never_expiring} never expire)")
    table("Lots", ["lot", "kind", "credits", "remaining", "granted", "expires"],
          [[lot.id, lot.kind, lot.credits, left, local(lot.granted_at),
            local(lot.expires_at) or "never"] for lot, left in lots])
    table("Ledger (newest first)", ["at", "kind", "delta", "lot", "request", "note"],
          [[local(e.at), e.kind, f"{e.delta:+d}", e.lot_id,
            desk.tag(e.request_id) if e.request_id else "", e.note] for e in entries])


# --- requests -------------------------------------------------------------

@cli.group("request")
def request_group() -> None:
    """Log a request that came by phone or chat."""


@request_group.command("new")
@click.argument("client_ref", metavar="CLIENT")
@click.option("--subject", required=True)
@click.option("--text", default="", help="What the client asked for.")
@click.option("--from", "requester", help="Requester address (default: the client's first).")
@json_option
@pass_app
def request_new(app: App, client_ref: str, subject: str, text: str, requester: str | None,
                as_json: bool) -> None:
    """Create a request; the client gets the usual acknowledgement."""
    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        emails = client_service.client_emails(session, client.id)
        if requester and requester.lower() not in emails:
            raise MailflowError(f"{requester} is not an address of client {client.name}")
        request = request_service.create_request(
            session, app.desk, client=client, requester=requester or emails[0],
            subject=subject, text=text)
        row = _request_row(session, app.desk, request)
    if as_json:
        emit_json(row)
    else:
        click.echo(f"{app.desk.tag(request.id)} created for {client.name}: {request.subject}")


def _request_row(session, desk: Desk, request, *, messages: bool = False) -> dict:
    client = client_service.find_client(session, str(request.client_id))
    row = {"id": request.id, "tag": desk.tag(request.id), "status": request.status,
           "client": client.name, "requester": request.requester, "subject": request.subject,
           "credits": request.credits, "due": request.due, "created_at": request.created_at}
    if messages:
        quote = request_service.current_quote(session, request)
        row["text"] = request.text
        row["quote"] = ({"credits": quote.credits, "due": quote.due, "status": quote.status,
                         "valid_until": quote.valid_until} if quote else None)
        row["messages"] = request_service.request_thread(session, request.id)
        row["entries"] = [{"at": e.at, "kind": e.kind, "delta": e.delta, "lot": e.lot_id}
                          for e in request_service.request_entries(session, request.id)]
    return row


@cli.command("requests")
@click.option("--status", type=click.Choice([s.value for s in Status]))
@click.option("--client", "client_ref", metavar="CLIENT")
@json_option
@pass_app
def requests_list(app: App, status: str | None, client_ref: str | None, as_json: bool) -> None:
    """List requests, optionally by status or client.

    \b
    mailflow requests --status received          # waiting for a quote
    mailflow requests --client Acme --json
    """
    with app.session() as session:
        client_id = client_service.find_client(session, client_ref).id if client_ref else None
        rows = [_request_row(session, app.desk, r) for r in request_service.list_requests(
            session, status=Status(status) if status else None, client_id=client_id)]
    if as_json:
        emit_json(rows)
        return
    table("Requests", ["request", "status", "client", "subject", "credits", "due"],
          [[r["tag"], r["status"], r["client"], r["subject"], r["credits"], r["due"]]
           for r in rows])


@cli.command()
@click.argument("request_id", type=int, metavar="ID")
@json_option
@pass_app
def show(app: App, request_id: int, as_json: bool) -> None:
    """One request with its thread and ledger effects."""
    with app.session() as session:
        request = request_service.get_request(session, request_id)
        row = _request_row(session, app.desk, request, messages=True)
    if as_json:
        emit_json(row)
        return
    click.echo(f"{row['tag']} {row['subject']}\n  client {row['client']} ({row['requester']}),"
               f" {row['status']}" + (f", {row['credits']} credits due {row['due']}"
                                      if row["credits"] else ""))
    if row["text"]:
        click.echo("\n" + row["text"].strip() + "\n")
    table("Thread", ["at", "dir", "kind", "subject", "who"],
          [[m["at"].astimezone(app.desk.tz).strftime("%Y-%m-%d %H:%M"), m["direction"],
            m["kind"], m["subject"], m["from"] or m["to"]] for m in row["messages"]])
    if row["entries"]:
        table("Ledger", ["kind", "delta", "lot"],
              [[e["kind"], f"{e['delta']:+d}", e["lot"]] for e in row["entries"]])


@cli.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--credits", "credit_count", type=click.IntRange(min=1), help="Credits to quote.")
@click.option("--task", help="A catalog key; its typical credits are quoted.")
@click.option("--due", type=DATE, required=True, help="Completion date YYYY-MM-DD.")
@click.option("--note", help="A note shown in the quote.")
@pass_app
def quote(app: App, request_id: int, credit_count: int | None, task: str | None, due: datetime,
          note: str | None) -> None:
    """Quote a request: mailflow quote 12 --credits 2 --due 2026-12-10"""
    if (credit_count is None) == (task is None):
        raise click.UsageError("give exactly one of --credits N or --task KEY")
    terms = (request_service.terms_from_task(app.desk, task, due.date(), note) if task
             else request_service.QuoteTerms(credit_count, due.date(), note))
    with app.session() as session:
        q = request_service.quote_request(session, app.desk, request_id=request_id, terms=terms)
    click.echo(f"{app.desk.tag(request_id)} quoted {q.credits} credits, due {q.due.isoformat()}")


@cli.command()
@click.argument("request_id", type=int, metavar="ID")
@pass_app
def approve(app: App, request_id: int) -> None:
    """Record the client's approval (given by phone); takes the credits."""
    with app.session() as session:
        request = request_service.approve_request(session, app.desk, request_id=request_id)
        available = ledger.balance(session, app.desk, request.client_id).available
    click.echo(f"{app.desk.tag(request_id)} approved: {request.credits} credits taken,"
               f" {available} left")


@cli.command()
@click.argument("request_id", type=int, metavar="ID")
@pass_app
def reject(app: App, request_id: int) -> None:
    """Record the client's rejection (given by phone)."""
    with app.session() as session:
        request_service.reject_request(session, app.desk, request_id=request_id)
    click.echo(f"{app.desk.tag(request_id)} rejected")


@cli.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--note", help="What was done, for the client.")
@pass_app
def complete(app: App, request_id: int, note: str | None) -> None:
    """Mark approved work as completed; the client is told."""
    with app.session() as session:
        request_service.complete_request(session, app.desk, request_id=request_id, note=note)
    click.echo(f"{app.desk.tag(request_id)} completed")


@cli.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--refund", is_flag=True, help="Give an approved request's credits back.")
@pass_app
def cancel(app: App, request_id: int, refund: bool) -> None:
    """Cancel an open request (with --refund, an approved one's credits return)."""
    with app.session() as session:
        _, refunded = request_service.cancel_request(session, app.desk, request_id=request_id,
                                                     refund=refund)
    suffix = f", {refunded} credits refunded" if refunded else ""
    click.echo(f"{app.desk.tag(request_id)} cancelled{suffix}")


# --- outbox ---------------------------------------------------------------

@cli.command()
@click.option("--retry", is_flag=True, help="Requeue permanently failed messages.")
@click.option("--all", "show_all", is_flag=True, help="Include messages already sent.")
@json_option
@pass_app
def outbox(app: App, retry: bool, show_all: bool, as_json: bool) -> None:
    """Pending and failed outgoing mail.

    \b
    mailflow outbox                  # what has not gone out yet, with the last error
    mailflow outbox --retry          # queue permanently failed messages again
    mailflow outbox --all --json     # everything, with the text as sent
    """
    with app.session() as session:
        if retry:
            count = outbox_service.retry_failed(session, app.desk)
            if not as_json:
                click.echo(f"{count} failed message{'s' * (count != 1)} queued again")
        rows = [{"id": m.id, "to": m.to_addrs, "subject": m.subject, "status": m.status,
                 "attempts": m.attempts, "template": m.template, "message_id": m.message_id,
                 "request": m.request_id, "last_error": m.last_error, "created_at": m.created_at,
                 "body": m.body_text}
                for m in outbox_service.list_outbox(session, include_sent=show_all or as_json)]
    if as_json:
        emit_json(rows)
        return
    table("Outbox", ["id", "status", "attempts", "to", "subject", "error"],
          [[r["id"], r["status"], r["attempts"], r["to"], r["subject"], r["last_error"]]
           for r in rows])


# --- mail ---------------------------------------------------------------------

@cli.command()
@click.option("--once", is_flag=True, required=True,
              help="Process all mail waiting now, send the outbox, exit.")
@click.option("--since", type=DATE, help="With --no-answers: import mail since this date.")
@click.option("--no-answers", is_flag=True,
              help="Record messages only: no requests changed, nothing sent (history import).")
@click.option("--start", type=click.Choice(["new", "all"]),
              help="First connection only: override mailbox.imap.start.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True, help="info: one line per message.")
@json_option
@pass_app
def poll(app: App, once: bool, since: datetime | None, no_answers: bool, start: str | None,
         log_level: str, as_json: bool) -> None:
    """Fetch and process new mail from the IMAP folder, send the outbox, exit.

    \b
    mailflow poll --once
    mailflow poll --once --since 2026-01-01 --no-answers   # import history as records
    """
    from mailflow.adapters.imap import Mailbox, MailboxError
    from mailflow.logs import configure_logging
    from mailflow.poller import Poller
    from mailflow.sender import SenderProcess

    if since and not no_answers:
        raise click.UsageError("--since imports history: use it with --no-answers")
    configure_logging("text", log_level)
    with app.session():  # checks the schema before touching the mailbox
        pass
    mailbox = Mailbox(app.settings.mailbox.imap)
    progress = _progress_printer() if not as_json and sys.stderr.isatty() else None
    sender = SenderProcess(app.engine, app.desk).start()  # sends while batches go on
    try:
        with mailbox:
            report = Poller(app.engine, app.desk, mailbox, progress=progress,
                            after_batch=sender.wake).poll_once(
                since=since.date() if since else None, answers=not no_answers, start=start)
    except MailboxError as error:
        raise MailflowError(f"IMAP {app.settings.mailbox.imap.host}:"
                            f"{app.settings.mailbox.imap.port}: {error}") from None
    finally:
        sent = sender.stop()
    data = {"processed": report.processed, "failed": report.failed,
            "duplicates": report.duplicates, "moved_leftovers": report.moved_leftovers,
            "verdicts": report.verdicts, "sent": sent.sent, "send_retrying": sent.retrying,
            "send_failed": sent.failed, "skipped_locked": report.skipped_locked}
    if as_json:
        emit_json(data)
        return
    if report.skipped_locked:
        click.echo("another mailflow instance is polling this mailbox; nothing done")
        return
    click.echo(f"{report.processed} processed, {report.failed} failed,"
               f" {report.duplicates} already done; {sent.sent} sent"
               + (f", {sent.retrying} to retry" if sent.retrying else "")
               + (f", {sent.failed} failed to send" if sent.failed else ""))


def _progress_printer():
    from rich.progress import Progress

    progress = Progress(transient=True)
    task = progress.add_task("processing mail", total=None)
    progress.start()

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)
        if done >= total:
            progress.stop()

    return update


# Commands that live beside their subsystem register themselves on `cli`.
import mailflow.cli_commands  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="mailflow", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
