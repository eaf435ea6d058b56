"""`mailflow clients add|list|show|edit|import` and `clients address add|remove`:
clients and their addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mailflow.cli.app import App, emit_json, json_option, pass_app, table

if TYPE_CHECKING:
    from mailflow.desk import Desk


@click.group()
def clients() -> None:
    """Clients and their addresses.

    \b
    mailflow clients add Acme --email a@acme.example --plan 5
    mailflow clients show Acme
    mailflow clients edit Acme --plan 8 --lang ja
    mailflow clients address add Acme b@acme.example
    mailflow clients import clients.csv --dry-run

    CLIENT is a client's name, id or any of its addresses.
    """


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
    from mailflow.services import clients as client_service

    with app.session() as session:
        client = client_service.add_client(session, app.desk, name=name, emails=list(emails),
                                           plan=plan, lang=lang)
        row = _client_row(session, app.desk, client)
    if as_json:
        emit_json(row)
    else:
        click.echo(f"client {row['id']} {row['name']} added ({', '.join(row['emails'])})")


def _client_row(session, desk: Desk, client) -> dict:
    from mailflow.services import clients as client_service
    from mailflow.services import credits as ledger

    return {"id": client.id, "name": client.name,
            "emails": client_service.client_emails(session, client.id),
            "plan": client.plan_credits, "lang": client.lang,
            "available": ledger.balance(session, desk, client.id).available,
            "active": client.active}


@clients.command("list")
@json_option
@pass_app
def clients_list(app: App, as_json: bool) -> None:
    """List clients with their available credits."""
    from mailflow.services import clients as client_service

    with app.session() as session:
        rows = [_client_row(session, app.desk, c) for c in client_service.list_clients(session)]
    if as_json:
        emit_json(rows)
        return
    table("Clients", ["id", "name", "emails", "plan", "lang", "available", "active"],
          [[r["id"], r["name"], ", ".join(r["emails"]), r["plan"], r["lang"], r["available"],
            "yes" if r["active"] else "no"] for r in rows])


@clients.command("show")
@click.argument("client_ref", metavar="CLIENT")
@json_option
@pass_app
def clients_show(app: App, client_ref: str, as_json: bool) -> None:
    """One client: language, plan, addresses, balance and open requests.

    \b
    mailflow clients show Acme
    mailflow clients show a@acme.example --json
    """
    from mailflow.services import clients as client_service
    from mailflow.services import credits as ledger

    desk = app.desk
    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        ledger.sweep_expired(session, desk, client.id)
        row = _client_row(session, desk, client)
        allotment = ledger.next_allotment(session, desk, client)
        row["next_allotment"] = (None if allotment is None else
                                 {"at": allotment.at, "credits": allotment.credits})
        row["open_requests"] = [
            {"id": r.id, "tag": desk.tag(r.id), "status": r.status, "subject": r.subject,
             "credits": r.credits, "due": r.due}
            for r in client_service.open_requests(session, client.id)]
    if as_json:
        emit_json(row)
        return
    allotment = row["next_allotment"]
    plan = (f"{row['plan']} credits a month (next allotment {allotment['credits']} on"
            f" {allotment['at']:%Y-%m-%d})"
            if allotment else f"{row['plan']} credits a month"
            if row["plan"] else "no plan")
    click.echo(f"{row['name']} (client {row['id']}), "
               + ("active" if row["active"] else "deactivated: its mail is held"))
    click.echo(f"  language   {row['lang']}\n  plan       {plan}\n"
               f"  addresses  {', '.join(row['emails'])}\n"
               f"  available  {row['available']} credits")
    if not row["open_requests"]:
        click.echo("  no open requests")
        return
    table("Open requests", ["request", "status", "subject", "credits", "due"],
          [[r["tag"], r["status"], r["subject"], r["credits"], r["due"]]
           for r in row["open_requests"]])


@clients.command("edit")
@click.argument("client_ref", metavar="CLIENT")
@click.option("--name", help="A new name.")
@click.option("--lang", type=click.Choice(["en", "ja"]), help="The language of its mail.")
@click.option("--plan", type=click.IntRange(min=1), help="Monthly plan credits (from the next"
              " allotment).")
@click.option("--no-plan", is_flag=True, help="No monthly plan any more.")
@click.option("--activate/--deactivate", "active", default=None,
              help="A deactivated client's mail is held for staff; it gets no allotment,"
                   " digest or expiry warning.")
@json_option
@pass_app
def clients_edit(app: App, client_ref: str, name: str | None, lang: str | None,
                 plan: int | None, no_plan: bool, active: bool | None, as_json: bool) -> None:
    """Change a client's name, language, plan, or whether it is active.

    \b
    mailflow clients edit Acme --plan 8 --lang ja
    mailflow clients edit a@acme.example --name "Acme Corp"
    mailflow clients edit Acme --no-plan --deactivate
    """
    from mailflow.services import clients as client_service

    if plan is not None and no_plan:
        raise click.UsageError("--plan and --no-plan exclude each other")
    if name is None and lang is None and plan is None and not no_plan and active is None:
        raise click.UsageError("nothing to change: give --name, --lang, --plan, --no-plan,"
                               " --activate or --deactivate")
    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        changes = client_service.edit_client(session, client, name=name, lang=lang,
                                             plan=0 if no_plan else plan, active=active)
        row = _client_row(session, app.desk, client)
    if as_json:
        emit_json({"client": row, "changes": changes})
        return
    if not changes:
        click.echo(f"{row['name']}: nothing changed")
        return
    click.echo(f"{row['name']}: " + "; ".join(_describe(k, v) for k, v in changes.items()))


def _describe(field: str, change: tuple) -> str:
    before, after = change
    if field == "active":
        return "activated" if after else "deactivated (its mail is held from now on)"
    none = "no plan" if field == "plan" else "none"
    return f"{field} {none if before is None else before} → {none if after is None else after}"


@clients.group("address")
def address() -> None:
    """Add or remove a client's contact addresses (an address belongs to one client).

    \b
    mailflow clients address add Acme b@acme.example
    mailflow clients address remove Acme old@acme.example
    """


@address.command("add")
@click.argument("client_ref", metavar="CLIENT")
@click.argument("email", metavar="ADDR")
@json_option
@pass_app
def address_add(app: App, client_ref: str, email: str, as_json: bool) -> None:
    """Make ADDR a contact of CLIENT: its mail becomes the client's.

    \b
    mailflow clients address add Acme b@acme.example
    """
    _change_address(app, client_ref, email, as_json, add=True)


@address.command("remove")
@click.argument("client_ref", metavar="CLIENT")
@click.argument("email", metavar="ADDR")
@json_option
@pass_app
def address_remove(app: App, client_ref: str, email: str, as_json: bool) -> None:
    """Remove ADDR from CLIENT's addresses (never the last one).

    \b
    mailflow clients address remove Acme old@acme.example
    """
    _change_address(app, client_ref, email, as_json, add=False)


def _change_address(app: App, client_ref: str, email: str, as_json: bool, *, add: bool) -> None:
    from mailflow.services import clients as client_service

    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        if add:
            changed = client_service.add_address(session, app.desk, client, email)
        else:
            client_service.remove_address(session, client, email)
            changed = True
        row = _client_row(session, app.desk, client)
    email = email.strip().lower()
    if as_json:
        emit_json({"client": row, "address": email, "changed": changed})
    elif not changed:
        click.echo(f"{email} is already an address of {row['name']}")
    else:
        click.echo(f"{email} {'added to' if add else 'removed from'} {row['name']}"
                   f" (addresses: {', '.join(row['emails'])})")


@clients.command("import")
@click.argument("path", metavar="FILE.csv",
                type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option("--encoding", help="The file's encoding (default: UTF-8 with or without BOM,"
              " else CP932, Shift_JIS as Excel in Japan saves it).")
@json_option
@pass_app
def clients_import(app: App, path: str, dry_run: bool, encoding: str | None,
                   as_json: bool) -> None:
    """Create or update clients from a CSV file (idempotent; all or nothing).

    The header row names the columns: name, emails (several separated by ; or
    spaces), plan (credits a month, 0 = no plan), lang (en or ja).  A client is
    matched by name; an import adds addresses and never removes any, and an
    empty plan or lang cell leaves the field as it is.  If any line is in
    error, nothing is written: fix the file and import it again.

    \b
    name,emails,plan,lang
    Acme,a@acme.example; b@acme.example,5,en
    さくら商事,info@sakura.example,,ja

    \b
    mailflow clients import clients.csv --dry-run    # what would change
    mailflow clients import clients.csv
    mailflow clients import clients.csv --encoding cp932 --json
    """
    from pathlib import Path

    from mailflow.core import clientcsv
    from mailflow.errors import MailflowError
    from mailflow.services import clients as client_service

    try:
        text, used = clientcsv.decode(Path(path).read_bytes(), encoding)
    except LookupError:
        raise click.BadParameter(f"unknown encoding {encoding!r}",
                                 param_hint="--encoding") from None
    except clientcsv.UndecodableFile as error:
        raise MailflowError(f"{path}: {error}") from None
    rows, errors = clientcsv.read_rows(text)
    with app.session() as session:
        lines = client_service.import_clients(session, app.desk, rows, errors)
        failed = sum(line.action == "error" for line in lines)
        report = {"file": path, "encoding": used, "dry_run": dry_run,
                  "written": not (dry_run or failed),
                  **{action: sum(line.action == action for line in lines)
                     for action in ("created", "updated", "unchanged")},
                  "errors": failed,
                  "lines": [{"line": line.line, "name": line.name, "action": line.action,
                             "changes": line.changes, "added": line.added, "error": line.error}
                            for line in lines]}
        _print_import(report, as_json)
        if failed:
            raise MailflowError(f"{failed} line{'s' * (failed != 1)} in error: nothing was"
                                " imported (fix them and import the file again)")
        if dry_run:
            session.rollback()


def _print_import(report: dict, as_json: bool) -> None:
    if as_json:
        emit_json(report)
        return
    for line in report["lines"]:
        changes, added = line["changes"], line["added"]
        if line["action"] == "error":
            detail = line["error"]
        elif line["action"] == "created":
            detail = (f"{line['name']}: {', '.join(added)}; plan {changes['plan'][1] or 'none'};"
                      f" {changes['lang'][1]}")
        else:
            parts = [_describe(k, v) for k, v in changes.items()]
            if added:
                parts.append(f"address{'es' * (len(added) > 1)} {', '.join(added)} added")
            detail = line["name"] + (": " + "; ".join(parts) if parts else "")
        click.echo(f"line {line['line']:<4} {line['action']:<9}  {detail}")
    outcome = ("dry run: nothing written" if report["dry_run"] else
               "nothing written" if report["errors"] else "written")
    click.echo(f"{report['created']} created, {report['updated']} updated,"
               f" {report['unchanged']} unchanged, {report['errors']} in error ({outcome})")
