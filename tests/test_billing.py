"""Buying credits on SQLite and PostgreSQL: invoices, payments, voids, staff
purchases, the monthly report, and the mail each of them writes."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import pytest
from pypdf import PdfReader
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.billing import OrderProblem
from mailflow.core.ledger import EntryKind, LotKind
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.errors import MailflowError, NotFound
from mailflow.models import Client, Entry, Invoice, InvoiceSequence, InvoiceStatus, Lot, Outbox
from mailflow.models import Request as RequestRow
from mailflow.services import billing
from mailflow.services import credits as ledger
from mailflow.services.clients import add_client
from mailflow.services.outbox import queue_message

STAFF = "staff@agency.example"


def make_client(engine, desk, name="Sakura Foods", emails=("hanako@sakura.example",
                                                           "taro@sakura.example"), lang="ja"):
    with transaction(engine) as session:
        return add_client(session, desk, name=name, emails=list(emails), lang=lang)


def issue(engine, desk, client, credits=5, requester="hanako@sakura.example",
          message_id="buy.1@sakura.example") -> Invoice:
    with transaction(engine) as session:
        return billing.issue_invoice(session, desk, client=client, credits=credits,
                                     requester=requester, source_message_id=message_id,
                                     actor=requester or "staff")


def outbox(engine) -> list[Outbox]:
    with transaction(engine) as session:
        return list(session.exec(select(Outbox).order_by(Outbox.id)))


def invoices(engine) -> list[Invoice]:
    with transaction(engine) as session:
        return list(session.exec(select(Invoice).order_by(Invoice.id)))


def pdf_text(data: bytes) -> str:
    """The page's text without spaces and line breaks (runs may be split anywhere)."""
    text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    return "".join(text.split())


# --- issuing ---------------------------------------------------------------------------


def test_buy_issues_a_numbered_invoice_mailed_as_pdf_with_summary(engine, desk):
    client = make_client(engine, desk)
    invoice = issue(engine, desk, client, credits=5)

    assert invoice.number == "INV-2026-0001" and (invoice.year, invoice.seq) == (2026, 1)
    assert (invoice.credits, invoice.unit_price_yen, invoice.subtotal_yen, invoice.tax_yen,
            invoice.total_yen) == (5, 8000, 40000, 4000, 44000)
    assert str(invoice.tax_rate) == "0.10" and invoice.price_includes_tax is False
    assert invoice.status == InvoiceStatus.ISSUED and invoice.paid_at is None
    assert invoice.due == date(2026, 12, 26)  # 2026-11-26 + 30 days
    assert invoice.requester == "hanako@sakura.example"
    assert invoice.pdf.startswith(b"%PDF")

    to_client, to_staff = outbox(engine)
    assert to_client.template == "client/invoice"
    assert to_client.to_addrs == "hanako@sakura.example"
    assert to_client.in_reply_to == "buy.1@sakura.example" and to_client.auto
    assert "INV-2026-0001" in to_client.subject
    assert "44,000円（税込）" in to_client.body_text
    assert "8,000円（税抜）" in to_client.body_text
    assert "2026年12月26日（土）" in to_client.body_text  # the due date with its weekday
    [attachment] = to_client.attachments
    assert (attachment.filename, attachment.content_type) == ("INV-2026-0001.pdf",
                                                              "application/pdf")
    assert attachment.data == invoice.pdf
    assert to_staff.template == "staff/invoice_issued" and to_staff.to_addrs == STAFF
    assert "mailflow paid INV-2026-0001" in to_staff.body_text
    # Nothing is credited before the money arrives.
    with transaction(engine) as session:
        assert ledger.balance(session, desk, client.id).available == 0


def test_the_same_buy_mail_twice_makes_one_invoice_and_one_mail(engine, desk):
    client = make_client(engine, desk)
    first = issue(engine, desk, client, message_id="buy.same@sakura.example")
    again = issue(engine, desk, client, message_id="buy.same@sakura.example")
    assert again.id == first.id
    assert len(invoices(engine)) == 1
    assert len(outbox(engine)) == 2  # the invoice and the staff notice, once


