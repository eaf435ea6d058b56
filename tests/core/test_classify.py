"""The mail rules (DESIGN §3) as pure functions: one line per case."""

from __future__ import annotations

import pytest

from mailflow.core.classify import (
    Decision,
    Facts,
    Reason,
    Verdict,
    decide,
    dmarc_verdict,
    request_number_in,
    tokens_in,
)
from mailflow.core.keywords import Command
from mailflow.core.states import Status

ACME, BETA = 1, 2
A, R, B = Command.APPROVE, Command.REJECT, Command.BUY

# A reply from Acme to its own quoted request, allowed to answer, quoting the quote.
LINKED = dict(sender_client_id=ACME, request_id=7, request_client_id=ACME,
              request_status=Status.QUOTED, sender_may_answer=True,
              refers_to_current_quote=True)


def linked(**changes) -> Facts:
    return Facts(**{**LINKED, **changes})


DECISIONS = [
    # (id, facts, verdict, reason)
    ("own-message", Facts(own=True, sender_client_id=ACME), Verdict.OWN, None),
    ("own-beats-command", linked(own=True, command=A), Verdict.OWN, None),
    ("automatic", Facts(automatic="Auto-Submitted: auto-replied", sender_client_id=ACME),
     Verdict.AUTOMATIC, None),
    ("automatic-with-approve-is-ignored", linked(automatic="X-Autoreply", command=A),
     Verdict.AUTOMATIC, None),
    ("bounce", Facts(bounce=True, automatic="delivery status notification"),
     Verdict.BOUNCE, None),
    ("unknown-sender", Facts(), Verdict.UNKNOWN_SENDER, None),
    ("unknown-sender-approve", Facts(command=A), Verdict.UNKNOWN_SENDER, None),
    ("unknown-sender-on-linked-request", linked(sender_client_id=None, command=A),
     Verdict.UNKNOWN_SENDER, None),
    ("new-request", Facts(sender_client_id=ACME), Verdict.NEW_REQUEST, None),
    # Staff by mail (§3 rule 8).
    ("staff-member-on-a-request", Facts(staff_sender=True, request_id=7,
                                        replies_to_staff_notice=True), Verdict.STAFF_MAIL, None),
    ("staff-member-commands", Facts(staff_sender=True, request_id=7, staff_commands=True),
     Verdict.STAFF_MAIL, None),
    ("staff-member-unlinked-is-held", Facts(staff_sender=True, staff_commands=True),
     Verdict.UNKNOWN_SENDER, None),
    ("forged-staff-member", Facts(staff_sender=True, request_id=7, dmarc_failed=True),
     Verdict.FORGED, None),
    ("automatic-reply-of-a-staff-member", Facts(staff_sender=True, request_id=7,
                                                automatic="Auto-Submitted: auto-replied"),
     Verdict.AUTOMATIC, None),
    ("stranger-replies-to-staff-notice", Facts(request_id=7, replies_to_staff_notice=True),
     Verdict.STAFF_REFUSED, None),
    ("client-replies-to-staff-notice", linked(replies_to_staff_notice=True),
     Verdict.STAFF_REFUSED, None),
    ("client-writes-staff-commands", linked(staff_commands=True, command=None),
     Verdict.STAFF_REFUSED, None),
    ("client-new-mail-with-staff-commands", Facts(sender_client_id=ACME, staff_commands=True),
     Verdict.STAFF_REFUSED, None),
    ("unlinked-balance", Facts(sender_client_id=ACME, command=Command.BALANCE),
     Verdict.BALANCE, None),
    ("unlinked-approve-is-a-new-request", Facts(sender_client_id=ACME, command=A),
     Verdict.NEW_REQUEST, None),
    ("unlinked-reject-is-a-new-request", Facts(sender_client_id=ACME, command=R),
     Verdict.NEW_REQUEST, None),
    ("unlinked-ambiguous-is-a-new-request", Facts(sender_client_id=ACME,
                                                  command=Command.AMBIGUOUS),
     Verdict.NEW_REQUEST, None),
    ("other-clients-approve", linked(sender_client_id=BETA, command=A),
     Verdict.NOT_AUTHORISED, Reason.NOT_CLIENT),
    ("other-clients-reject", linked(sender_client_id=BETA, command=R),
     Verdict.NOT_AUTHORISED, Reason.NOT_CLIENT),
    ("other-clients-forged-approve-gets-no-answer",
     linked(sender_client_id=BETA, command=A, dmarc_failed=True), Verdict.FORGED, None),
    ("other-clients-comment-is-their-new-request", linked(sender_client_id=BETA),
     Verdict.NEW_REQUEST, None),
    ("requester-only-policy", linked(command=A, sender_may_answer=False),
     Verdict.NOT_AUTHORISED, Reason.NOT_REQUESTER),
    ("approve", linked(command=A), Verdict.APPROVE, None),
    ("reject", linked(command=R), Verdict.REJECT, None),
    ("approve-on-received", linked(command=A, request_status=Status.RECEIVED),
     Verdict.NOT_AUTHORISED, Reason.NO_OPEN_QUOTE),
    ("approve-on-rejected", linked(command=A, request_status=Status.REJECTED),
     Verdict.ALREADY_DECIDED, None),
    ("reject-on-approved", linked(command=R, request_status=Status.APPROVED),
     Verdict.ALREADY_DECIDED, None),
    ("approve-on-cancelled", linked(command=A, request_status=Status.CANCELLED),
     Verdict.NOT_AUTHORISED, Reason.NO_OPEN_QUOTE),
    ("repeated-approve", linked(command=A, request_status=Status.APPROVED),
     Verdict.DUPLICATE_ANSWER, None),
    ("repeated-reject", linked(command=R, request_status=Status.REJECTED),
     Verdict.DUPLICATE_ANSWER, None),
    ("repeated-approve-without-reference",
     linked(command=A, request_status=Status.APPROVED, refers_to_current_quote=False),
     Verdict.DUPLICATE_ANSWER, None),
    ("no-quote-reference-required", linked(command=A, refers_to_current_quote=False),
     Verdict.NOT_AUTHORISED, Reason.NO_QUOTE_REFERENCE),
    ("reply-to-an-old-quote",
     linked(command=A, refers_to_current_quote=False, refers_to_old_quote=True),
     Verdict.NOT_AUTHORISED, Reason.NO_QUOTE_REFERENCE),
    ("reply-to-an-old-quote-reference-not-required",
     linked(command=A, refers_to_current_quote=False, refers_to_old_quote=True,
            require_quote_reference=False),
     Verdict.NOT_AUTHORISED, Reason.NO_QUOTE_REFERENCE),
    ("no-quote-reference-not-required",
     linked(command=A, refers_to_current_quote=False, require_quote_reference=False),
     Verdict.APPROVE, None),
    ("reject-without-reference-not-required",
     linked(command=R, refers_to_current_quote=False, require_quote_reference=False),
     Verdict.REJECT, None),
    ("expired-quote", linked(command=A, quote_expired=True), Verdict.QUOTE_EXPIRED, None),
    ("reject-on-expired-quote", linked(command=R, quote_expired=True),
     Verdict.QUOTE_EXPIRED, None),
    ("dmarc-fail-approve", linked(command=A, dmarc_failed=True), Verdict.FORGED, None),
    ("dmarc-fail-beats-every-other-check",
     linked(command=A, dmarc_failed=True, sender_may_answer=False,
            refers_to_current_quote=False), Verdict.FORGED, None),
    ("dmarc-fail-comment-is-not-forwarded", linked(dmarc_failed=True), Verdict.FORGED, None),
    ("dmarc-fail-new-request-is-not-created",
     Facts(sender_client_id=ACME, dmarc_failed=True), Verdict.FORGED, None),
    ("dmarc-fail-balance-leaks-no-statement",
     Facts(sender_client_id=ACME, command=Command.BALANCE, dmarc_failed=True),
     Verdict.FORGED, None),
    ("ambiguous", linked(command=Command.AMBIGUOUS), Verdict.ASK_WHICH, None),
    ("linked-balance", linked(command=Command.BALANCE), Verdict.BALANCE, None),
    ("linked-comment", linked(), Verdict.COMMENT, None),
    ("comment-on-approved-request", linked(request_status=Status.APPROVED),
     Verdict.COMMENT, None),
    ("comment-from-colleague-not-allowed-to-answer", linked(sender_may_answer=False),
     Verdict.COMMENT, None),
    # BUY n: an order for the sender's own client, in new mail or in any reply.
    ("unlinked-buy", Facts(sender_client_id=ACME, command=B, buy_count=5), Verdict.BUY, None),
    ("buy-in-a-reply-to-a-quote-approves-nothing", linked(command=B, buy_count=5),
     Verdict.BUY, None),
    ("buy-zero-is-still-an-order-to-refuse", Facts(sender_client_id=ACME, command=B,
                                                   buy_count=0), Verdict.BUY, None),
    ("buy-fraction-is-still-an-order-to-refuse",
     Facts(sender_client_id=ACME, command=B, buy_count_text="1.5"), Verdict.BUY, None),
    ("buy-from-a-colleague-not-allowed-to-answer",
     linked(command=B, buy_count=5, sender_may_answer=False), Verdict.BUY, None),
    ("buy-by-another-client-on-a-linked-request-is-their-own-order",
     linked(command=B, buy_count=5, sender_client_id=BETA), Verdict.BUY, None),
    ("buy-on-an-approved-request", linked(command=B, buy_count=2,
                                          request_status=Status.APPROVED), Verdict.BUY, None),
    ("unknown-sender-buy-is-held", Facts(command=B, buy_count=5), Verdict.UNKNOWN_SENDER,
     None),
    ("dmarc-fail-buy-issues-no-invoice",
     Facts(sender_client_id=ACME, command=B, buy_count=5, dmarc_failed=True),
     Verdict.FORGED, None),
    ("automatic-buy-is-ignored", Facts(sender_client_id=ACME, command=B, buy_count=5,
                                       automatic="X-Autoreply"), Verdict.AUTOMATIC, None),
    ("unclear-buy-is-asked-about", Facts(sender_client_id=ACME, buy_unclear=True),
     Verdict.ASK_BUY, None),
    ("unclear-buy-in-a-reply-to-a-quote", linked(buy_unclear=True), Verdict.ASK_BUY, None),
    ("unclear-buy-from-a-stranger-is-held", Facts(buy_unclear=True),
     Verdict.UNKNOWN_SENDER, None),
    ("dmarc-fail-unclear-buy", Facts(sender_client_id=ACME, buy_unclear=True,
                                     dmarc_failed=True), Verdict.FORGED, None),
    # list and group mail (DESIGN §3 rule 2), spam (policy.spam_header)
    ("list-mail-of-no-client-is-held", Facts(list_mail=True), Verdict.LIST_HELD, None),
    ("list-mail-of-a-client-is-a-request", Facts(list_mail=True, sender_client_id=ACME),
     Verdict.NEW_REQUEST, None),
    ("list-mail-of-a-client-is-a-comment", linked(list_mail=True), Verdict.COMMENT, None),
    ("list-mail-from-the-clients-own-address-decides", linked(list_mail=True, command=A),
     Verdict.APPROVE, None),
    ("relayed-approve-is-a-comment", linked(list_mail=True, relayed=True, command=A),
     Verdict.COMMENT, Reason.RELAYED),
    ("relayed-reject-is-a-comment", linked(list_mail=True, relayed=True, command=R),
     Verdict.COMMENT, Reason.RELAYED),
    ("relayed-balance-answered", linked(list_mail=True, relayed=True,
                                        command=Command.BALANCE), Verdict.BALANCE, None),
    ("spam-is-held", Facts(spam=True, sender_client_id=ACME), Verdict.SPAM, None),
    ("spam-approve-is-held", linked(spam=True, command=A), Verdict.SPAM, None),
    ("spam-list-mail-is-spam", Facts(spam=True, list_mail=True), Verdict.SPAM, None),
    ("relayed-buy-is-a-comment", linked(list_mail=True, relayed=True, command=B,
                                        buy_count=5), Verdict.COMMENT, None),
]


