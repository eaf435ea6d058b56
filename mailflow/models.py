"""Database tables (SQLModel), one class per concept.

Datetimes are stored as UTC and always come back aware (`UTCDateTime`), so
SQLite and PostgreSQL behave alike.  The ledger (`Entry`) is append-only;
balances are derived from it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import relationship
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; stored without zone as UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class DecimalText(TypeDecorator):
    """An exact decimal (a tax rate) stored as its text: no float on either database."""

    impl = sa.String(12)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect) -> str | None:
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value: str | None, dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


def _dt(*, nullable: bool = False, index: bool = False):
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class QuoteStatus(StrEnum):
    OPEN = "open"
    VOID = "void"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"  # an automatic answer over the per-address hourly limit


class InvoiceStatus(StrEnum):
    ISSUED = "issued"
    PAID = "paid"
    VOID = "void"


class InboundStatus(StrEnum):
    PROCESSED = "processed"
    IGNORED = "ignored"
    HELD = "held"
    FAILED = "failed"


class Client(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column_kwargs={"unique": True}, max_length=200)
    lang: str = Field(default="en", max_length=5)
    plan_credits: int | None = None
    active: bool = True
    created_at: datetime = _dt()


class Contact(SQLModel, table=True):
    """A client's e-mail address; unique across clients, stored lower-case."""

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="client.id", index=True)
    email: str = Field(sa_column_kwargs={"unique": True}, max_length=320)


