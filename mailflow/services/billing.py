"""Buying credits: invoices, payments, voids and the monthly report.

An invoice (a Japanese qualified invoice) is numbered from a gapless yearly
sequence: the number is taken under the sequence row's lock in the
transaction that inserts the invoice, so a rollback (an outage, a crash, an
error later in the same use case) gives the number back, and two processes
on PostgreSQL wait for each other instead of taking the same number.

`issue_invoice` (a client's `BUY n`) mails the PDF; `pay_invoice` creates the
purchase lot in the same transaction and mails a receipt with the new
balance; `void_invoice` tells only staff; `record_purchase` (`credits buy`)
issues an invoice already paid.  Every event gets a staff notice.  Like every
service, nothing here commits: the caller's transaction holds it all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import defer
from sqlmodel import Session, select

from mailflow.core.billing import (
    Item,
    OrderCheck,
    OrderProblem,
    check_order,
    due_date,
    format_invoice_number,
    invoice_amounts,
    order_quantity,
    parse_invoice_number,
    percent,
)
from mailflow.core.ledger import EntryKind, LotKind, start_of_day
from mailflow.desk import Desk
from mailflow.errors import MailflowError, NotFound
from mailflow.invoice_pdf import InvoiceDocument, render_invoice_pdf
from mailflow.models import Client, Entry, Invoice, InvoiceSequence, InvoiceStatus, Lot
from mailflow.services import bounds
from mailflow.services import credits as ledger
from mailflow.services.clients import client_emails
from mailflow.services.outbox import FileToSend, notify_staff, price_context, queue_message

STAFF = "staff"


class InvalidOrder(MailflowError):
    """A `BUY n` that cannot become an invoice (0, -1, 1.5, over the limit)."""

    def __init__(self, check: OrderCheck) -> None:
        super().__init__(check.message)
        self.problem: OrderProblem = check.problem  # type: ignore[assignment]
        self.max_credits = check.max_credits


class InvoiceStateError(MailflowError):
    """Paying a paid or void invoice, voiding a paid one."""


# -- the number ------------------------------------------------------------------------


def allocate_number(session: Session, year: int) -> int:
    """The next number of YEAR, taken under the sequence row's lock until commit.

    The row is created on the year's first invoice (a concurrent creator waits
    on the unique key, then finds it); the UPDATE locks it, so a second
    process waits for this transaction and then counts on from its outcome."""
    table = InvoiceSequence.__table__
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(table).values(year=year, last=0)
                    .on_conflict_do_nothing(index_elements=["year"]))
    return session.execute(sa.update(table).where(table.c.year == year)
                           .values(last=table.c.last + 1).returning(table.c.last)).scalar_one()


# -- reading invoices ----------------------------------------------------------------------


def find_invoice(session: Session, number: str, *, lock: bool = False) -> Invoice:
    parsed = parse_invoice_number(number)
    query = select(Invoice)
    if parsed is None:
        raise NotFound(f"invoice {number!r} not found (numbers look like INV-2026-0001)")
    query = query.where(Invoice.year == parsed[0], Invoice.seq == parsed[1])
    if lock:
        # Re-read after the lock: another process may have paid or voided it.
        query = query.with_for_update().execution_options(populate_existing=True)
    invoice = session.exec(query).first()
    if invoice is None:
        raise NotFound(f"invoice {number.strip()!r} not found")
    return invoice


def list_invoices(session: Session, *, status: InvoiceStatus | str | None = None,
                  client_id: int | None = None) -> list[Invoice]:
    """Invoices oldest first, without their PDFs."""
    query = select(Invoice).options(defer(Invoice.pdf)).order_by(Invoice.year, Invoice.seq)
    if status is not None:
        query = query.where(Invoice.status == InvoiceStatus(status))
    if client_id is not None:
        query = query.where(Invoice.client_id == client_id)
    return list(session.exec(query))


def _local_date(desk: Desk, moment: datetime | None) -> date | None:
    return moment.astimezone(desk.tz).date() if moment is not None else None


def invoice_context(desk: Desk, invoice: Invoice) -> dict[str, Any]:
    """What templates say about an invoice."""
    return {
        "number": invoice.number, "credits": invoice.credits,
        "unit_price_yen": invoice.unit_price_yen, "subtotal_yen": invoice.subtotal_yen,
        "tax_yen": invoice.tax_yen, "total_yen": invoice.total_yen,
        "rate": percent(invoice.tax_rate),
        "basis": "incl" if invoice.price_includes_tax else "excl",
        "issued_on": _local_date(desk, invoice.issued_at), "due": invoice.due,
        "paid_on": _local_date(desk, invoice.paid_at), "requester": invoice.requester,
        "status": InvoiceStatus(invoice.status).value, "void_reason": invoice.void_reason,
        "void_by": invoice.void_by, "actor": invoice.actor,
    }


def invoice_row(desk: Desk, invoice: Invoice, client_name: str) -> dict[str, Any]:
    """An invoice as a listing shows it (`invoices --json`); times in the agency's zone."""
    return {"number": invoice.number, "client": client_name, "credits": invoice.credits,
            "subtotal_yen": invoice.subtotal_yen, "tax_yen": invoice.tax_yen,
            "total_yen": invoice.total_yen, "status": InvoiceStatus(invoice.status).value,
            "issued_at": invoice.issued_at.astimezone(desk.tz),
            "paid_at": invoice.paid_at.astimezone(desk.tz) if invoice.paid_at else None,
            "due": invoice.due, "tax_rate": str(invoice.tax_rate),
            "price_includes_tax": invoice.price_includes_tax, "requester": invoice.requester,
            "void_reason": invoice.void_reason}


