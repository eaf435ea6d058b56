"""Files sent with outgoing mail: written with the outbox row, sent as
multipart/mixed after commit, received intact by a real SMTP server."""

from __future__ import annotations

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Outbox, OutboxAttachment
from mailflow.sender import send_due
from mailflow.services.outbox import FileToSend, queue_message

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@pytest.fixture
def mail_desk(clock, smtp_settings) -> Desk:
    settings = settings_from_mapping({
        "mailbox": {"address": "support@agency.example", "display_name": "Agency Support"},
        "smtp": smtp_settings.model_dump(),
        "staff": {"notify": ["staff@agency.example"]},
    })
    return Desk(settings, clock=clock)


def queue(engine, desk: Desk, template: str, files: list[FileToSend], context=None) -> int:
    with transaction(engine) as session:
        row = queue_message(session, desk, template=template, to=["hanako@client.example"],
                            context=context or {"client": None, "balance": None},
                            attachments=files)
        return row.id


HELD = {"from_addr": "x@y.example", "subject": "Hi", "reason": "test", "kind": "unknown_sender",
        "client": None, "balance": None}


def test_attachment_is_stored_with_the_row_and_sent_as_a_mime_part(engine, mail_desk,
                                                                   smtp_server):
    row_id = queue(engine, mail_desk, "staff/held",
                   [FileToSend("INV-2026-0001.pdf", "application/pdf", PDF)], HELD)
    with transaction(engine) as session:
        stored = session.exec(select(OutboxAttachment)
                              .where(OutboxAttachment.outbox_id == row_id)).one()
        assert (stored.filename, stored.content_type, stored.data) == (
            "INV-2026-0001.pdf", "application/pdf", PDF)

    assert send_due(engine, mail_desk).sent == 1
    (captured,) = smtp_server.messages
    message = captured.message()
    assert message.get_content_type() == "multipart/mixed"
    body, attached = message.iter_parts()
    assert body.get_content_type() == "text/plain"
    assert "x@y.example" in body.get_content()
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_filename() == "INV-2026-0001.pdf"
    assert attached["Content-Transfer-Encoding"] == "base64"
    assert attached.get_content() == PDF
    assert message["Subject"] and message["Message-ID"]
    # Every line of what went over the wire stays within SMTP's limit.
    assert max(len(line) for line in captured.raw.split(b"\r\n")) <= 998


def test_html_alternative_and_two_files_keep_their_order(engine, mail_desk, smtp_server):
    context = {"request": {"number": 12, "tag": "[REQ-12]", "subject": "Banner",
                           "status": "received", "text": "", "requester": "h@client.example",
                           "due": None, "credits": None},
               "catalog_groups": [], "first_request": None, "similar": []}
    files = [FileToSend("請求書 INV-2026-0002.pdf", "application/pdf", PDF),
             FileToSend("notes.txt", "text/plain", "メモ\n".encode())]
    with transaction(engine) as session:
        from mailflow.services.clients import add_client

        client = add_client(session, mail_desk, name="Sakura", emails=["h@client.example"])
        queue_message(session, mail_desk, template="client/ack", to=["h@client.example"],
                      context=context, client=client, attachments=files)
    assert send_due(engine, mail_desk).sent == 1
    message = smtp_server.messages[0].message()
    alternative, pdf, notes = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain",
                                                                         "text/html"]
    assert pdf.get_filename() == "請求書 INV-2026-0002.pdf"  # RFC 2231 encoded on the wire
    assert b"filename*=utf-8''" in smtp_server.messages[0].raw
    assert pdf.get_content() == PDF
    assert notes.get_content_type() == "text/plain"
    assert notes.get_payload(decode=True) == "メモ\n".encode()


def test_mail_without_attachments_is_unchanged(engine, mail_desk, smtp_server):
    queue(engine, mail_desk, "staff/held", [], HELD)
    send_due(engine, mail_desk)
    message = smtp_server.messages[0].message()
    assert message.get_content_type() == "text/plain"
    with transaction(engine) as session:
        assert session.exec(select(OutboxAttachment)).all() == []
        assert session.exec(select(Outbox)).one().attachments == []


def test_cc_addresses_get_a_cc_header_and_the_envelope(engine, mail_desk, smtp_server):
    with transaction(engine) as session:
        row = queue_message(session, mail_desk, template="staff/held",
                            to=["hanako@client.example"], context=HELD)
        row.cc_addrs = "taro@client.example"
        session.add(row)
    assert send_due(engine, mail_desk).sent == 1
    (captured,) = smtp_server.messages
    message = captured.message()
    assert message["To"] == "hanako@client.example"
    assert message["Cc"] == "taro@client.example"
    assert sorted(captured.recipients) == ["hanako@client.example", "taro@client.example"]
