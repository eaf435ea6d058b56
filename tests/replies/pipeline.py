"""The reply table through the whole inbound pipeline (handle_message).

For every case a request of the right client (English or Japanese) is quoted
2 credits; the reply is the raw MIME answer to that quote's real mail (its
Message-ID, subject and text as the outbox holds them). After the message,
the request's state, its ledger and the answers queued by the message tell
what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import select

from mailflow.core.ledger import EntryKind, LotKind
from mailflow.db import transaction
from mailflow.models import Entry, Outbox, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from mailflow.services.inbound import handle_message
from tests.replies.cases import Case
from tests.replies.generator import QuoteMail
from tests.replies.reading import raw_reply

ADDRESSES = {"en": "tanaka@acme.example", "ja": "tanaka@acme.co.jp"}
QUOTED_CREDITS = 2

#: What each expected outcome leaves: the request's state, the debit, and the
#: answers queued (client answers first, then staff notices).
EXPECTED = {
    "approve": ("approved", -QUOTED_CREDITS, ["client/approved", "staff/answered"]),
    "reject": ("rejected", 0, ["client/rejected", "staff/answered"]),
    "balance": ("quoted", 0, ["client/balance"]),
    "ambiguous": ("quoted", 0, ["client/ambiguous_reply", "staff/comment"]),
    "none": ("quoted", 0, ["client/comment_received", "staff/comment"]),
    # BUY n is recognised and carried in the facts; the purchase itself is not
    # built yet: on a request it is a comment for staff.
    "buy": ("quoted", 0, ["client/comment_received", "staff/comment"]),
}


@dataclass(frozen=True)
class Outcome:
    case: Case
    status: str
    debit: int
    templates: list[str]
    reason: str | None

    @property
    def expected(self) -> tuple[str, int, list[str]]:
        return EXPECTED[self.case.expected.split()[0]]

    @property
    def as_expected(self) -> bool:
        return (self.status, self.debit, self.templates) == self.expected

    @property
    def wrong_action(self) -> bool:
        """Credits taken or a rejection recorded that the client did not clearly state."""
        expected_status, expected_debit, _ = self.expected
        return self.debit != expected_debit or (
            self.status in ("approved", "rejected") and self.status != expected_status)

    def describe(self) -> str:
        return (f"{self.case.id}: expected {self.expected}, got "
                f"{(self.status, self.debit, self.templates)} ({self.reason})")


def make_clients(engine, desk) -> dict[str, int]:
    with transaction(engine) as session:
        ids = {}
        for lang, name in (("en", "Acme"), ("ja", "アクメ")):
            client = clients.add_client(session, desk, name=name, emails=[ADDRESSES[lang]],
                                        lang=lang)
            credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=5000)
            ids[lang] = client.id
    return ids


def quote_for(engine, desk, client_id: int, address: str, subject: str) -> tuple[int, QuoteMail]:
    with transaction(engine) as session:
        client = clients.find_client(session, str(client_id))
        request = svc.create_request(session, desk, client=client, requester=address,
                                     subject=subject)
        quote = svc.quote_request(session, desk, request_id=request.id, terms=svc.QuoteTerms(
            QUOTED_CREDITS, desk.today() + timedelta(days=7)))
        mail = session.exec(select(Outbox).where(Outbox.message_id == quote.message_id)).one()
        return request.id, QuoteMail(message_id=f"<{mail.message_id.strip('<>')}>",
                                     subject=mail.subject, body=mail.body_text,
                                     lang=client.lang)


def run_case(engine, desk, client_ids: dict[str, int], case: Case) -> Outcome:
    lang = case.quote_lang
    subject = "Replace banner" if lang == "en" else "バナー差し替え"
    request_id, quote = quote_for(engine, desk, client_ids[lang], ADDRESSES[lang], subject)
    with transaction(engine) as session:
        last = session.exec(select(Outbox.id).order_by(Outbox.id.desc())).first() or 0
    subject_line = case.subject.replace("[REQ-3]", f"[REQ-{request_id}]").replace(
        "[REQ-4]", f"[REQ-{request_id}]") if case.subject else None
    raw = raw_reply(case, quote, sender=ADDRESSES[lang], subject=subject_line)
    with transaction(engine) as session:
        result = handle_message(session, desk, raw)
    with transaction(engine) as session:
        request = session.get(Request, request_id)
        debit = sum(e.delta for e in session.exec(select(Entry).where(
            Entry.request_id == request_id, Entry.kind == EntryKind.DEBIT)))
        templates = [row.template for row in session.exec(
            select(Outbox).where(Outbox.id > last).order_by(Outbox.id))]
    return Outcome(case, str(request.status), debit, templates, result.reason)


def run_all(engine, desk, cases: list[Case]) -> list[Outcome]:
    client_ids = make_clients(engine, desk)
    return [run_case(engine, desk, client_ids, case) for case in cases]


def run_pipeline(cases: list[Case]) -> list[Outcome]:
    """For the report: the whole table on a temporary SQLite database."""
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    from mailflow.config import settings_from_mapping
    from mailflow.db import create_db_engine, upgrade_schema
    from mailflow.desk import Desk

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'replies.db'}"
        upgrade_schema(url)
        engine = create_db_engine(url)
        settings = settings_from_mapping({"mailbox": {"address": "support@agency.example"},
                                          "staff": {"notify": ["staff@agency.example"]}})
        desk = Desk(settings, clock=lambda: datetime(2026, 11, 26, 1, 0, tzinfo=UTC))
        try:
            return run_all(engine, desk, cases)
        finally:
            engine.dispose()