def _billing_context(desk: Desk) -> dict[str, Any]:
    billing = desk.settings.billing
    return {"issuer": billing.issuer, "registration_number": billing.registration_number,
            "bank_account": billing.bank_account,
            "payment_terms_days": billing.payment_terms_days}


def _document(desk: Desk, invoice: Invoice, client: Client) -> InvoiceDocument:
    billing = desk.settings.billing
    return InvoiceDocument(
        lang=client.lang, number=invoice.number,
        issued_on=_local_date(desk, invoice.issued_at), due=invoice.due,
        recipient=client.name, credits=invoice.credits,
        unit_price_yen=invoice.unit_price_yen, tax_rate=invoice.tax_rate,
        price_includes_tax=invoice.price_includes_tax, subtotal_yen=invoice.subtotal_yen,
        tax_yen=invoice.tax_yen, total_yen=invoice.total_yen, issuer=billing.issuer,
        registration_number=billing.registration_number, issuer_address=billing.address,
        bank_account=billing.bank_account, paid_on=_local_date(desk, invoice.paid_at))


def invoice_file(invoice: Invoice) -> FileToSend:
    return FileToSend(f"{invoice.number}.pdf", "application/pdf", invoice.pdf or b"")


def _recipients(session: Session, invoice: Invoice) -> list[str]:
    """Who hears about an invoice: whoever asked for it, else every contact."""
    return [invoice.requester] if invoice.requester else client_emails(session,
                                                                        invoice.client_id)


# -- issuing -------------------------------------------------------------------------------


def _create_invoice(session: Session, desk: Desk, *, client: Client, credits: int,
                    requester: str | None, source_message_id: str | None, actor: str,
                    paid_at: datetime | None = None) -> Invoice:
    """Number, amounts and PDF of a new invoice, inserted; no mail."""
    client = session.exec(select(Client).where(Client.id == client.id).with_for_update()
                          .execution_options(populate_existing=True)).one()
    if not client.active:
        raise MailflowError(f"client {client.name!r} is deactivated; no invoice issued")
    billing = desk.settings.billing
    price = desk.settings.credits.price_yen
    amounts = invoice_amounts([Item(credits, price, billing.tax_rate)],
                              price_includes_tax=billing.price_includes_tax,
                              rounding=billing.rounding)
    today = desk.today()
    seq = allocate_number(session, today.year)
    invoice = Invoice(
        number=format_invoice_number(today.year, seq), year=today.year, seq=seq,
        client_id=client.id, requester=requester.lower() if requester else None,
        credits=credits, unit_price_yen=price, tax_rate=billing.tax_rate,
        price_includes_tax=billing.price_includes_tax, subtotal_yen=amounts.subtotal_yen,
        tax_yen=amounts.tax_yen, total_yen=amounts.total_yen,
        status=InvoiceStatus.PAID if paid_at else InvoiceStatus.ISSUED,
        issued_at=desk.now(), due=due_date(today, billing.payment_terms_days),
        paid_at=paid_at, actor=actor, source_message_id=source_message_id)
    invoice.pdf = render_invoice_pdf(_document(desk, invoice, client))
    session.add(invoice)
    session.flush()
    return invoice


