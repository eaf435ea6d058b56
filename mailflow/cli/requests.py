"""`mailflow request new`, `requests`, `show`, and a request's steps: `quote`,
`approve`, `reject`, `complete`, `cancel`, `redate`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from mailflow.cli.app import DATE, App, emit_json, json_option, pass_app, plural, table
from mailflow.core.states import Status
from mailflow.errors import MailflowError

if TYPE_CHECKING:
    from mailflow.desk import Desk


@click.group("request")
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
    from mailflow.services import clients as client_service
    from mailflow.services import requests as request_service

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
    from mailflow.services import clients as client_service
    from mailflow.services import requests as request_service
    from mailflow.services import staff as staff_service

    client = client_service.find_client(session, str(request.client_id))
    row = {"id": request.id, "tag": desk.tag(request.id), "status": request.status,
           "client": client.name, "requester": request.requester, "subject": request.subject,
           "credits": request.credits, "due": request.due,
           "days_left": staff_service.days_left(desk, request), "owner": request.owner,
           "created_at": request.created_at}
    if messages:
        row["cc"] = [a for a in (request.cc_addrs or "").split(",") if a]
        row["attachments"] = [{"n": f.number, "name": f.filename, "type": f.content_type,
                               "size": f.size, "from": f.from_addr, "at": f.received_at}
                              for f in staff_service.request_files(session, request.id)]
        row["notes"] = [{"at": n.at, "author": n.author, "text": n.text}
                        for n in staff_service.request_notes(session, request.id)]
        quote = request_service.current_quote(session, request)
        row["text"] = request.text
        row["quote"] = ({"credits": quote.credits, "due": quote.due, "status": quote.status,
                         "valid_until": quote.valid_until} if quote else None)
        row["messages"] = request_service.request_thread(session, request.id)
        row["entries"] = [{"at": e.at, "kind": e.kind, "delta": e.delta, "lot": e.lot_id}
                          for e in request_service.request_entries(session, request.id)]
    return row


@click.command("requests")
@click.option("--status", type=click.Choice([s.value for s in Status]))
@click.option("--client", "client_ref", metavar="CLIENT")
@click.option("--owner", metavar="STAFF", help="Owned by this staff member.")
@click.option("--mine", is_flag=True, help="Owned by $MAILFLOW_STAFF.")
@click.option("--search", metavar="TEXT",
              help="Words found in the subject or text (every word, any language).")
@click.option("--due-before", type=DATE, metavar="DATE", help="Due before DATE (YYYY-MM-DD).")
@json_option
@pass_app
def requests_list(app: App, status: str | None, client_ref: str | None, owner: str | None,
                  mine: bool, search: str | None, due_before: datetime | None,
                  as_json: bool) -> None:
    """List requests, optionally by status, client, owner, words or due date.

    \b
    mailflow requests --status received          # waiting for a quote
    mailflow requests --client Acme --json
    mailflow requests --mine --due-before 2026-12-10
    mailflow requests --search バナー
    """
    import os

    from mailflow.services import clients as client_service
    from mailflow.services import staff as staff_service

    if mine and owner:
        raise click.UsageError("give --owner NAME or --mine, not both")
    if mine:
        owner = os.environ.get("MAILFLOW_STAFF")
        if not owner:
            raise click.UsageError("--mine needs MAILFLOW_STAFF set to your staff name")
    with app.session() as session:
        if owner is not None:
            owner = staff_service.staff_name(app.desk, owner)
        client_id = client_service.find_client(session, client_ref).id if client_ref else None
        rows = [_request_row(session, app.desk, r) for r in staff_service.find_requests(
            session, status=Status(status) if status else None, client_id=client_id,
            owner=owner, search=search,
            due_before=due_before.date() if due_before else None)]
    if as_json:
        emit_json(rows)
        return
    table("Requests", ["request", "status", "client", "subject", "credits", "due", "owner"],
          [[r["tag"], r["status"], r["client"], r["subject"], r["credits"],
            r["due"] if r["days_left"] is None else f"{r['due']} ({_days(r['days_left'])})",
            r["owner"]] for r in rows])


#: Outgoing messages whose status `show` names next to their kind.
_NOT_SENT = ("suppressed", "failed", "bounced", "pending")


def _raw_message(session, request_id: int, messages: list[dict], number: int) -> str:
    """Message NUMBER of a thread: an inbound one as received (its raw bytes when
    kept, else its text), an outgoing one as its text."""
    from sqlmodel import select

    from mailflow.errors import NotFound
    from mailflow.models import Inbound, Outbox

    if number > len(messages):
        raise NotFound(f"request {request_id} has {len(messages)} messages, not {number}")
    message = messages[number - 1]
    if message["direction"] == "out":
        row = session.exec(select(Outbox).where(
            Outbox.message_id == message["message_id"])).first()
        return row.body_text
    row = session.exec(select(Inbound).where(Inbound.request_id == request_id,
                                             Inbound.message_id == message["message_id"])).first()
    if row.raw:
        return row.raw.decode("utf-8", "replace")
    return row.text if row.text.endswith("\n") else row.text + "\n"


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--raw", "raw_number", type=click.IntRange(min=1), metavar="N",
              help="Print message N of the thread (the # column) as received or sent.")
@json_option
@pass_app
def show(app: App, request_id: int, raw_number: int | None, as_json: bool) -> None:
    """One request: owner, due date, thread, attachments, notes and ledger effects.

    \b
    mailflow show 12            # the request, its thread (# column), notes and ledger
    mailflow show 12 --raw 3    # message 3 of the thread, as it arrived
    """
    from mailflow.services import requests as request_service

    with app.session() as session:
        request = request_service.get_request(session, request_id)
        row = _request_row(session, app.desk, request, messages=True)
        if raw_number is not None:
            click.echo(_raw_message(session, request_id, row["messages"], raw_number), nl=False)
            return
    if as_json:
        emit_json(row)
        return
    click.echo(f"{row['tag']} {row['subject']}\n  client {row['client']} ({row['requester']}),"
               f" {row['status']}" + (f", {plural(row['credits'], 'credit')}"
                                      if row["credits"] else ""))
    click.echo(f"  owner {row['owner'] or '(none)'}" + (
        f", due {row['due']}" if row["due"] else ", no due date") + (
        f" ({_days(row['days_left'])})" if row["days_left"] is not None else ""))
    if row["cc"]:
        click.echo(f"  cc {', '.join(row['cc'])}")
    if row["text"]:
        click.echo("\n" + row["text"].strip() + "\n")
    table("Thread", ["#", "at", "dir", "kind", "subject", "who"],
          [[n, m["at"].astimezone(app.desk.tz).strftime("%Y-%m-%d %H:%M"), m["direction"],
            m["kind"] + (f" ({m['status']})" if m.get("status") in _NOT_SENT else ""),
            m["subject"], m["from"] or m["to"]]
           for n, m in enumerate(row["messages"], start=1)])
    for m in row["messages"]:
        if m.get("text"):
            when = m["at"].astimezone(app.desk.tz).strftime("%Y-%m-%d %H:%M")
            click.echo(f"\nReply to the client, {when}:\n" + _indent(m["text"]))
    if row["attachments"]:
        table("Attachments", ["n", "name", "type", "size", "from"],
              [[f["n"], f["name"], f["type"], human_size(f["size"]), f["from"]]
               for f in row["attachments"]])
    if row["notes"]:
        click.echo("\nInternal notes:")
        for n in row["notes"]:
            when = n["at"].astimezone(app.desk.tz).strftime("%Y-%m-%d %H:%M")
            click.echo(f"  {when} {n['author']}: {n['text']}")
    if row["entries"]:
        table("Ledger", ["kind", "delta", "lot"],
              [[e["kind"], f"{e['delta']:+d}", e["lot"]] for e in row["entries"]])


def _days(left: int) -> str:
    if left == 0:
        return "due today"
    if left < 0:
        return f"{plural(-left, 'day')} late"
    return f"{plural(left, 'day')} left"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.strip().splitlines())


def human_size(size: int) -> str:
    from mailflow.render import format_size

    return format_size(size)


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--credits", "credit_count", type=click.IntRange(min=1),
              help="Credits to quote (at most credits.max_credits_per_quote).")
@click.option("--task", help="A catalog key; its typical credits are quoted.")
@click.option("--due", type=DATE, required=True,
              help="Completion date YYYY-MM-DD (today to ten years ahead).")
@click.option("--note", help="A note shown in the quote.")
@pass_app
def quote(app: App, request_id: int, credit_count: int | None, task: str | None, due: datetime,
          note: str | None) -> None:
    """Quote a request: mailflow quote 12 --credits 2 --due 2026-12-10"""
    from mailflow.services import requests as request_service

    if (credit_count is None) == (task is None):
        raise click.UsageError("give exactly one of --credits N or --task KEY")
    terms = (request_service.terms_from_task(app.desk, task, due.date(), note) if task
             else request_service.QuoteTerms(credit_count, due.date(), note))
    with app.session() as session:
        q = request_service.quote_request(session, app.desk, request_id=request_id, terms=terms)
    click.echo(f"{app.desk.tag(request_id)} quoted {plural(q.credits, 'credit')},"
               f" due {q.due.isoformat()}")


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@pass_app
def approve(app: App, request_id: int) -> None:
    """Record the client's approval (given by phone); takes the credits."""
    from mailflow.services import credits as ledger
    from mailflow.services import requests as request_service

    with app.session() as session:
        request = request_service.approve_request(session, app.desk, request_id=request_id)
        available = ledger.balance(session, app.desk, request.client_id).available
    click.echo(f"{app.desk.tag(request_id)} approved: {plural(request.credits, 'credit')}"
               f" taken, {available} left")


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@pass_app
def reject(app: App, request_id: int) -> None:
    """Record the client's rejection (given by phone)."""
    from mailflow.services import requests as request_service

    with app.session() as session:
        request_service.reject_request(session, app.desk, request_id=request_id)
    click.echo(f"{app.desk.tag(request_id)} rejected")


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--note", help="What was done, for the client.")
@pass_app
def complete(app: App, request_id: int, note: str | None) -> None:
    """Mark approved work as completed; the client is told."""
    from mailflow.services import requests as request_service

    with app.session() as session:
        request_service.complete_request(session, app.desk, request_id=request_id, note=note)
    click.echo(f"{app.desk.tag(request_id)} completed")


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--refund", is_flag=True, help="Give an approved request's credits back.")
@pass_app
def cancel(app: App, request_id: int, refund: bool) -> None:
    """Cancel an open request (with --refund, an approved one's credits return)."""
    from mailflow.services import requests as request_service

    with app.session() as session:
        _, refunded = request_service.cancel_request(session, app.desk, request_id=request_id,
                                                     refund=refund)
    suffix = ""
    if refunded is not None and refunded.credits:
        suffix = f", {plural(refunded.credits, 'credit')} refunded"
        if refunded.written_off:
            suffix += (f" ({refunded.written_off} of them had expired and were written off;"
                       f" {refunded.usable} usable again)")
    click.echo(f"{app.desk.tag(request_id)} cancelled{suffix}")


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--due", type=DATE, required=True, help="The new completion date YYYY-MM-DD.")
@click.option("--note", help="Why the date moves, for the client.")
@pass_app
def redate(app: App, request_id: int, due: datetime, note: str | None) -> None:
    """Move an approved request's completion date; the client is told.

    \b
    mailflow redate 12 --due 2026-12-17 --note "The plugin vendor's update is late."
    """
    from mailflow.services import requests as request_service

    with app.session() as session:
        request = request_service.get_request(session, request_id)
        before = request.due
        request_service.redate_request(session, app.desk, request_id=request_id,
                                       due=due.date(), note=note)
    click.echo(f"{app.desk.tag(request_id)} now due {due.date().isoformat()}"
               + (f" (was {before.isoformat()})" if before else ""))
