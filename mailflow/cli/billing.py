"""`mailflow invoices | paid | invoice void | report`: invoices for credits bought.

(`credits buy`, which issues an invoice already paid, is in `credits.py`.)"""

from __future__ import annotations

from datetime import datetime

import click

from mailflow.cli.app import DATE, App, emit_json, json_option, pass_app, table

STATUSES = ("issued", "paid", "void")  # InvoiceStatus, without importing the models here


@click.command("invoices")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--client", "client_ref", metavar="CLIENT", help="Name, id or address.")
@json_option
@pass_app
def invoices(app: App, status: str | None, client_ref: str | None, as_json: bool) -> None:
    """Invoices for credits bought, oldest first.

    \b
    mailflow invoices --status issued          # unpaid: what to chase
    mailflow invoices --client Acme --json
    """
    from mailflow.services import billing
    from mailflow.services import clients as client_service

    with app.session() as session:
        client_id = client_service.find_client(session, client_ref).id if client_ref else None
        names = {c.id: c.name for c in client_service.list_clients(session)}
        rows = [billing.invoice_row(app.desk, invoice, names[invoice.client_id]) for invoice
                in billing.list_invoices(session, status=status, client_id=client_id)]
    if as_json:
        emit_json(rows)
        return
    table("Invoices", ["number", "client", "credits", "total (incl. tax)", "tax", "status",
                       "issued", "due", "paid"],
          [[r["number"], r["client"], r["credits"], f"{r['total_yen']:,}", f"{r['tax_yen']:,}",
            r["status"], r["issued_at"].date().isoformat(), r["due"].isoformat(),
            r["paid_at"].date().isoformat() if r["paid_at"] else ""] for r in rows])


@click.command("paid")
@click.argument("number", metavar="INVOICE")
@click.option("--on", "on", type=DATE, help="Day the money arrived, YYYY-MM-DD (default today).")
@json_option
@pass_app
def paid(app: App, number: str, on: datetime | None, as_json: bool) -> None:
    """Record an invoice's payment: its credits are added and the client gets a receipt.

    \b
    mailflow paid INV-2026-0001
    mailflow paid INV-2026-0001 --on 2026-12-03
    """
    from mailflow.models import Client
    from mailflow.services import billing
    from mailflow.services import credits as ledger

    with app.session() as session:
        invoice = billing.pay_invoice(session, app.desk, number=number,
                                      on=on.date() if on else None)
        client = session.get(Client, invoice.client_id)
        available = ledger.balance(session, app.desk, client.id).available
        row = billing.invoice_row(app.desk, invoice, client.name)
    if as_json:
        emit_json({**row, "available": available})
        return
    click.echo(f"{invoice.number} paid on {row['paid_at'].date().isoformat()}: {client.name}"
               f" got {invoice.credits} credits ({invoice.total_yen:,} yen incl. tax);"
               f" available now {available}")


@click.group("invoice")
def invoice_group() -> None:
    """Change one invoice: invoice void INVOICE --reason T."""


@invoice_group.command("void")
@click.argument("number", metavar="INVOICE")
@click.option("--reason", required=True, help="Why (kept with the invoice, told to staff).")
@pass_app
def invoice_void(app: App, number: str, reason: str) -> None:
    """Void an unpaid invoice; the client is not mailed, staff are told.

    \b
    mailflow invoice void INV-2026-0002 --reason "ordered twice"
    """
    from mailflow.services import billing

    with app.session() as session:
        invoice = billing.void_invoice(session, app.desk, number=number, reason=reason)
    click.echo(f"{invoice.number} is void: {invoice.void_reason}")


def _month(_ctx, _param, value: str) -> str:
    from mailflow.errors import MailflowError
    from mailflow.services import billing

    try:
        billing.month_bounds(value)
    except MailflowError as error:
        raise click.BadParameter(str(error)) from None
    return value


def report_csv(report) -> bytes:
    """UTF-8 with a byte-order mark, so Excel shows Japanese client names."""
    import csv
    import io

    from mailflow.services.billing import REPORT_COLUMNS

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for row in (*report.rows, report.totals):
        writer.writerow([getattr(row, name) for name in REPORT_COLUMNS])
    return out.getvalue().encode("utf-8-sig")


@click.command("report")
@click.option("--month", required=True, metavar="YYYY-MM", callback=_month,
              help="Calendar month in the configured time zone.")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="CSV for a spreadsheet (UTF-8 with BOM).")
@pass_app
def report(app: App, month: str, as_json: bool, as_csv: bool) -> None:
    """Per client for a month: credits granted, bought, used, expired; yen invoiced and paid.

    \b
    mailflow report --month 2026-11
    mailflow report --month 2026-11 --csv > 2026-11.csv
    """
    from mailflow.services import billing

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    with app.session() as session:
        found = billing.monthly_report(session, app.desk, month)
    if as_csv:
        click.echo(report_csv(found), nl=False)  # bytes go out as they are
        return
    if as_json:
        emit_json({"month": found.month, "start": found.start, "end": found.end,
                   "clients": [row.as_dict() for row in found.rows],
                   "totals": found.totals.as_dict()})
        return
    table(f"Report {found.month}: credits; yen incl. tax (--json/--csv: every column)",
          ["client", "granted", "bought", "used", "expired", "paid yen", "expired value"],
          [[r.client, r.plan + r.granted, r.bought, r.used - r.refunded, r.expired,
            f"{r.paid_yen:,}", f"{r.expired_value_yen:,}"] for r in (*found.rows, found.totals)])