def issue_invoice(session: Session, desk: Desk, *, client: Client, credits: str | int,
                  requester: str | None = None, source_message_id: str | None = None,
                  actor: str = STAFF, note: str | None = None) -> Invoice:
    """A client's order (`BUY n`): an invoice, mailed as a PDF with a text summary.

    The same message again returns its invoice and mails nothing.  A quantity
    that is not a whole number from 1 to `billing.max_credits_per_order`
    raises `InvalidOrder` (its `problem` names which), a deactivated client a
    `MailflowError`; either way nothing is written.  `note`: what else the
    order mail said, shown to staff in their notice."""
    if source_message_id is not None:
        earlier = session.exec(select(Invoice).where(
            Invoice.source_message_id == source_message_id)).first()
        if earlier is not None:
            return earlier
    check = check_order(credits, max_credits=desk.settings.billing.max_credits_per_order)
    if not check.ok:
        raise InvalidOrder(check)
    invoice = _create_invoice(session, desk, client=client, credits=check.credits,
                              requester=requester, source_message_id=source_message_id,
                              actor=actor)
    context = {"invoice": invoice_context(desk, invoice), "billing": _billing_context(desk)}
    queue_message(session, desk, template="client/invoice", to=_recipients(session, invoice),
                  client=client, context=context, auto=source_message_id is not None,
                  in_reply_to=source_message_id, attachments=[invoice_file(invoice)])
    notify_staff(session, desk, template="staff/invoice_issued", client=client,
                 context={**context, "note": note})
    return invoice


def refused_order_context(desk: Desk, quantity: str | int, error: InvalidOrder) -> dict[str, Any]:
    """What `client/order_refused` says about a `BUY n` that made no invoice."""
    return {"order": {"text": str(quantity), "problem": error.problem.value,
                      "max_credits": desk.settings.billing.max_credits_per_order},
            "price": _unit_price(desk)}


def _unit_price(desk: Desk) -> dict[str, Any]:
    price = price_context(desk)
    return {"unit_yen": price["yen"], "includes_tax": price["tax"] == "incl",
            "unit_yen_incl_tax": price["yen_incl_tax"]}


def order_by_mail(session: Session, desk: Desk, *, client: Client, count: int | None,
                  count_text: str | None, requester: str, message_id: str | None,
                  note: str | None = None) -> tuple[Invoice | None, str]:
    """A client's `BUY n` by mail (new mail or a reply): the invoice, or the
    `client/order_refused` answer saying why there is none.  Idempotent per
    message: the same Message-ID again returns its invoice and mails nothing.
    Both answers reply to a person's explicit order: the loop cap never holds
    them back (`core.loopguard.NEVER_SUPPRESSED`).  `note`: the mail's text when it
    says more than the order (staff read it in their notice).  Returns the invoice (or None) and a note for the record."""
    quantity = order_quantity(count, count_text)
    try:
        invoice = issue_invoice(session, desk, client=client, credits=quantity,
                                requester=requester, source_message_id=message_id,
                                actor=requester, note=note)
    except InvalidOrder as error:
        queue_message(session, desk, template="client/order_refused", to=[requester],
                      client=client, auto=True, in_reply_to=message_id,
                      context=refused_order_context(desk, quantity, error))
        return None, f"order refused: BUY {quantity}: {error}"
    return invoice, f"invoice {invoice.number} for {invoice.credits} credits"


def order_unclear_context(desk: Desk, count: int | None, count_text: str | None
                          ) -> dict[str, Any]:
    """What `client/order_unclear` says: the count the client wrote, if one
    (the example line uses it when it is a valid order), and the price."""
    quantity = order_quantity(count, count_text)
    check = check_order(quantity, max_credits=desk.settings.billing.max_credits_per_order)
    return {"order": {"text": str(quantity) or None, "credits": check.credits},
            "price": _unit_price(desk)}


# -- paying and voiding -------------------------------------------------------------------


def _payment_time(desk: Desk, on: date | None) -> datetime:
    if on is None:
        return desk.now()
    if on > desk.today():
        raise MailflowError(f"payment date {on.isoformat()} is in the future")
    return start_of_day(on, desk.tz)


def _book_payment(session: Session, desk: Desk, invoice: Invoice, client: Client,
                  on: date | None, actor: str) -> Lot:
    """The purchase lot (never expires, records the yen paid) and the paid marks;
    the lot starts when the payment was made (now, or the start of ON)."""
    lot = ledger.add_lot(session, desk, client=client, kind=LotKind.PURCHASE,
                         credits=invoice.credits, on=on, note=f"invoice {invoice.number}",
                         actor=actor)
    lot.price_yen = invoice.total_yen
    invoice.status = InvoiceStatus.PAID
    invoice.paid_at = lot.granted_at
    invoice.lot_id = lot.id
    session.add_all([lot, invoice])
    session.flush()
    return lot