BAD_ORDERS = [
    pytest.param("0", OrderProblem.NOT_POSITIVE, id="zero"),
    pytest.param("-1", OrderProblem.NOT_POSITIVE, id="negative"),
    pytest.param("1.5", OrderProblem.NOT_WHOLE, id="fraction"),
    pytest.param("101", OrderProblem.OVER_LIMIT, id="over-max-credits-per-order"),
    pytest.param("many", OrderProblem.NOT_A_NUMBER, id="not-a-number"),
]


@pytest.mark.parametrize(("quantity", "problem"), BAD_ORDERS)
def test_bad_quantity_gets_a_reason_and_no_invoice_and_no_number(engine, desk, quantity,
                                                                  problem):
    client = make_client(engine, desk)
    with pytest.raises(billing.InvalidOrder) as caught:
        issue(engine, desk, client, credits=quantity)
    assert caught.value.problem is problem and str(caught.value)
    assert invoices(engine) == [] and outbox(engine) == []
    assert issue(engine, desk, client, message_id="buy.2@x").number == "INV-2026-0001"


@pytest.mark.parametrize("lang", ["ja", "en"])
@pytest.mark.parametrize(("quantity", "said"), [
    pytest.param("1.5", {"ja": "1クレジット単位", "en": "whole numbers (you wrote 1.5)"},
                 id="fraction"),
    pytest.param("0", {"ja": "1クレジット以上", "en": "1 credit or more (you wrote 0)"},
                 id="zero"),
    pytest.param("500", {"ja": "100クレジットまで", "en": "at most 100 credits"}, id="too-many"),
    pytest.param("a few", {"ja": "読み取ることができませんでした", "en": "could not read"},
                 id="no-number"),
])
def test_a_refused_order_gets_an_answer_that_says_why(engine, desk, lang, quantity, said):
    client = make_client(engine, desk, lang=lang)
    with pytest.raises(billing.InvalidOrder) as caught:
        issue(engine, desk, client, credits=quantity)
    with transaction(engine) as session:
        row = queue_message(session, desk, template="client/order_refused",
                            to=["hanako@sakura.example"], client=client,
                            context=billing.refused_order_context(desk, quantity, caught.value))
    assert said[lang] in row.body_text
    assert {"ja": "8,000円（税抜、税込8,800円）",
            "en": "8,000 yen plus tax (8,800 yen incl. tax)"}[lang] in row.body_text
    assert {"ja": "請求書はまだ発行しておりません", "en": "No invoice has been issued"}[lang] \
        in row.body_text


def test_deactivated_client_is_refused_and_no_number_is_used(engine, desk):
    client = make_client(engine, desk)
    with transaction(engine) as session:
        session.get(Client, client.id).active = False
    with pytest.raises(MailflowError, match="deactivated; no invoice issued"):
        issue(engine, desk, client)
    with pytest.raises(MailflowError, match="deactivated"):
        with transaction(engine) as session:
            billing.record_purchase(session, desk, client=client, credits=3)
    assert invoices(engine) == [] and outbox(engine) == []
    with transaction(engine) as session:
        session.get(Client, client.id).active = True
    assert issue(engine, desk, client).number == "INV-2026-0001"


def test_a_rollback_after_the_number_was_taken_leaves_no_gap(engine, desk):
    client = make_client(engine, desk)
    issue(engine, desk, client, message_id="m1@x")
    with pytest.raises(RuntimeError):
        with transaction(engine) as session:
            taken = billing.issue_invoice(session, desk, client=client, credits=1,
                                          requester="hanako@sakura.example")
            assert taken.number == "INV-2026-0002"
            raise RuntimeError("the mail server went away before commit")
    assert issue(engine, desk, client, message_id="m3@x").number == "INV-2026-0002"
    assert [i.seq for i in invoices(engine)] == [1, 2]


def test_each_year_has_its_own_sequence(engine, desk, clock):
    client = make_client(engine, desk)
    issue(engine, desk, client, message_id="a@x")
    issue(engine, desk, client, message_id="b@x")
    clock.set(datetime(2026, 12, 31, 15, 0, tzinfo=UTC))  # 2027-01-01 00:00 in Tokyo
    assert issue(engine, desk, client, message_id="c@x").number == "INV-2027-0001"
    with transaction(engine) as session:
        years = {s.year: s.last for s in session.exec(select(InvoiceSequence))}
    assert years == {2026: 2, 2027: 1}


