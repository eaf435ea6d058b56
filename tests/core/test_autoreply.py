"""Automatic mail is recognised and never answered; people's mail is not."""

import pytest

from mailflow.core.autoreply import AutomaticKind, classify_automatic, detect_automatic, is_bounce
from mailflow.core.message import parse_message

OWN = "support@example.com"


def mail(headers: str, body: str = "Hello", content_type: str = "text/plain") -> bytes:
    base = f"From: Client <client@example.org>\nTo: {OWN}\nSubject: Hi\n"
    head = (
        base if "From:" not in headers else base.replace("From: Client <client@example.org>\n", "")
    )
    return f"{head}{headers}Content-Type: {content_type}\n\n{body}".encode()


DSN = (
    b"From: Mail Delivery Subsystem <mailer-daemon@mx.example.org>\nTo: support@example.com\n"
    b"Subject: Delivery Status Notification (Failure)\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
    b"--b\nContent-Type: text/plain\n\nfailed\n"
    b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
    b"Final-Recipient: rfc822; x@y.z\nAction: failed\nStatus: 5.1.1\n"
    b"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <ours-1@example.com>\nSubject: q\n"
    b"--b--\n"
)

CASES = [
    ("human", mail(""), None, None),
    (
        "auto-submitted",
        mail("Auto-Submitted: auto-replied\n"),
        AutomaticKind.AUTO_REPLY,
        "auto-submitted: auto-replied",
    ),
    ("auto-submitted-no-is-human", mail("Auto-Submitted: no\n"), None, None),
    ("precedence-bulk", mail("Precedence: bulk\n"), AutomaticKind.BULK, "precedence: bulk"),
    ("precedence-junk", mail("Precedence: junk\n"), AutomaticKind.BULK, "precedence: junk"),
    ("precedence-list", mail("Precedence: list\n"), AutomaticKind.BULK, "precedence: list"),
    ("x-autoreply", mail("X-Autoreply: yes\n"), AutomaticKind.AUTO_REPLY, "x-autoreply"),
    ("x-autorespond", mail("X-Autorespond: 1\n"), AutomaticKind.AUTO_REPLY, "x-autorespond"),
    ("null-return-path", mail("Return-Path: <>\n"), AutomaticKind.AUTO_REPLY, "null return path"),
    (
        "mailer-daemon",
        mail("From: MAILER-DAEMON@mx.example.org\n"),
        AutomaticKind.BOUNCE,
        "sender mailer-daemon",
    ),
    (
        "postmaster",
        mail("From: postmaster@example.org\n"),
        AutomaticKind.BOUNCE,
        "sender postmaster",
    ),
    (
        "own-address",
        mail("From: Support <support@example.com>\n"),
        AutomaticKind.OWN,
        "our own message",
    ),
    (
        "own-address-token",
        mail("From: support+abc@EXAMPLE.com\n"),
        AutomaticKind.OWN,
        "our own message",
    ),
    ("dsn", DSN, AutomaticKind.BOUNCE, "bounce (DSN)"),
    (
        "arf",
        mail("", "x", 'multipart/report; report-type=feedback-report; boundary="b"'),
        AutomaticKind.COMPLAINT,
        "complaint (ARF)",
    ),
    (
        "mdn",
        mail("", "x", "multipart/report; report-type=disposition-notification; boundary=b"),
        AutomaticKind.RECEIPT,
        "read receipt",
    ),
    (
        "ooo-with-suppress",
        mail("X-Auto-Response-Suppress: All\n").replace(
            b"Subject: Hi", "Subject: 自動返信: 不在".encode()
        ),
        AutomaticKind.AUTO_REPLY,
        "out-of-office subject + x-auto-response-suppress",
    ),
    ("suppress-alone-is-human", mail("X-Auto-Response-Suppress: All\n"), None, None),
]


@pytest.mark.parametrize(
    ("raw", "kind", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_classify_automatic(raw, kind, reason):
    msg = parse_message(raw)
    found = classify_automatic(msg, own_address=OWN)
    assert (found.kind if found else None) == kind
    assert detect_automatic(msg, own_address=OWN) == reason


def test_out_of_office_subject_alone_is_not_automatic():
    msg = parse_message(mail("").replace(b"Subject: Hi", b"Subject: Out of office next week?"))
    assert detect_automatic(msg, own_address=OWN) is None


def test_is_bounce_tells_bounce_from_auto_reply():
    assert is_bounce(parse_message(DSN))
    assert not is_bounce(parse_message(mail("Auto-Submitted: auto-replied\n")))
