"""Fuzz the parser, the reply trimmer, command detection, automatic-mail
detection and the whole intake: whatever arrives, nothing raises, and each
distinct message is recorded exactly once.  Fixed budgets (the file runs in
well under 30 s); `--hypothesis-show-statistics` prints what ran."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func
from sqlmodel import select

from mailflow.core import classify
from mailflow.core.authres import dmarc_verdict
from mailflow.core.autoreply import bounce_evidence, classify_automatic
from mailflow.core.keywords import detect_command, strip_subject
from mailflow.core.message import (
    MAX_MESSAGE_ID_LENGTH,
    InboundMessage,
    extract_bounced_message_ids,
    parse_message,
)
from mailflow.core.trim import trim_reply
from mailflow.db import transaction
from mailflow.intake import receive
from mailflow.models import Inbound
from mailflow.services import clients
from mailflow.services.inbound import Source, message_key
from tests.hostile.hostile_mail import SUPPORT, any_mail, broken_messages

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def storable(text: str) -> bool:
    """What every database accepts: no NUL, no lone surrogates."""
    return "\x00" not in text and not any("\ud800" <= ch <= "\udfff" for ch in text)


def read_everything(msg: InboundMessage) -> None:
    """Everything the pipeline does with a parsed message before touching the database."""
    new_text = trim_reply(msg.text)
    detect_command(new_text, msg.subject)
    strip_subject(msg.subject)
    classify_automatic(msg, own_address=SUPPORT)
    bounce_evidence(msg)
    extract_bounced_message_ids(msg)
    dmarc_verdict(msg.authentication_results, "mx.agency.example")
    classify.tokens_in((*msg.to, *msg.cc), msg.text)
    classify.request_number_in(msg.subject, "[REQ-{id}]")


def check_invariants(msg: InboundMessage, raw: bytes) -> None:
    assert msg.raw == raw and msg.size == len(raw)
    for text in (msg.subject, msg.text, msg.html or "", msg.from_name, *msg.headers.values(),
                 *(a.filename or "" for a in msg.attachments),
                 *(a.content_type for a in msg.attachments)):
        assert storable(text)
    assert "\r" not in msg.subject and "\n" not in msg.subject
    for ident in (msg.message_id, *msg.in_reply_to, *msg.references):
        if ident is not None:
            assert 0 < len(ident) <= MAX_MESSAGE_ID_LENGTH and storable(ident)
    for address in (msg.from_addr, msg.reply_to, *msg.to, *msg.cc):
        if address is not None:
            assert len(address) <= 254 and storable(address)


@FUZZ
@given(st.binary(max_size=4000))
def test_parse_message_never_raises_on_arbitrary_bytes(raw):
    msg = parse_message(raw, max_bytes=2000)
    check_invariants(msg, raw)
    read_everything(msg)


@FUZZ
@given(broken_messages())
def test_broken_mime_parses_and_every_reader_copes(raw):
    msg = parse_message(raw)
    check_invariants(msg, raw)
    read_everything(msg)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=600), st.text(max_size=80))
def test_trim_and_command_detection_never_raise_on_any_text(text, subject):
    new_text = trim_reply(text)
    assert len(new_text) <= len(text.replace("\r\n", "\n")) + 1
    detect_command(new_text, subject)
    detect_command(text, subject)
    classify_automatic(InboundMessage(subject=subject, text=text, from_addr="x@y.example"),
                       own_address=SUPPORT)


#: Inputs that made a regular expression backtrack quadratically (found by this
#: file; each took from seconds to minutes before the fix).  50 KB each.
PATHOLOGICAL = {
    "brackets": "[" * 50_000,
    "brackets and text": "[x" * 25_000,
    "blank lines": "\n" * 50_000,
    "spaced blank lines": " \n" * 25_000,
    "header name then spaces": "From" + " " * 50_000 + "x",
    "digit lines": "1\n" * 25_000,
    "markdown targets": "[a](" * 12_500,
    "angle addresses": "<a@" * 16_000,
    "quote marks": "> " * 25_000,
}


@pytest.mark.parametrize("text", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_text_takes_linear_time(text):
    raw = (f"From: a@acme.example\r\nSubject: rejected {text[:200]}\r\n"
           f"References: {text[:60_000]}\r\nContent-Type: {text[:5000]}\r\n\r\n").encode() \
        + text.encode()
    started = time.perf_counter()
    msg = parse_message(raw)
    read_everything(msg)
    read_everything(InboundMessage(subject=text, text=text, from_addr="a@acme.example"))
    elapsed = time.perf_counter() - started
    print(f"{len(raw)} bytes: {elapsed:.3f} s")
    assert elapsed < 10  # was minutes; a generous bound for slow machines


# --- the whole intake -----------------------------------------------------------------

@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_receive_never_raises_and_records_each_distinct_message_once(engine, desk):
    with transaction(engine) as session:
        clients.add_client(session, desk, name="Acme", emails=["a@acme.example"])
    seen_keys: set[str] = set()
    max_bytes = int(desk.settings.policy.max_message_mb * 1024 * 1024)
    uid = iter(range(1, 10_000))

    @settings(max_examples=120, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(any_mail, st.booleans())
    def deliver(raw, by_uid):
        source = Source("INBOX", 1, next(uid)) if by_uid else Source()
        outcome = receive(engine, desk, raw, source=source)  # must not raise
        seen_keys.add(message_key(parse_message(raw, max_bytes=max_bytes), raw))
        again = receive(engine, desk, raw, source=source)  # the same delivery again
        assert again.duplicate and again.inbound_id == outcome.inbound_id
        with transaction(engine) as session:
            rows = session.exec(select(func.count()).select_from(Inbound)).one()
            row = session.get(Inbound, outcome.inbound_id)
        assert rows == len(seen_keys)
        assert row.status in ("processed", "ignored", "held", "failed")
        if row.status == "failed":
            assert row.reason and row.raw == raw

    deliver()