@pytest.mark.parametrize(("facts", "verdict", "reason"),
                         [case[1:] for case in DECISIONS], ids=[case[0] for case in DECISIONS])
def test_decide(facts, verdict, reason):
    assert decide(facts) == Decision(verdict, reason)


def test_every_verdict_and_reason_is_covered():
    assert {case[2] for case in DECISIONS} == set(Verdict)
    assert {case[3] for case in DECISIONS} - {None} == set(Reason)


# --- Authentication-Results ------------------------------------------------------

OURS = "mx.agency.example"
DMARC = [
    # (id, header value(s), expected)
    ("ours-fail", "mx.agency.example; dmarc=fail (p=reject dis=none) header.from=acme.example",
     "fail"),
    ("ours-pass", "mx.agency.example; spf=pass smtp.mailfrom=acme.example;"
     " dkim=pass header.d=acme.example; dmarc=pass header.from=acme.example", "pass"),
    ("ours-none", "mx.agency.example; dmarc=none header.from=acme.example", "none"),
    ("ours-no-dmarc-result", "mx.agency.example; spf=pass smtp.mailfrom=acme.example", None),
    ("ours-nothing-checked", "mx.agency.example; none", None),
    ("foreign-authserv-id", "mx.attacker.example; dmarc=pass header.from=acme.example", None),
    ("foreign-id-containing-ours", "evil.mx.agency.example; dmarc=pass", None),
    ("with-version", "mx.agency.example 1; dmarc=fail header.from=acme.example", "fail"),
    ("upper-case-result", "mx.agency.example; DMARC=FAIL header.from=acme.example", "fail"),
    ("authserv-id-case", "MX.Agency.Example; dmarc=fail header.from=acme.example", "fail"),
    ("folded-crlf", "mx.agency.example;\r\n\tspf=pass smtp.mailfrom=acme.example;\r\n"
     "\tdmarc=fail (p=reject) header.from=acme.example", "fail"),
    ("folded-lf", "mx.agency.example;\n  dmarc=fail header.from=acme.example", "fail"),
    ("ours-among-several", "mx.attacker.example; dmarc=pass\n"
     "mx.agency.example; dmarc=fail header.from=acme.example", "fail"),
    ("empty", "", None),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in DMARC], ids=[c[0] for c in DMARC])