def test_invoice_without_requester_goes_to_every_contact(engine, desk):
    client = make_client(engine, desk)
    issue(engine, desk, client, requester=None, message_id=None)
    to_client = outbox(engine)[0]
    assert to_client.to_addrs == "hanako@sakura.example,taro@sakura.example"
    assert not to_client.auto and to_client.in_reply_to is None


TAX_SETTINGS = [
    # billing settings, price, credits -> subtotal, tax, total, text in the client's mail
    pytest.param({}, 8000, 3, (24000, 2400, 26400), "8,000円（税抜）", id="exclusive-default"),
    pytest.param({"price_includes_tax": True}, 8000, 3, (21819, 2181, 24000), "8,000円（税込）",
                 id="inclusive-floor"),
    pytest.param({"price_includes_tax": True, "rounding": "ceil"}, 8000, 3,
                 (21818, 2182, 24000), "うち消費税（10%）：2,182円", id="inclusive-ceil"),
    pytest.param({"tax_rate": 0.08, "rounding": "round"}, 8013, 1, (8013, 641, 8654),
                 "消費税（8%）：641円", id="reduced-rate-round"),
]


@pytest.mark.parametrize(("billing_settings", "price", "credits", "amounts", "text"),
                         TAX_SETTINGS)
def test_price_basis_and_rounding_follow_the_config(engine, clock, billing_settings, price,
                                                    credits, amounts, text):
    settings = settings_from_mapping({"mailbox": {"address": "support@agency.example"},
                                      "staff": {"notify": [STAFF]},
                                      "credits": {"price_yen": price},
                                      "billing": billing_settings})
    desk = Desk(settings, clock=clock)
    client = make_client(engine, desk)
    invoice = issue(engine, desk, client, credits=credits)
    assert (invoice.subtotal_yen, invoice.tax_yen, invoice.total_yen) == amounts
    assert text in outbox(engine)[0].body_text


# --- the PDF ----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_invoice_pdf_states_every_field_of_a_qualified_invoice(engine, desk, lang):
    client = make_client(engine, desk, name="株式会社さくらフーズ", lang=lang)
    invoice = issue(engine, desk, client, credits=5)
    text = pdf_text(invoice.pdf)
    common = ["INV-2026-0001", "T9234567890123", "ExampleCo.,Ltd.", "株式会社さくらフーズ",
              "ExampleBank,HeadOffice,ordinary1234567", "1-2-3Example-cho"]
    words = {
        "ja": ["請求書", "適格請求書", "株式会社さくらフーズ御中", "登録番号", "発行日",
               "2026年11月26日（木）", "サポートクレジット", "5クレジット", "8,000円",
               "10%対象小計（税抜）40,000円", "消費税（10%）4,000円", "合計（税込）44,000円",
               "お支払期限2026年12月26日（土）", "お振込先"],
        "en": ["INVOICE", "Qualifiedinvoice", "Billto:株式会社さくらフーズ", "Registrationno.",
               "Issuedate2026-11-26(Thu)", "Supportcredits", "5credits", "8,000yen",
               "Subtotalat10%(excl.tax)40,000yen", "Consumptiontax(10%)4,000yen",
               "Total(incl.tax)44,000yen", "Paymentdue2026-12-26(Sat)", "Bankaccount"],
    }[lang]
    missing = [word for word in common + words if word not in text]
    assert missing == [], text


def test_tax_inclusive_pdf_states_the_tax_contained(engine, clock):
    settings = settings_from_mapping({"billing": {"price_includes_tax": True},
                                      "staff": {"notify": [STAFF]}})
    desk = Desk(settings, clock=clock)
    client = make_client(engine, desk)
    text = pdf_text(issue(engine, desk, client, credits=1).pdf)
    assert "10%対象（税込）8,000円" in text and "うち消費税（10%）727円" in text
    assert "単価（税込）" in text


