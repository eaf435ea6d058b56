"""`mailflow credits grant|buy|adjust` and `mailflow balance`: the credit ledger."""

from __future__ import annotations

from datetime import datetime

import click

from mailflow.cli.app import (
    DATE,
    App,
    emit_json,
    json_option,
    local_time,
    pass_app,
    plural,
    table,
)
from mailflow.core.ledger import LotKind


@click.group()
def credits() -> None:
    """Grant, sell or adjust credits."""


@credits.command("grant")
@click.argument("client_ref", metavar="CLIENT")
@click.argument("amount", type=click.IntRange(min=1), metavar="N")
@click.option("--on", "on", type=DATE, help="Grant date YYYY-MM-DD (default today; up to ten "
              "years back, never later than today).")
@click.option("--expires-days", type=click.IntRange(min=1),
              help="Days until expiry, 1-3652 (default credits.expiry_days).")
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
@click.option("--on", "on", type=DATE, help="Purchase date YYYY-MM-DD (default today; up to "
              "ten years back, never later than today).")
@click.option("--no-invoice", is_flag=True,
              help="Only add the lot (importing balances): no invoice, no mail.")
@click.option("--note", help="With --no-invoice: where the purchase came from.")
@json_option
@pass_app
def credits_buy(app: App, client_ref: str, amount: int, on: datetime | None, no_invoice: bool,
                note: str | None, as_json: bool) -> None:
    """Record a purchase of N credits (never expire): an invoice marked paid, and
    the client gets a receipt with the invoice PDF.

    \b
    mailflow credits buy Acme 3                  # invoice INV-…, 3 credits, receipt mailed
    mailflow credits buy a@acme.example 10 --on 2026-11-01 --no-invoice --note "old system"
    """
    if no_invoice:
        _add_lot(app, client_ref, LotKind.PURCHASE, amount, on, None, False, note, as_json)
        return
    if note:
        raise click.UsageError("--note goes with --no-invoice (an invoice names itself)")
    from mailflow.services import billing
    from mailflow.services import clients as client_service
    from mailflow.services import credits as ledger

    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        invoice = billing.record_purchase(session, app.desk, client=client, credits=amount,
                                          on=on.date() if on else None)
        available = ledger.balance(session, app.desk, client.id).available
        row = billing.invoice_row(app.desk, invoice, client.name)
    if as_json:
        emit_json({**row, "lot": invoice.lot_id, "available": available})
        return
    click.echo(f"{client.name}: bought {amount} credit{'s' * (amount != 1)} (never expire), invoice"
               f" {invoice.number} paid, {invoice.total_yen:,} yen incl. tax;"
               f" available now {available}")


@credits.command("adjust", context_settings={"ignore_unknown_options": True})
@click.argument("client_ref", metavar="CLIENT")
@click.argument("delta", type=int, metavar="±N")
@click.option("--reason", required=True, help="Why (shown in `mailflow balance`).")
@click.option("--expires-days", type=click.IntRange(min=1),
              help="+N only: days until expiry (default credits.expiry_days).")
