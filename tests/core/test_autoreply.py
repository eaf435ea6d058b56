"""Automatic mail is recognised and never answered; people's mail is not."""

import pytest

from mailflow.core.autoreply import (
    AutomaticKind,
    bounce_evidence,
    classify_automatic,
    detect_automatic,
    is_bounce,
)
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
    ("precedence-bulk", mail("Precedence: bulk\n"), AutomaticKind.LIST, "precedence: bulk"),
    ("precedence-junk", mail("Precedence: junk\n"), AutomaticKind.LIST, "precedence: junk"),
    ("precedence-list", mail("Precedence: list\n"), AutomaticKind.LIST, "precedence: list"),
    ("x-autoreply", mail("X-Autoreply: yes\n"), AutomaticKind.AUTO_REPLY, "x-autoreply"),
    ("x-autorespond", mail("X-Autorespond: 1\n"), AutomaticKind.AUTO_REPLY, "x-autorespond"),
    ("null-return-path", mail("Return-Path: <>\n"), AutomaticKind.AUTO_REPLY, "null return path"),
    (
        "mailer-daemon",
        mail("From: MAILER-DAEMON@mx.example.org\n", body="<x@y.example>: User unknown").replace(
            b"Subject: Hi", b"Subject: Undelivered Mail Returned to Sender"),
        AutomaticKind.BOUNCE,
        "sender mailer-daemon",
    ),
    (   # the sender's name and a subject alone are no bounce (issue 8 point 5)
        "mailer-daemon-name-and-subject-only",
        mail("From: MAILER-DAEMON@mx.example.org\n", body="Hello from the admin").replace(
            b"Subject: Hi", b"Subject: Undelivered Mail Returned to Sender"),
        None,
        None,
    ),
    (
        "postmaster-bounce-text",
        mail("From: postmaster@example.org\n",
             body="This is the mail system at host mx.example.org.\n\nI'm sorry..."),
        AutomaticKind.BOUNCE,
        "sender postmaster",
    ),
    # A mailer-daemon address writing ordinary mail is a person (DESIGN §3).
    ("mailer-daemon-ordinary-mail", mail("From: MAILER-DAEMON@acme.example\n",
                                         body="Message-ID: <ours-1@example.com>"), None, None),
    ("postmaster-ordinary-mail", mail("From: postmaster@example.org\n"), None, None),
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


# --- which bounces may mark one of our messages bounced (issue 9, point 6) -------------

def report(action: str, report_type: str = "delivery-status",
           outer: str = "multipart/report") -> bytes:
    return DSN.replace(b"Action: failed", f"Action: {action}".encode()).replace(
        b"report-type=delivery-status", f"report-type={report_type}".encode()).replace(
        b"multipart/report", outer.encode())


DAEMON = "From: MAILER-DAEMON@acme.example\n"
QUOTING = "Message-ID: <ours-1@example.com>\n"
EVIDENCE = [
    ("dsn-failed", DSN, "delivery status: failed"),
    ("dsn-failed-case", report("FAILED"), "delivery status: failed"),
    ("dsn-delayed", report("delayed"), None),
    ("dsn-delivered", report("delivered"), None),
    ("dsn-relayed", report("relayed"), None),
    ("report-of-another-type", report("failed", "disposition-notification"), None),
    ("status-part-outside-a-report", report("failed", outer="multipart/mixed"), None),
    ("postfix-text", mail(DAEMON, body="This is the mail system at host mx.acme.example.\n\n"
                          "I'm sorry to have to inform you that your message could not\n"
                          f"be delivered to one or more recipients.\n\n{QUOTING}"),
     "bounce text of a mailer daemon"),
    ("qmail-text-wrapped", mail(DAEMON, body="Hi. This is the qmail-send\nprogram at mx.\n"),
     "bounce text of a mailer daemon"),
    ("exim-delay-warning", mail(DAEMON, body="This message was created automatically by mail "
                                "delivery software.\nA message that you sent has not yet been "
                                "delivered to one or more of its recipients."), None),
    ("daemon-quoting-our-id", mail(DAEMON, body=f"Your mail bounced.\n{QUOTING}"), None),
    ("daemon-bounce-subject-only", mail(DAEMON).replace(b"Subject: Hi", b"Subject: Undelivered"),
     None),
    ("person", mail("", body="The banner could not be delivered to the printer."), None),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in EVIDENCE],
                         ids=[c[0] for c in EVIDENCE])
def test_bounce_evidence(raw, expected):
    assert bounce_evidence(parse_message(raw)) == expected