def test_dmarc_verdict_from_header_text(value, expected):
    assert dmarc_verdict(value, OURS) == expected


@pytest.mark.parametrize(("headers", "expected"), [
    ({"authentication-results": "mx.agency.example; dmarc=fail"}, "fail"),
    ({"authentication-results": "mx.attacker.example; dmarc=fail"}, None),
    ({"auto-submitted": "no"}, None),
    ({}, None),
    (None, None),
], ids=["mapping-ours", "mapping-foreign", "mapping-without-header", "empty-mapping", "none"])
def test_dmarc_verdict_from_parsed_headers(headers, expected):
    assert dmarc_verdict(headers, OURS) == expected


def test_dmarc_verdict_of_a_parsed_folded_header():
    from mailflow.core.message import parse_message

    raw = (b"Authentication-Results: mx.agency.example;\r\n"
           b"\tspf=pass smtp.mailfrom=acme.example;\r\n"
           b"\tdmarc=fail (p=reject) header.from=acme.example\r\n"
           b"From: a@acme.example\r\nSubject: APPROVE\r\n\r\nAPPROVE\r\n")
    assert dmarc_verdict(parse_message(raw).headers, OURS) == "fail"


# --- quote tokens ----------------------------------------------------------------

TOKEN = "mfrggzdfmztwq2lknnwg23tpoa"  # 26 characters of base32, as new_token() makes


