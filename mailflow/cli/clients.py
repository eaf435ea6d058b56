"""`mailflow clients add|list`: clients and their addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mailflow.cli.app import App, emit_json, json_option, pass_app, table

if TYPE_CHECKING:
    from mailflow.desk import Desk


@click.group()
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
            "available": ledger.balance(session, desk, client.id).available}


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
    table("Clients", ["id", "name", "emails", "plan", "lang", "available"],
          [[r["id"], r["name"], ", ".join(r["emails"]), r["plan"], r["lang"], r["available"]]
           for r in rows])
