"""The batch path of intake (issue 13): a commit group's reads done set-based
up front, and parsing one group ahead in a worker process — the same outcomes
as message by message."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import event
from sqlmodel import select

from mailflow.core.autoreply import Automatic, AutomaticKind
from mailflow.core.ledger import LotKind
from mailflow.core.message import parse_message
from mailflow.core.preread import preread
from mailflow.db import transaction
from mailflow.intake import receive_batch
from mailflow.intake_group import ParseAhead, parse_group
from mailflow.models import Inbound, Outbox
from mailflow.services import clients, credits
from mailflow.services.inbound import Source
from tests.mails import mail

BOX = "support@127.0.0.1:143/INBOX"


def _clients(engine, desk, count: int) -> list[str]:
    addresses = [f"owner{i}@client{i}.example" for i in range(count)]
    with transaction(engine) as session:
        for i, address in enumerate(addresses):
            client = clients.add_client(session, desk, name=f"Client {i}", emails=[address])
            credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=5 + i)
    return addresses


def _statements(engine, needle: str):
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if needle in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    return seen, lambda: event.remove(engine, "before_cursor_execute", count)


def test_a_group_reads_lots_and_senders_once_and_answers_as_before(engine, desk):
    addresses = _clients(engine, desk, 5)
    items = [(Source(BOX, 1, uid), mail(sender=addresses[uid % 5], subject=f"Job {uid}",
                                        body="Please update the page.",
                                        message_id=f"<job{uid}@client.example>"))
             for uid in range(1, 11)]
    lots, stop_lots = _statements(engine, "FROM lot")
    contacts, stop_contacts = _statements(engine, "contact.email")
    try:
        outcomes = receive_batch(engine, desk, items)
    finally:
        stop_lots()
        stop_contacts()
    assert [o.verdict for o in outcomes] == ["new_request"] * 10
    assert len(lots) == 1 and len(contacts) == 1  # set-based, not one per message
    with transaction(engine) as session:
        acks = session.exec(select(Outbox).where(Outbox.template == "client/ack")
                            .order_by(Outbox.id)).all()
    assert [a.to_addrs for a in acks] == [addresses[uid % 5] for uid in range(1, 11)]
    for ack in acks:  # each client's own balance in its footer
        index = addresses.index(ack.to_addrs)
        assert f"{5 + index}" in ack.body_text


def test_a_message_id_twice_in_a_group_and_one_seen_before_are_duplicates(engine, desk):
    [address] = _clients(engine, desk, 1)
    first = mail(sender=address, subject="Job", body="Please.", message_id="<same@c.example>")
    assert not receive_batch(engine, desk, [(Source(BOX, 1, 1), first)])[0].duplicate
    again = mail(sender=address, subject="Job 2", body="Please.", message_id="<dup@c.example>")
    items = [(Source(BOX, 1, 2), first), (Source(BOX, 1, 3), again),
             (Source(BOX, 1, 4), again)]
    outcomes = receive_batch(engine, desk, items)
    assert [o.duplicate for o in outcomes] == [True, False, True]
    with transaction(engine) as session:
        assert len(session.exec(select(Inbound)).all()) == 2


def test_parsing_ahead_in_a_worker_gives_the_same_messages(desk):
    raws = [mail(sender="a@client.example", subject="ご依頼", body="本文です。\n" * 20,
                 charset="iso-2022-jp"),
            mail(sender="b@client.example", subject="HTML", body="text",
                 html="<p>Hello <b>there</b></p>"),
            b"not a mail at all \xff\xfe",
            mail(sender="c@client.example", subject="Plain", body="Hi.")]
    with ParseAhead(desk) as ahead:
        ahead.submit(raws)
        done = ahead.result(raws)
    assert done is not None
    parsed, read = done
    here = parse_group(desk, raws)
    assert parsed == here
    assert all(p.raw == raw for p, raw in zip(parsed, raws, strict=True) if p is not None)
    assert parsed[0].headers == parse_message(raws[0]).headers
    own = desk.settings.mailbox.address
    assert read == [preread(p, own) if p is not None else None for p in here]


REPLIES = [
    ("APPROVE", "Approved, please go ahead.\n\nOn Mon, Anna wrote:\n> Quote: 5 credits"),
    ("REJECT", "Sorry, we reject this one.\n\n-- \nBob"),
    ("承認", "お世話になっております。\n承認いたします。\n\n> 見積もり"),
    ("否認", "承認できません。よろしくお願いいたします。"),
    ("comment", "Could you also change the footer colour?"),
    ("vacation", "I am out of the office until Monday."),
]


def test_what_the_worker_reads_is_what_the_main_process_reads(desk):
    """The worker reads each message as `gather` would (trimmed reply, command,
    automatic or not), on both languages, from the same support address."""
    raws = [mail(sender=f"p{i}@client.example", subject=f"Re: [REQ-{i + 1}] {name}",
                 body=body, charset="iso-2022-jp" if not body.isascii() else "utf-8",
                 headers={"Auto-Submitted": "auto-replied"} if name == "vacation" else None)
            for i, (name, body) in enumerate(REPLIES)]
    with ParseAhead(desk) as ahead:
        ahead.submit(raws)
        done = ahead.result(raws)
    assert done is not None
    parsed, read = done
    own = desk.settings.mailbox.address
    here = [preread(parse_message(raw), own) for raw in raws]
    assert read == here
    # The table reads as it should, so the comparison above compares readings.
    assert [str(r.reading.command) if r.reading.command else None for r in read] == [
        "approve", "reject", "approve", "ambiguous", None, None]
    assert [r.automatic is not None for r in read] == [False] * 5 + [True]


def test_the_main_process_takes_what_was_read_ahead_and_only_for_its_address(engine, desk):
    """What the worker read is what the message is handled on (nothing is read
    twice); one read against another support address is read again."""
    addresses = _clients(engine, desk, 2)
    raws = [mail(sender=address, subject="Job", body="Please update the page.",
                 message_id=f"<job{i}@client.example>") for i, address in enumerate(addresses)]
    parsed = parse_group(desk, raws)
    own = desk.settings.mailbox.address
    said_automatic = [replace(preread(msg, own),
                              automatic=Automatic(AutomaticKind.AUTO_REPLY, "test: read ahead"))
                      for msg in parsed]
    other = replace(said_automatic[1], own_address="someone-else@agency.example")
    items = [(Source(BOX, 1, uid), raw) for uid, raw in enumerate(raws, start=1)]
    outcomes = receive_batch(engine, desk, items, parsed=parsed,
                             read=[said_automatic[0], other])
    assert [o.verdict for o in outcomes] == ["automatic", "new_request"]