# --- paying ---------------------------------------------------------------------------


def test_payment_creates_a_never_expiring_lot_and_a_receipt_with_the_new_balance(engine,
                                                                                 desk):
    client = make_client(engine, desk)
    issue(engine, desk, client, credits=5)
    with transaction(engine) as session:
        paid = billing.pay_invoice(session, desk, number="inv-2026-0001", actor="Sato")

    assert paid.status == InvoiceStatus.PAID and paid.paid_at == desk.now()
    with transaction(engine) as session:
        lot = session.get(Lot, paid.lot_id)
        assert (lot.kind, lot.credits, lot.expires_at, lot.price_yen) == (
            LotKind.PURCHASE, 5, None, 44000)
        [entry] = session.exec(select(Entry).where(Entry.lot_id == lot.id)).all()
        assert (entry.kind, entry.delta, entry.actor) == (EntryKind.PURCHASE, 5, "Sato")
        assert ledger.balance(session, desk, client.id).available == 5

    receipt, notice = outbox(engine)[2:]
    assert receipt.template == "client/payment_received"
    assert receipt.to_addrs == "hanako@sakura.example"
    assert "44,000円（税込）のご入金を確認いたしました" in receipt.body_text
    footer = receipt.body_text.rsplit("\n-- \n", 1)[1]
    assert "5クレジット" in footer.splitlines()[0]
    assert notice.template == "staff/invoice_paid" and "Sato" in notice.body_text


def test_paying_twice_is_an_error_and_credits_once(engine, desk):
    client = make_client(engine, desk)
    issue(engine, desk, client, credits=2)
    with transaction(engine) as session:
        billing.pay_invoice(session, desk, number="INV-2026-0001")
    with pytest.raises(billing.InvoiceStateError, match="already paid"):
        with transaction(engine) as session:
            billing.pay_invoice(session, desk, number="INV-2026-0001")
    with transaction(engine) as session:
        assert ledger.balance(session, desk, client.id).available == 2
    assert len(outbox(engine)) == 4


def test_a_payment_for_a_void_invoice_is_refused(engine, desk):
    client = make_client(engine, desk)
    issue(engine, desk, client)
    with transaction(engine) as session:
        billing.void_invoice(session, desk, number="INV-2026-0001", reason="ordered twice",
                             actor="Sato")
    with pytest.raises(billing.InvoiceStateError, match="is void .ordered twice."):
        with transaction(engine) as session:
            billing.pay_invoice(session, desk, number="INV-2026-0001")
    with transaction(engine) as session:
        assert session.exec(select(Lot)).all() == []


def test_payment_date_sets_the_lot_date_and_a_future_date_is_refused(engine, desk):
    client = make_client(engine, desk)
    issue(engine, desk, client)
    with pytest.raises(MailflowError, match="in the future"):
        with transaction(engine) as session:
            billing.pay_invoice(session, desk, number="INV-2026-0001", on=date(2026, 11, 27))
    with transaction(engine) as session:
        paid = billing.pay_invoice(session, desk, number="INV-2026-0001",
                                   on=date(2026, 11, 20))
    assert paid.paid_at == datetime(2026, 11, 19, 15, 0, tzinfo=UTC)  # 11-20 00:00 Tokyo
    with transaction(engine) as session:
        assert session.get(Lot, paid.lot_id).granted_at == paid.paid_at


def test_unknown_invoice_is_not_found(engine, desk):
    with pytest.raises(NotFound, match="INV-2026-0042"):
        with transaction(engine) as session:
            billing.pay_invoice(session, desk, number="INV-2026-0042")
    with pytest.raises(NotFound, match="numbers look like"):
        with transaction(engine) as session:
            billing.pay_invoice(session, desk, number="42")


# --- voiding ----------------------------------------------------------------------------