def pay_invoice(session: Session, desk: Desk, *, number: str, on: date | None = None,
                actor: str = STAFF) -> Invoice:
    """Record the payment of an issued invoice: the purchase lot, the paid
    status and a receipt with the new balance, in the caller's transaction."""
    invoice = find_invoice(session, number, lock=True)
    status = InvoiceStatus(invoice.status)
    if status is InvoiceStatus.PAID:
        paid_on = _local_date(desk, invoice.paid_at)
        raise InvoiceStateError(f"invoice {invoice.number} is already paid"
                                f" (on {paid_on.isoformat()}); nothing recorded")
    if status is InvoiceStatus.VOID:
        raise InvoiceStateError(f"invoice {invoice.number} is void ({invoice.void_reason});"
                                " a payment cannot be recorded on it")
    _payment_time(desk, on)  # a date in the future is refused before anything is written
    client = session.get(Client, invoice.client_id)
    _book_payment(session, desk, invoice, client, on, actor)
    context = {"invoice": invoice_context(desk, invoice), "billing": _billing_context(desk)}
    queue_message(session, desk, template="client/payment_received",
                  to=_recipients(session, invoice), client=client, context=context)
    notify_staff(session, desk, template="staff/invoice_paid", client=client,
                 context={**context, "by": actor})
    return invoice


def void_invoice(session: Session, desk: Desk, *, number: str, reason: str,
                 actor: str = STAFF) -> Invoice:
    """Cancel an unpaid invoice: who and why are kept, staff are told, the client is not.
    Its number stays used (the sequence has no gap)."""
    reason = " ".join(reason.split())
    if not reason:
        raise MailflowError("voiding an invoice needs a reason (--reason)")
    invoice = find_invoice(session, number, lock=True)
    status = InvoiceStatus(invoice.status)
    if status is not InvoiceStatus.ISSUED:
        raise InvoiceStateError(f"invoice {invoice.number} is {status.value}; only an unpaid"
                                " invoice can be voided")
    invoice.status = InvoiceStatus.VOID
    invoice.void_reason = reason
    invoice.void_by = actor
    invoice.voided_at = desk.now()
    session.add(invoice)
    session.flush()
    client = session.get(Client, invoice.client_id)
    notify_staff(session, desk, template="staff/invoice_void", client=client,
                 context={"invoice": invoice_context(desk, invoice),
                          "billing": _billing_context(desk)})
    return invoice


def record_purchase(session: Session, desk: Desk, *, client: Client, credits: int,
                    on: date | None = None, actor: str = STAFF) -> Invoice:
    """A purchase staff took outside mail (`credits buy`): an invoice issued and
    paid at once, the purchase lot, and a receipt with the invoice PDF."""
    if isinstance(credits, bool) or not isinstance(credits, int) or credits <= 0:
        raise MailflowError("credits must be a positive whole number")
    # The same bounds as any lot, checked before an invoice number is taken.
    bounds.check_credits(credits, maximum=desk.settings.credits.max_credits_per_grant,
                         what="a purchase", key="max_credits_per_grant")
    if on is not None:
        bounds.check_date(on, today=desk.today(), what="the purchase date", future=False)
    paid_at = _payment_time(desk, on)
    invoice = _create_invoice(session, desk, client=client, credits=credits, requester=None,
                              source_message_id=None, actor=actor, paid_at=paid_at)
    _book_payment(session, desk, invoice, client, on, actor)
    context = {"invoice": invoice_context(desk, invoice), "billing": _billing_context(desk)}
    queue_message(session, desk, template="client/payment_received",
                  to=_recipients(session, invoice), client=client, context=context,
                  attachments=[invoice_file(invoice)])
    notify_staff(session, desk, template="staff/invoice_paid", client=client,
                 context={**context, "by": actor})
    return invoice