class Lot(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("client_id", "period", name="uq_lot_client_period"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="client.id", index=True)
    kind: LotKind = Field(sa_type=sa.String(10))
    credits: int
    granted_at: datetime = _dt()
    expires_at: datetime | None = _dt(nullable=True, index=True)
    price_yen: int | None = None
    period: str | None = Field(default=None, max_length=20)  # "2026-11" for plan allotments
    note: str | None = None
    actor: str = Field(default="staff", max_length=320)


class Entry(SQLModel, table=True):
    """One line of the append-only ledger."""

    __table_args__ = (sa.Index("ix_entry_client_lot", "client_id", "lot_id"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="client.id")
    lot_id: int = Field(foreign_key="lot.id")
    delta: int
    kind: EntryKind = Field(sa_type=sa.String(12))
    request_id: int | None = Field(default=None, foreign_key="request.id", index=True)
    actor: str = Field(default="staff", max_length=320)
    at: datetime = _dt()
    note: str | None = None


class Request(SQLModel, table=True):
    __table_args__ = (sa.Index("ix_request_client_status", "client_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="client.id")
    requester: str = Field(max_length=320)
    subject: str
    text: str = ""
    status: Status = Field(default=Status.RECEIVED, sa_type=sa.String(12), index=True)
    credits: int | None = None
    due: date | None = None
    current_quote_id: int | None = None
    created_at: datetime = _dt()
    updated_at: datetime = _dt()
    # The staff member (a `staff.members` name) who owns it; notices go to them.
    owner: str | None = Field(default=None, max_length=100, index=True)
    # The client's other addresses that took part (From/To/Cc of its mail),
    # comma-separated: answers Cc them (policy.cc_client_contacts).
    cc_addrs: str | None = Field(default=None, max_length=2000)


class Quote(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    credits: int
    due: date
    note: str | None = None
    token: str = Field(sa_column_kwargs={"unique": True}, max_length=64)
    status: QuoteStatus = Field(default=QuoteStatus.OPEN, sa_type=sa.String(10))
    valid_until: datetime = _dt()
    message_id: str | None = Field(default=None, max_length=255, index=True)
    created_at: datetime = _dt()
    actor: str = Field(default="staff", max_length=320)


class Inbound(SQLModel, table=True):
    """Every message that reached us, with what was made of it: the processed-marker."""

    # ix_inbound_from_received: a correspondent's last hour, newest first (the
    # loop guard), is a range of it; it serves lookups by address alone too.
    __table_args__ = (
        sa.UniqueConstraint("mailbox", "uidvalidity", "uid", name="uq_inbound_uid"),
        sa.Index("ix_inbound_from_received", "from_addr", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: str | None = Field(default=None, max_length=255,
                                   sa_column_kwargs={"unique": True})
    mailbox: str | None = Field(default=None, max_length=200)
    uidvalidity: int | None = Field(default=None, sa_type=sa.BigInteger)
    uid: int | None = Field(default=None, sa_type=sa.BigInteger)
    from_addr: str | None = Field(default=None, max_length=320)
    subject: str = ""
    text: str = ""
    status: InboundStatus = Field(default=InboundStatus.PROCESSED, sa_type=sa.String(10))
    classification: str = Field(default="", max_length=40)
    reason: str | None = None
    request_id: int | None = Field(default=None, foreign_key="request.id", index=True)
    raw: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    received_at: datetime = _dt()
    # core.message.content_digest: tells a different message that reuses a
    # Message-ID from the same message delivered again (null before 0010).
    digest: str | None = Field(default=None, max_length=64)
    # core.loopguard.text_digest of `text` as stored: the loop guard compares
    # a correspondent's recent texts without reading them (null before 0013).
    text_digest: str | None = Field(default=None, max_length=64)


class Attachment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    inbound_id: int = Field(foreign_key="inbound.id", index=True)
    filename: str | None = None
    content_type: str = "application/octet-stream"
    size: int = 0
    data: bytes | None = Field(default=None, sa_type=sa.LargeBinary)


class Outbox(SQLModel, table=True):
    """An outgoing message, written in the transaction of the change that caused it."""

    __table_args__ = (sa.Index("ix_outbox_status_next", "status", "next_attempt_at"),
                      sa.Index("ix_outbox_to_created", "to_addrs", "created_at"),
                      sa.Index("ix_outbox_template_created", "template", "created_at"),
                      sa.Index("ix_outbox_to_sent", "to_addrs", "sent_at"))

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=255, sa_column_kwargs={"unique": True})
    template: str = Field(max_length=60)
    request_id: int | None = Field(default=None, foreign_key="request.id", index=True)
    client_id: int | None = Field(default=None, foreign_key="client.id")
    to_addrs: str = Field(max_length=2000)  # comma-separated
    cc_addrs: str | None = Field(default=None, max_length=2000)  # comma-separated
    subject: str
    body_text: str
    body_html: str | None = None
    in_reply_to: str | None = Field(default=None, max_length=255)
    references: str | None = None
    reply_to: str | None = Field(default=None, max_length=320)
    auto: bool = False
    status: OutboxStatus = Field(default=OutboxStatus.PENDING, sa_type=sa.String(10))
    attempts: int = 0
    next_attempt_at: datetime | None = _dt(nullable=True)
    claimed_at: datetime | None = _dt(nullable=True)
    last_error: str | None = None
    created_at: datetime = _dt()
    sent_at: datetime | None = _dt(nullable=True)

    @property
    def recipients(self) -> list[str]:
        return [addr for addr in self.to_addrs.split(",") if addr]

    @property
    def cc_recipients(self) -> list[str]:
        return [addr for addr in (self.cc_addrs or "").split(",") if addr]


class MailboxState(SQLModel, table=True):
    """Where the poller stands in one IMAP folder."""

    __tablename__ = "mailbox_state"

    mailbox: str = Field(primary_key=True, max_length=200)
    uidvalidity: int = Field(sa_type=sa.BigInteger)
    last_uid: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: datetime = _dt()


class JobRun(SQLModel, table=True):
    """A scheduled job done for one period; the unique key makes it happen once."""

    __tablename__ = "job_run"
    __table_args__ = (sa.UniqueConstraint("job", "period", name="uq_jobrun_job_period"),)

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=40)
    period: str = Field(max_length=40)
    ran_at: datetime = _dt()


class OutboxAttachment(SQLModel, table=True):
    """A file sent with an outgoing message (an invoice PDF)."""

    __tablename__ = "outbox_attachment"

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(foreign_key="outbox.id", index=True)
    filename: str = Field(max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    data: bytes = Field(sa_type=sa.LargeBinary)


# `Outbox.attachments`: loaded with the rows in one extra query, so a row
# claimed for sending carries its files after its transaction ended.
Outbox.__mapper__.add_property("attachments", relationship(
    OutboxAttachment, lazy="selectin", order_by=OutboxAttachment.id))


class Invoice(SQLModel, table=True):
    """Credits bought: a qualified invoice (適格請求書), numbered from a gapless
    yearly sequence.  `issued` → `paid` (the purchase lot is created then) or `void`.

    The PDF is kept as issued: the document the client received, whatever the
    config says later (an issuer must keep copies of its invoices)."""

    __table_args__ = (sa.UniqueConstraint("year", "seq", name="uq_invoice_year_seq"),
                      sa.Index("ix_invoice_client_status", "client_id", "status"))

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=20, sa_column_kwargs={"unique": True})
    year: int
    seq: int
    client_id: int = Field(foreign_key="client.id")
    requester: str | None = Field(default=None, max_length=320)
    credits: int
    unit_price_yen: int
    tax_rate: Decimal = Field(sa_type=DecimalText)
    price_includes_tax: bool = False
    subtotal_yen: int  # excluding tax
    tax_yen: int
    total_yen: int  # including tax
    status: InvoiceStatus = Field(default=InvoiceStatus.ISSUED, sa_type=sa.String(8),
                                  index=True)
    issued_at: datetime = _dt(index=True)
    due: date
    paid_at: datetime | None = _dt(nullable=True, index=True)
    lot_id: int | None = Field(default=None, foreign_key="lot.id")
    void_reason: str | None = None
    void_by: str | None = Field(default=None, max_length=320)
    voided_at: datetime | None = _dt(nullable=True)
    actor: str = Field(default="staff", max_length=320)
    # The Message-ID of the BUY mail: the same mail twice makes one invoice.
    source_message_id: str | None = Field(default=None, max_length=255,
                                          sa_column_kwargs={"unique": True})
    pdf: bytes | None = Field(default=None, sa_type=sa.LargeBinary)


class InvoiceSequence(SQLModel, table=True):
    """The last invoice number of each year.  Incremented under its row lock in
    the transaction that inserts the invoice: a rollback gives the number back."""

    __tablename__ = "invoice_sequence"

    year: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    last: int = 0
class ClientMailState(SQLModel, table=True):
    """Per client, what its periodic mail already said: the end of the period
    its last digest covered, and whether it was told its balance is low."""

    __tablename__ = "client_mail_state"

    client_id: int = Field(foreign_key="client.id", primary_key=True)
    digest_through: datetime | None = _dt(nullable=True)
    low_balance_at: datetime | None = _dt(nullable=True)  # set while the balance stays low


class RequestNote(SQLModel, table=True):
    """An internal note on a request (`NOTE text` by mail): staff only, never sent."""

    __tablename__ = "request_note"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    author: str = Field(max_length=320)
    text: str
    at: datetime = _dt()
