"""Long subjects, display names and References never make our own mail
undeliverable (issue 9, point 4): every header line within RFC 5322's limits,
each message accepted by a real aiosmtpd server (which refuses lines over 1,000
octets), and the headers read back as we wrote them — the subject shortened."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta
from email.header import decode_header, make_header
from email.utils import parseaddr

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.intake import receive
from mailflow.models import Outbox, OutboxStatus
from mailflow.render import MAX_SUBJECT_CHARS
from mailflow.sender import send_due
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from tests.mails import mail

SUPPORT = "support@agency.example"
STAFF = "staff@agency.example"
CLIENT = "a@acme.example"
URL = "https://www.acme.example/campaign/2026/winter/landing?utm_source=mail&id="

SUBJECTS = {
    f"{kind}-{size // 1000}k": text
    for size in (1_000, 10_000, 100_000)
    for kind, text in {
        "ascii-words": ("Please update the banner " * size)[:size],
        "ascii-no-spaces": (URL + "x" * size)[:size],
        "japanese-words": ("トップページのバナーを差し替えてください " * size)[:size],
        "japanese-no-spaces": ("トップページのバナー差し替え" * size)[:size],
    }.items()
}


def make_desk(clock, smtp_server, display_name: str = "Agency Support") -> Desk:
    return Desk(settings_from_mapping({
        "mailbox": {"address": SUPPORT, "display_name": display_name},
        "smtp": {"host": smtp_server.host, "port": smtp_server.port, "timeout_seconds": 5},
        "staff": {"notify": [STAFF]}}), clock=clock)


def received(captured) -> email.message.EmailMessage:
    return email.message_from_bytes(captured.raw, policy=email.policy.default)


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


@pytest.mark.parametrize("subject", SUBJECTS.values(), ids=SUBJECTS.keys())
def test_a_long_subject_never_makes_our_mail_undeliverable(engine, clock, smtp_server, subject):
    desk = make_desk(clock, smtp_server)
    with transaction(engine) as session:
        acme = clients.add_client(session, desk, name="Acme", emails=[CLIENT])
        credits.add_lot(session, desk, client=acme, kind=LotKind.PURCHASE, credits=5)
    outcome = receive(engine, desk, mail(sender=CLIENT, subject=subject, body="Please."))
    with transaction(engine) as session:
        svc.quote_request(session, desk, request_id=outcome.request_id,
                          terms=svc.QuoteTerms(2, desk.today() + timedelta(days=7)))
    report = send_due(engine, desk)
    with transaction(engine) as session:
        rows = session.exec(select(Outbox).order_by(Outbox.id)).all()
    assert [r.template for r in rows] == ["client/ack", "staff/new_request", "client/quote"]
    assert (report.sent, report.failed) == (3, 0)
    assert {r.status for r in rows} == {OutboxStatus.SENT}
    by_id = {f"<{r.message_id}>": r for r in rows}
    for captured in smtp_server.messages:
        assert max(len(line) for line in header_lines(captured.raw)) <= 78
        message = received(captured)
        row = by_id[message["Message-ID"]]
        assert message["Subject"] == row.subject  # read back as written
        assert row.subject.startswith(f"[REQ-{outcome.request_id}] ")
        assert len(row.subject) <= MAX_SUBJECT_CHARS and row.subject.endswith("…")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("name", [
    "Agency Support " * 100, "A" * 2_000, "株式会社エージェンシー サポート窓口" * 50,
    'Agency "Support", Tokyo; Osaka', "サポート窓口"], ids=[
    "ascii-words", "ascii-no-spaces", "japanese", "ascii-specials", "japanese-short"])
def test_a_long_display_name_is_folded_and_reads_back(engine, clock, smtp_server, name):
    desk = make_desk(clock, smtp_server, display_name=name)
    with transaction(engine) as session:
        clients.add_client(session, desk, name="Acme", emails=[CLIENT])
    receive(engine, desk, mail(sender=CLIENT, subject="Banner", body="Please."))
    assert send_due(engine, desk).sent == 2
    shown = " ".join(name.split())
    for captured in smtp_server.messages:
        assert max(len(line) for line in header_lines(captured.raw)) <= 78
        # RFC 2047 decoding: the modern parser puts a space between adjacent encoded
        # words of a display name (RFC 2047 §6.2 says to drop it); mail programs do not.
        raw_from = email.message_from_bytes(captured.raw, policy=email.policy.compat32)["From"]
        display, address = parseaddr(str(make_header(decode_header(raw_from))))
        assert address == SUPPORT
        if len(shown) <= 100:
            assert display == shown
        else:
            assert display.endswith("…") and shown.startswith(display[:-1].rstrip())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_long_references_chain_and_long_ids_stay_within_the_line_limit(engine, clock,
                                                                         smtp_server):
    desk = make_desk(clock, smtp_server)
    ids = [f"{'r' * 200}.{n}@client.example" for n in range(30)]
    with transaction(engine) as session:
        session.add(Outbox(message_id="own.1@agency.example", template="client/ack",
                           to_addrs=CLIENT, subject="[REQ-1] Received", body_text="Hello.\n",
                           in_reply_to=ids[-1], references=" ".join(ids[-20:]),
                           status=OutboxStatus.PENDING, next_attempt_at=desk.now(),
                           created_at=desk.now()))
    assert send_due(engine, desk).sent == 1
    (captured,) = smtp_server.messages
    assert max(len(line) for line in header_lines(captured.raw)) <= 998
    message = received(captured)
    assert message["References"].split() == [f"<{i}>" for i in ids[-20:]]
    assert message["In-Reply-To"].strip() == f"<{ids[-1]}>"