TOKENS = [
    # (id, recipients, text, expected)
    ("plus-address", (f"support+{TOKEN}@agency.example",), "", [TOKEN]),
    ("plus-address-upper-case", (f"Support+{TOKEN.upper()}@Agency.Example",), "", [TOKEN]),
    ("plain-address", ("support@agency.example",), "", []),
    ("plus-too-short", ("support+abc@agency.example",), "", []),
    ("reference-line", (), f"Thanks.\nQuote reference: {TOKEN}\n", [TOKEN]),
    ("quoted-reference-line", (), f"APPROVE\n\n> Credits: 2\n> Quote reference: {TOKEN}\n",
     [TOKEN]),
    ("twice-quoted", (), f">> Quote reference: {TOKEN}", [TOKEN]),
    ("upper-case-line", (), f"QUOTE REFERENCE: {TOKEN.upper()}", [TOKEN]),
    ("full-width-colon", (), f"Quote reference：{TOKEN}", [TOKEN]),
    ("japanese-label", (), f"> 見積番号：{TOKEN}", [TOKEN]),
    ("address-and-line-counted-once", (f"support+{TOKEN}@agency.example",),
     f"> Quote reference: {TOKEN}", [TOKEN]),
    ("no-token", ("support@agency.example",), "APPROVE\n> Credits: 2", []),
    ("token-without-label-does-not-count", (), f"APPROVE {TOKEN}", []),
]


