"""Which request a reply belongs to, and whether it answers the current quote
(DESIGN §3 rules 3 and 6): the nearest Message-ID it names first (In-Reply-To,
then References from the newest backwards), then a quote token (the reply
address's before the text's), then the subject tag.  A decision counts only on
the request's current quote: a reply to an earlier, void quote decides nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.models import Outbox, Request
from mailflow.services import clients, credits
from mailflow.services import requests as svc
from mailflow.services.inbound import handle_message
from tests.mails import mail

CLIENT = "a@acme.example"


@pytest.fixture
def world(engine, desk):
    """Requests A and B quoted once (B's quote is the newer); C quoted twice (its
    first quote is void); a message of the client's already linked to A."""
    names: dict[str, str] = {}
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    with transaction(engine) as session:
        client = clients.add_client(session, desk, name="Acme", emails=[CLIENT])
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=20)
        terms = svc.QuoteTerms(2, desk.today() + timedelta(days=10))
        for key in ("A", "B", "C"):
            request = svc.create_request(session, desk, client=client, requester=CLIENT,
                                         subject=f"Job {key}")
            ids[key] = request.id
            names[f"ack{key}"] = session.exec(select(Outbox.message_id).where(
                Outbox.request_id == request.id, Outbox.template == "client/ack")).one()
        for key in ("A", "B", "C1", "C2"):
            quote = svc.quote_request(session, desk, request_id=ids[key[0]], terms=terms)
            names[f"Q{key}"], tokens[f"Q{key}"] = quote.message_id, quote.token
    own = mail(sender=CLIENT, subject="Re: Job A", body="One more thing: the footer too.",
               message_id="<own-a@acme.example>", in_reply_to=names["ackA"])
    with transaction(engine) as session:
        assert handle_message(session, desk, own).request_id == ids["A"]
    names["ownA"] = "own-a@acme.example"
    names["unknown"] = "never-seen@elsewhere.example"
    return {"names": names, "tokens": tokens, "ids": ids}


def message(world, *, in_reply_to=None, references=None, to_token=None, text_token=None,
            subject="Re: Quote", word="APPROVE") -> bytes:
    names, tokens = world["names"], world["tokens"]
    to = f"support+{tokens[to_token]}@agency.example" if to_token else "support@agency.example"
    body = word + (f"\n\n> Quote reference: {tokens[text_token]}\n" if text_token else "\n")
    return mail(sender=CLIENT, subject=subject, body=body, to=to,
                in_reply_to=names[in_reply_to] if in_reply_to else None,
                references=[names[n] for n in references] if references is not None else None)


CASES = [
    # (headers, request it belongs to, verdict)
    pytest.param(dict(in_reply_to="QA", references=["QA", "QB"]), "A", "approve",
                 id="in-reply-to-before-a-newer-quote-in-references"),
    pytest.param(dict(references=["QB", "QA"]), "A", "approve",
                 id="references-newest-last-wins-over-newer-quote"),
    pytest.param(dict(references=["QA", "QB"]), "B", "approve", id="references-last-is-parent"),
    pytest.param(dict(in_reply_to="unknown", references=["ackB", "QA"]), "A", "approve",
                 id="unknown-in-reply-to-then-references"),
    pytest.param(dict(in_reply_to="ownA", references=["ackA", "QA", "ownA"]), "A", "approve",
                 id="reply-to-own-linked-message-answers-quote-above-it"),
    pytest.param(dict(in_reply_to="ackA", references=["ackA"]), "A", "not_authorised",
                 id="reply-to-ack-names-no-quote"),
    pytest.param(dict(text_token="QA"), "A", "approve", id="token-in-text"),
    pytest.param(dict(to_token="QA", text_token="QB"), "A", "approve",
                 id="reply-address-token-before-text-token"),
    pytest.param(dict(in_reply_to="QA", to_token="QB"), "A", "approve",
                 id="message-id-before-token"),
    pytest.param(dict(subject="Re: [REQ-2] Quote"), "B", "not_authorised",
                 id="subject-tag-alone-names-no-quote"),
    pytest.param(dict(in_reply_to="QC1", references=["QC1"]), "C", "not_authorised",
                 id="reply-to-void-quote"),
    pytest.param(dict(in_reply_to="QC1", references=["ackC", "QC2", "QC1"]), "C",
                 "not_authorised", id="reply-to-void-quote-naming-current-further-back"),
    pytest.param(dict(text_token="QC1"), "C", "not_authorised", id="token-of-void-quote"),
    pytest.param(dict(in_reply_to="QC2", references=["QC1", "QC2"]), "C", "approve",
                 id="reply-to-current-quote-after-void-one"),
]


@pytest.mark.parametrize(("headers", "belongs_to", "verdict"), CASES)
def test_a_reply_belongs_to_the_nearest_request_it_names(engine, desk, world, headers,
                                                         belongs_to, verdict):
    with transaction(engine) as session:
        outcome = handle_message(session, desk, message(world, **headers))
    assert (outcome.request_id, outcome.verdict) == (world["ids"][belongs_to], verdict)
    with transaction(engine) as session:
        approved = {key for key, request_id in world["ids"].items()
                    if session.get(Request, request_id).status == "approved"}
    assert approved == ({belongs_to} if verdict == "approve" else set())


@pytest.mark.parametrize("headers", [
    pytest.param(dict(in_reply_to="QC1", references=["QC1"]), id="reply-to-void-quote"),
    pytest.param(dict(text_token="QC1"), id="token-of-void-quote"),
])
def test_a_reply_to_a_void_quote_decides_nothing_even_without_required_reference(
        engine, clock, world, headers):
    desk = Desk(settings_from_mapping({"mailbox": {"address": "support@agency.example"},
                                       "staff": {"notify": ["staff@agency.example"]},
                                       "policy": {"require_quote_reference": False}}),
                clock=clock)
    with transaction(engine) as session:
        outcome = handle_message(session, desk, message(world, **headers))
        request = session.get(Request, world["ids"]["C"])
        answer = session.exec(select(Outbox).where(Outbox.request_id == request.id)
                              .order_by(Outbox.id.desc())).first()
    assert (outcome.verdict, request.status) == ("not_authorised", "quoted")
    assert answer.template == "client/not_authorised"
    assert "latest quote" in answer.body_text  # "reply directly to our latest quote"