def test_void_records_who_and_why_tells_staff_and_not_the_client(engine, desk, clock):
    client = make_client(engine, desk)
    issue(engine, desk, client)
    clock.advance(hours=2)
    with transaction(engine) as session:
        void = billing.void_invoice(session, desk, number="INV-2026-0001",
                                    reason="  ordered\n twice ", actor="Sato")
    assert (void.status, void.void_reason, void.void_by, void.voided_at) == (
        InvoiceStatus.VOID, "ordered twice", "Sato", clock())
    notice = outbox(engine)[-1]
    assert notice.template == "staff/invoice_void" and notice.to_addrs == STAFF
    assert "ordered twice" in notice.body_text
    assert [row.template for row in outbox(engine)].count("client/invoice") == 1
    # The number stays used: the next invoice does not reuse it.
    assert issue(engine, desk, client, message_id="m2@x").number == "INV-2026-0002"


@pytest.mark.parametrize("state", ["paid", "void"])
def test_only_an_unpaid_invoice_can_be_voided(engine, desk, state):
    client = make_client(engine, desk)
    issue(engine, desk, client)
    with transaction(engine) as session:
        if state == "paid":
            billing.pay_invoice(session, desk, number="INV-2026-0001")
        else:
            billing.void_invoice(session, desk, number="INV-2026-0001", reason="x")
    with pytest.raises(billing.InvoiceStateError, match=f"is {state}"):
        with transaction(engine) as session:
            billing.void_invoice(session, desk, number="INV-2026-0001", reason="again")


def test_void_needs_a_reason(engine, desk):
    client = make_client(engine, desk)
    issue(engine, desk, client)
    with pytest.raises(MailflowError, match="needs a reason"):
        with transaction(engine) as session:
            billing.void_invoice(session, desk, number="INV-2026-0001", reason="  ")


# --- staff purchases (`credits buy`) --------------------------------------------------------


def test_record_purchase_issues_a_paid_invoice_with_lot_and_receipt(engine, desk):
    client = make_client(engine, desk, lang="en")
    with transaction(engine) as session:
        invoice = billing.record_purchase(session, desk, client=client, credits=3,
                                          actor="Sato")
    assert invoice.status == InvoiceStatus.PAID and invoice.lot_id is not None
    assert (invoice.actor, invoice.requester, invoice.source_message_id) == ("Sato", None,
                                                                             None)
    assert "Paidon2026-11-26(Thu)" in pdf_text(invoice.pdf)
    receipt, notice = outbox(engine)
    assert receipt.template == "client/payment_received"
    assert receipt.to_addrs == "hanako@sakura.example,taro@sakura.example"
    assert [a.filename for a in receipt.attachments] == ["INV-2026-0001.pdf"]
    assert "26,400 yen (incl. tax)" in receipt.body_text
    assert notice.template == "staff/invoice_paid"
    with transaction(engine) as session:
        assert ledger.balance(session, desk, client.id).available == 3


def test_record_purchase_on_a_past_date(engine, desk):
    client = make_client(engine, desk)
    with transaction(engine) as session:
        invoice = billing.record_purchase(session, desk, client=client, credits=1,
                                          on=date(2026, 11, 1))
    assert invoice.paid_at == datetime(2026, 10, 31, 15, 0, tzinfo=UTC)
    assert invoice.issued_at == desk.now()  # an invoice is dated when it is issued


# --- listing ------------------------------------------------------------------------------


def test_list_invoices_by_status_and_client(engine, desk):
    sakura = make_client(engine, desk)
    kaede = make_client(engine, desk, name="Kaede Books", emails=["k@kaede.example"])
    issue(engine, desk, sakura, message_id="1@x")
    issue(engine, desk, kaede, requester="k@kaede.example", message_id="2@x")
    issue(engine, desk, sakura, message_id="3@x")
    with transaction(engine) as session:
        billing.pay_invoice(session, desk, number="INV-2026-0003")
        numbers = lambda **kw: [i.number for i in billing.list_invoices(session, **kw)]  # noqa: E731
        assert numbers() == ["INV-2026-0001", "INV-2026-0002", "INV-2026-0003"]
        assert numbers(status="issued") == ["INV-2026-0001", "INV-2026-0002"]
        assert numbers(status=InvoiceStatus.PAID) == ["INV-2026-0003"]
        assert numbers(client_id=kaede.id) == ["INV-2026-0002"]
        assert numbers(status="void") == []