@pytest.mark.parametrize(("recipients", "text", "expected"), [c[1:] for c in TOKENS],
                         ids=[c[0] for c in TOKENS])
def test_tokens_in(recipients, text, expected):
    assert tokens_in(recipients, text) == expected


# --- request numbers in subjects -------------------------------------------------

NUMBERS = [
    # (id, subject, format, expected)
    ("tag", "[REQ-12] Replace the banner", "[REQ-{id}]", 12),
    ("reply", "Re: [REQ-12] Replace the banner", "[REQ-{id}]", 12),
    ("forward-reply", "Fwd: RE: [REQ-1042] Quote", "[REQ-{id}]", 1042),
    ("lower-case", "re: [req-7] quote", "[REQ-{id}]", 7),
    ("full-width-brackets", "Re: ［REQ-12］ お見積り", "[REQ-{id}]", 12),
    ("full-width-everything", "返信: ［ＲＥＱ－１２］ お見積り", "[REQ-{id}]", 12),
    ("spaces-inside", "Re: [REQ- 12 ] x", "[REQ-{id}]", 12),
    ("no-tag", "Re: Replace the banner", "[REQ-{id}]", None),
    ("unclosed", "Re: [REQ-12 Replace", "[REQ-{id}]", None),
    ("other-prefix", "Re: [TKT-12] x", "[REQ-{id}]", None),
    ("hash-format", "Re: #12 Replace the banner", "#{id}", 12),
    ("hash-format-full-width", "Re: ＃１２ バナー", "#{id}", 12),
    ("hash-format-absent", "Re: Replace the banner", "#{id}", None),
    ("ticket-format", "Re: (Ticket 345) Banner", "(Ticket {id})", 345),
    ("ticket-format-case", "RE: (ticket 345) Banner", "(Ticket {id})", 345),
    ("ticket-format-other-brackets", "Re: [Ticket 345] Banner", "(Ticket {id})", None),
]


@pytest.mark.parametrize(("subject", "tag_format", "expected"), [c[1:] for c in NUMBERS],
                         ids=[c[0] for c in NUMBERS])
def test_request_number_in(subject, tag_format, expected):
    assert request_number_in(subject, tag_format) == expected