@click.option("--never-expires", is_flag=True, help="+N only: these credits never expire.")
@json_option
@pass_app
def credits_adjust(app: App, client_ref: str, delta: int, reason: str,
                   expires_days: int | None, never_expires: bool, as_json: bool) -> None:
    """Correct a balance by ±N credits: an `adjustment` entry with its reason.

    +N opens a lot of its own (expiring like a grant unless told otherwise);
    -N is taken like a debit, soonest-expiring lots first, and is refused if
    more than the available balance.  The client is not mailed.

    \b
    mailflow credits adjust Acme -2 --reason "banner job quoted twice"
    mailflow credits adjust Acme +1 --reason "typo in the imported balance" --never-expires
    """
    from mailflow.services import clients as client_service
    from mailflow.services import credits as ledger

    if delta == 0:
        raise click.BadParameter("an adjustment is a non-zero number of credits",
                                 param_hint="±N")
    if not reason.strip():
        raise click.BadParameter("say why", param_hint="--reason")
    if expires_days and never_expires:
        raise click.UsageError("--expires-days and --never-expires exclude each other")
    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        done = ledger.adjust(session, app.desk, client=client, delta=delta, reason=reason,
                             expires_days=expires_days, never_expires=never_expires)
    lot = done.lot
    if as_json:
        emit_json({"client": client.name, "delta": delta, "reason": reason.strip(),
                   "lot": lot.id if lot else None,
                   "expires_at": lot.expires_at if lot else None,
                   "draws": [{"lot": d.lot_id, "credits": d.credits} for d in done.draws],
                   "available": done.available})
        return
    if lot is not None:
        where = (f"new lot {lot.id}, expires"
                 f" {lot.expires_at.astimezone(app.desk.tz).date().isoformat()}"
                 if lot.expires_at else f"new lot {lot.id}, never expires")
    else:
        where = "from " + ", ".join(f"lot {d.lot_id}: {d.credits}" for d in done.draws)
    click.echo(f"{client.name}: adjustment {delta:+d} credits ({where}); available now"
               f" {done.available}")


def _add_lot(app: App, client_ref: str, kind: LotKind, amount: int, on: datetime | None,
             expires_days: int | None, never_expires: bool, note: str | None,
             as_json: bool) -> None:
    from mailflow.services import clients as client_service
    from mailflow.services import credits as ledger

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
    click.echo(f"{client.name}: {kind.value} of {plural(amount, 'credit')} ({expiry}{price});"
               f" available now {available}")


@click.command()
@click.argument("client_ref", metavar="CLIENT")
@json_option
@pass_app
def balance(app: App, client_ref: str, as_json: bool) -> None:
    """Available credits, lots with their expiry, and the recent ledger.

    \b
    mailflow balance Acme
    mailflow balance a@acme.example --json | jq .available
    """
    from mailflow.services import clients as client_service
    from mailflow.services import credits as ledger

    desk = app.desk
    with app.session() as session:
        client = client_service.find_client(session, client_ref)
        ledger.sweep_expired(session, desk, client.id)
        summary = ledger.balance(session, desk, client.id)
        lots = ledger.lots_with_remaining(session, client.id)
        entries = ledger.recent_entries(session, client.id, limit=50)
    if as_json:
        # mailflow.render brings Jinja with it: only the JSON has the last usable day
        from mailflow.render import last_usable_day

        data = {
            "client": client.name, "available": summary.available,
            "never_expiring": summary.never_expiring,
            "next_expiry": ({"credits": summary.next_expiry_credits,
                             "expires_at": summary.next_expiry_at}
                            if summary.next_expiry_at else None),
            "lots": [{"id": lot.id, "kind": lot.kind, "credits": lot.credits, "remaining": left,
                      "granted_at": lot.granted_at, "expires_at": lot.expires_at,
                      "usable_through": last_usable_day(lot.expires_at, desk.tz),
                      "price_yen": lot.price_yen} for lot, left in lots],
            "entries": [{"id": e.id, "at": e.at, "kind": e.kind, "delta": e.delta, "lot": e.lot_id,
                         "request": e.request_id, "actor": e.actor, "note": e.note}
                        for e in entries],
        }
        emit_json(data)
        return
    click.echo(f"{client.name}: {plural(summary.available, 'credit')} available"
               f" ({summary.never_expiring} never expire)")
    table("Lots", ["lot", "kind", "credits", "remaining", "granted", "expires"],
          [[lot.id, lot.kind, lot.credits, left, local_time(lot.granted_at, desk),
            local_time(lot.expires_at, desk, none="never")] for lot, left in lots])
    table("Ledger (newest first)", ["at", "kind", "delta", "lot", "request", "note"],
          [[local_time(e.at, desk), e.kind, f"{e.delta:+d}", e.lot_id,
            desk.tag(e.request_id) if e.request_id else "", e.note] for e in entries])