# --- the monthly report -------------------------------------------------------------------


def test_monthly_report_per_client_and_totals(engine, desk, clock):
    clock.set(datetime(2026, 10, 1, 1, 0, tzinfo=UTC))
    sakura = make_client(engine, desk)
    kaede = make_client(engine, desk, name="Kaede Books", emails=["k@kaede.example"])
    make_client(engine, desk, name="Quiet Ltd", emails=["q@quiet.example"])
    with transaction(engine) as session:
        # October: a plan lot of 5 and a grant of 2 expiring 2026-11-10 00:00 Tokyo.
        ledger.add_lot(session, desk, client=sakura, kind=LotKind.PLAN, credits=5,
                       on=date(2026, 10, 1), expires_days=40, period="2026-10")
    clock.set(datetime(2026, 11, 2, 1, 0, tzinfo=UTC))
    with transaction(engine) as session:
        ledger.add_lot(session, desk, client=sakura, kind=LotKind.PLAN, credits=5,
                       on=date(2026, 11, 1), period="2026-11")
        ledger.add_lot(session, desk, client=sakura, kind=LotKind.GRANT, credits=2,
                       on=date(2026, 11, 2))
        request = RequestRow(client_id=sakura.id, requester="hanako@sakura.example",
                             subject="Banner", created_at=desk.now(), updated_at=desk.now())
        session.add(request)
        session.flush()
        ledger.debit(session, desk, client_id=sakura.id, credits=3, request_id=request.id,
                     actor="hanako@sakura.example")
        ledger.refund(session, desk, client_id=sakura.id, request_id=request.id, actor="Sato")
        ledger.debit(session, desk, client_id=sakura.id, credits=1, request_id=request.id,
                     actor="hanako@sakura.example")
    issue(engine, desk, sakura, credits=2, message_id="s1@x")  # paid below
    issue(engine, desk, kaede, credits=1, requester="k@kaede.example", message_id="k1@x")
    issue(engine, desk, kaede, credits=4, requester="k@kaede.example", message_id="k2@x")
    with transaction(engine) as session:
        billing.pay_invoice(session, desk, number="INV-2026-0001")
        billing.void_invoice(session, desk, number="INV-2026-0003", reason="typo")
    clock.set(datetime(2026, 11, 20, 1, 0, tzinfo=UTC))  # the October plan lot has expired
    with transaction(engine) as session:
        ledger.sweep_expired(session, desk)
        report = billing.monthly_report(session, desk, "2026-11")
        october = billing.monthly_report(session, desk, "2026-10")

    rows = {row.client: row for row in report.rows}
    assert list(rows) == ["Kaede Books", "Quiet Ltd", "Sakura Foods"]
    s = rows["Sakura Foods"]
    assert (s.plan, s.granted, s.bought, s.used, s.refunded, s.expired) == (5, 2, 2, 4, 3, 4)
    assert (s.invoices_issued, s.issued_yen, s.issued_tax_yen) == (1, 17600, 1600)
    assert (s.invoices_paid, s.paid_yen, s.paid_tax_yen) == (1, 17600, 1600)
    assert s.expired_value_yen == 4 * 8000
    k = rows["Kaede Books"]
    assert (k.invoices_issued, k.issued_yen, k.invoices_paid, k.invoices_void) == (1, 8800, 0, 1)
    assert rows["Quiet Ltd"] == billing.ReportRow(client="Quiet Ltd")
    assert report.totals.issued_yen == 17600 + 8800 and report.totals.plan == 5
    assert (report.start, report.end) == (date(2026, 11, 1), date(2026, 11, 30))
    assert {row.client: row.plan for row in october.rows}["Sakura Foods"] == 5


@pytest.mark.parametrize("month", ["2026-13", "11/2026", "2026", ""])
def test_report_month_must_be_year_and_month(engine, desk, month):
    with pytest.raises(MailflowError, match="is not YYYY-MM"):
        with transaction(engine) as session:
            billing.monthly_report(session, desk, month)


# --- the schema ---------------------------------------------------------------------------


def test_migration_creates_the_billing_tables_as_the_models_describe_them(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
