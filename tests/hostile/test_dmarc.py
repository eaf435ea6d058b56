"""Forged DMARC verdicts through the real pipeline: an APPROVE whose trusted
Authentication-Results say `dmarc=fail` is never acted on, however the other
headers, comments and property values try to say `pass` (issue 9, point 2).
The attack cases run on SQLite and PostgreSQL; the property on SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from mailflow.core.ledger import EntryKind, LotKind
from mailflow.core.states import Status
from mailflow.db import transaction
from mailflow.intake import receive
from mailflow.models import Entry, InboundStatus, Outbox, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from mailflow.services.inbound import handle_message
from tests.hostile.test_hostile_pipeline import AUTHSERV, CLIENT, STAFF, make_desk
from tests.mails import reply


@pytest.fixture
def quoted(engine, clock):
    """A desk trusting our MX, client Acme (5 credits) and a quoted request."""
    desk = make_desk(clock, trusted_authserv_id=AUTHSERV)
    with transaction(engine) as session:
        acme = clients.add_client(session, desk, name="Acme", emails=[CLIENT])
        credits.add_lot(session, desk, client=acme, kind=LotKind.PURCHASE, credits=5)
        request = svc.create_request(session, desk, client=acme, requester=CLIENT,
                                     subject="Replace the banner", text="Please.",
                                     actor=CLIENT)
        quote = svc.quote_request(session, desk, request_id=request.id,
                                  terms=svc.QuoteTerms(2, desk.today() + timedelta(days=7)))
        return desk, request.id, quote.message_id


def approval(request_id: int, quote_id: str, auth_results: list[str]) -> bytes:
    """A client's APPROVE quoting the current quote, with Authentication-Results
    prepended as mail servers add them (the list's first is the topmost)."""
    raw = reply(sender=CLIENT, original_subject=f"[REQ-{request_id}] Quote",
                original_body="reply APPROVE or REJECT", original_id=quote_id,
                answer="APPROVE")
    return b"".join(f"Authentication-Results: {v}\r\n".encode() for v in auth_results) + raw


def debits(session: Session) -> int:
    return len(session.exec(select(Entry).where(Entry.kind == EntryKind.DEBIT)).all())


ATTACKS = {
    "untrusted hop above the trusted fail": [
        "relay.agency.example; dmarc=pass header.from=acme.example",
        f"{AUTHSERV}; spf=fail smtp.mailfrom=acme.example; dmarc=fail header.from=acme.example"],
    "property value says pass": [
        f"{AUTHSERV}; spf=pass smtp.mailfrom=dmarc=pass@evil.example;"
        " dmarc=fail header.from=acme.example"],
    "comment says pass": [
        f"{AUTHSERV}; spf=pass (relay said dmarc=pass) smtp.mailfrom=evil.example;"
        " dmarc=fail header.from=acme.example"],
    "trusted header cannot be read": [f"{AUTHSERV}; dmarc=pass (unclosed header.from=a.example"],
}


@pytest.mark.parametrize("headers", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_forged_dmarc_pass_never_hides_the_trusted_fail(engine, quoted, headers):
    desk, request_id, quote_id = quoted
    with transaction(engine) as session:
        before = len(session.exec(select(Outbox.id)).all())
    outcome = receive(engine, desk, approval(request_id, quote_id, headers))
    assert (outcome.status, outcome.verdict) == (InboundStatus.HELD, "forged")
    with transaction(engine) as session:
        assert session.get(Request, request_id).status == Status.QUOTED
        assert debits(session) == 0
        new = session.exec(select(Outbox).order_by(Outbox.id)).all()[before:]
    assert [row.recipients for row in new] == [[STAFF]]  # staff told; the sender is not


def test_a_trusted_pass_below_an_untrusted_fail_is_acted_on(engine, quoted):
    desk, request_id, quote_id = quoted
    headers = ["evil.example; dmarc=fail", f"{AUTHSERV}; dmarc=pass header.from=acme.example"]
    assert receive(engine, desk, approval(request_id, quote_id, headers)).verdict == "approve"


# --- the property ------------------------------------------------------------------

_ids = st.sampled_from([AUTHSERV, AUTHSERV.upper(), "MX.agency.Example",
                        "relay.agency.example", "mx.google.com", "evil.example",
                        f"evil.{AUTHSERV}"])
_results = st.sampled_from(["pass", "fail", "none", "temperror", "permerror", "neutral"])
_method = st.sampled_from(["dmarc", "spf", "dkim", "arc", "auth"])
_noise = st.sampled_from(["", " (relay said dmarc=pass)", " smtp.mailfrom=dmarc=pass@evil.example",
                          " header.from=dmarc=pass", " (dmarc=pass", " policy.dmarc=none",
                          " header.d=acme.example", "  ; ;", " header.from=例え.jp"])


@st.composite
def _resinfo(draw) -> str:
    return f"{draw(_method)}={draw(_results)}{draw(_noise)}"


@st.composite
def _header(draw) -> str:
    version = draw(st.sampled_from(["", " 1"]))
    results = draw(st.lists(_resinfo(), max_size=4))
    return f"{draw(_ids)}{version}; " + ("; ".join(results) or "none")


@st.composite
def header_sets_with_a_trusted_fail(draw) -> list[str]:
    headers = draw(st.lists(_header(), max_size=6))
    before = draw(st.lists(_resinfo(), max_size=3))
    after = draw(st.lists(_resinfo(), max_size=3))
    trusted = draw(st.sampled_from([AUTHSERV, AUTHSERV.upper()]))
    fail = f"{trusted}; " + "; ".join([*before, f"dmarc=fail{draw(_noise)}", *after])
    headers.insert(draw(st.integers(0, len(headers))), fail)
    return headers


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_decision_is_acted_on_when_a_trusted_header_says_dmarc_fail(engine, quoted):
    desk, request_id, quote_id = quoted

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(header_sets_with_a_trusted_fail(), st.sampled_from(["APPROVE", "REJECT", "承認"]))
    def check(headers, answer):
        raw = approval(request_id, quote_id, headers).replace(b"APPROVE\n", f"{answer}\n".encode(),
                                                              1)
        with Session(engine) as session:  # rolled back: every example sees the same quote
            outcome = handle_message(session, desk, raw)
            assert outcome.verdict == "forged", headers
            assert session.get(Request, request_id).status == Status.QUOTED
            assert debits(session) == 0
            session.rollback()

    check()