# -- the monthly report ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRow:
    """One client's month (or the totals): credits, then yen."""

    client: str
    plan: int = 0  # credits granted by the monthly plan
    granted: int = 0  # credits granted by staff
    bought: int = 0
    used: int = 0
    refunded: int = 0
    expired: int = 0
    adjusted: int = 0
    invoices_issued: int = 0  # not void
    issued_yen: int = 0
    issued_tax_yen: int = 0
    invoices_paid: int = 0
    paid_yen: int = 0
    paid_tax_yen: int = 0
    invoices_void: int = 0
    expired_value_yen: int = 0  # expired credits at credits.price_yen

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


REPORT_COLUMNS = tuple(f.name for f in fields(ReportRow))


@dataclass(frozen=True)
class MonthlyReport:
    month: str
    start: date
    end: date  # the last day
    rows: tuple[ReportRow, ...]
    totals: ReportRow


def month_bounds(month: str) -> tuple[date, date]:
    """'2026-11' → (2026-11-01, 2026-12-01)."""
    try:
        first = datetime.strptime(month.strip(), "%Y-%m").date()
    except ValueError:
        raise MailflowError(f"month {month!r} is not YYYY-MM, like 2026-11") from None
    return first, (first + timedelta(days=32)).replace(day=1)


def monthly_report(session: Session, desk: Desk, month: str) -> MonthlyReport:
    """Per client, for one calendar month in the agency's zone: credits granted
    (plan, grant), bought, used, refunded, expired and adjusted; invoices issued
    and paid with their yen and tax; the list-price value of expired credits."""
    first, after = month_bounds(month)
    start, end = start_of_day(first, desk.tz), start_of_day(after, desk.tz)
    figures: dict[int, dict[str, int]] = {}

    def add(client_id: int, key: str, amount: int) -> None:
        row = figures.setdefault(client_id, {})
        row[key] = row.get(key, 0) + int(amount or 0)

    ledger_rows = session.exec(
        select(Entry.client_id, Entry.kind, Lot.kind, sa.func.sum(Entry.delta))
        .join(Lot, Lot.id == Entry.lot_id)
        .where(Entry.at >= start, Entry.at < end)
        .group_by(Entry.client_id, Entry.kind, Lot.kind))
    for client_id, entry_kind, lot_kind, delta in ledger_rows:
        kind = EntryKind(entry_kind)
        if kind is EntryKind.GRANT:
            add(client_id, "plan" if LotKind(lot_kind) is LotKind.PLAN else "granted", delta)
        elif kind is EntryKind.PURCHASE:
            add(client_id, "bought", delta)
        elif kind is EntryKind.DEBIT:
            add(client_id, "used", -delta)
        elif kind is EntryKind.REFUND:
            add(client_id, "refunded", delta)
        elif kind is EntryKind.EXPIRY:
            add(client_id, "expired", -delta)
        else:
            add(client_id, "adjusted", delta)

    issued = session.exec(
        select(Invoice.client_id, Invoice.status, sa.func.count(), sa.func.sum(Invoice.total_yen),
               sa.func.sum(Invoice.tax_yen))
        .where(Invoice.issued_at >= start, Invoice.issued_at < end)
        .group_by(Invoice.client_id, Invoice.status))
    for client_id, status, count, total, tax in issued:
        if InvoiceStatus(status) is InvoiceStatus.VOID:
            add(client_id, "invoices_void", count)
        else:
            add(client_id, "invoices_issued", count)
            add(client_id, "issued_yen", total)
            add(client_id, "issued_tax_yen", tax)
    paid = session.exec(
        select(Invoice.client_id, sa.func.count(), sa.func.sum(Invoice.total_yen),
               sa.func.sum(Invoice.tax_yen))
        .where(Invoice.paid_at >= start, Invoice.paid_at < end,
               Invoice.status == InvoiceStatus.PAID)
        .group_by(Invoice.client_id))
    for client_id, count, total, tax in paid:
        add(client_id, "invoices_paid", count)
        add(client_id, "paid_yen", total)
        add(client_id, "paid_tax_yen", tax)

    price = desk.settings.credits.price_yen
    clients = session.exec(select(Client).where(Client.created_at < end)
                           .order_by(Client.name)).all()
    rows = []
    for client in clients:
        values = figures.get(client.id, {})
        if not client.active and not values:
            continue
        expired = values.get("expired", 0)
        rows.append(ReportRow(client=client.name, **values,
                              expired_value_yen=expired * price))
    totals = ReportRow(client="total", **{
        name: sum(getattr(row, name) for row in rows) for name in REPORT_COLUMNS[1:]})
    return MonthlyReport(month=first.strftime("%Y-%m"), start=first,
                         end=after - timedelta(days=1), rows=tuple(rows), totals=totals)
