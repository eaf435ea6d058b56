"""parse_message: never raises, decodes what real mail programs send."""

from datetime import UTC

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow.core.message import (
    extract_bounced_message_ids,
    normalise_message_id,
    parse_message,
)

SIMPLE = (
    b"From: =?UTF-8?B?5bGx55Sw?= <Yamada@Example.JP>\r\n"
    b"Reply-To: other@example.jp\r\n"
    b"To: Support <support@example.com>, b@example.com\r\n"
    b"Cc: C <C@example.com>\r\n"
    b"Subject: =?ISO-2022-JP?B?GyRCOCtAURsoQg==?= [REQ-1]\r\n\tnext\r\n"
    b"Date: Mon, 3 Mar 2025 10:00:00 +0900\r\n"
    b"Message-ID: < abc@example.jp >\r\n"
    b"In-Reply-To: <q1@example.com>\r\n"
    b"References: <q0@example.com> <q1@example.com>\r\n"
    b"Auto-Submitted: no\r\n"
    b"X-Mailflow-Request: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"APPROVE\r\n"
)


def test_parses_addresses_ids_and_headers():
    msg = parse_message(SIMPLE)
    assert msg.from_addr == "yamada@example.jp"
    assert msg.from_name == "山田"
    assert msg.reply_to == "other@example.jp"
    assert msg.to == ("support@example.com", "b@example.com")
    assert msg.cc == ("c@example.com",)
    assert msg.subject == "見積 [REQ-1] next"
    assert msg.message_id == "abc@example.jp"
    assert msg.in_reply_to == ("q1@example.com",)
    assert msg.references == ("q0@example.com", "q1@example.com")
    assert msg.date is not None and msg.date.utcoffset().total_seconds() == 9 * 3600
    assert msg.headers["auto-submitted"] == "no"
    assert msg.headers["x-mailflow-request"] == "1"
    assert "received" not in msg.headers
    assert msg.text.strip() == "APPROVE"
    assert msg.size == len(SIMPLE)


def body(content_type: str, payload: bytes, cte: str = "8bit") -> bytes:
    return (
        b"From: a@example.org\nSubject: s\nMIME-Version: 1.0\n"
        + f"Content-Type: {content_type}\nContent-Transfer-Encoding: {cte}\n\n".encode()
        + payload
    )


TEXT = "承認します。よろしくお願いします。"
CHARSETS = [
    ("iso-2022-jp", body("text/plain; charset=iso-2022-jp", TEXT.encode("iso2022_jp"), "7bit")),
    ("shift-jis", body("text/plain; charset=Shift_JIS", TEXT.encode("cp932"))),
    ("euc-jp", body("text/plain; charset=euc-jp", TEXT.encode("euc_jp"))),
    ("undeclared-utf8", body("text/plain", TEXT.encode("utf-8"))),
    ("undeclared-cp932", body("text/plain", TEXT.encode("cp932"))),
    ("undeclared-iso2022", body("text/plain", TEXT.encode("iso2022_jp"))),
    ("mislabelled-ascii-utf8", body("text/plain; charset=us-ascii", TEXT.encode("utf-8"))),
    ("unknown-charset", body("text/plain; charset=x-klingon", TEXT.encode("utf-8"))),
]


@pytest.mark.parametrize("raw", [c[1] for c in CHARSETS], ids=[c[0] for c in CHARSETS])
def test_japanese_bodies_decode(raw):
    assert parse_message(raw).text.strip() == TEXT


def test_windows_1252_body():
    raw = body("text/plain; charset=windows-1252", "Grüße – 5€".encode("cp1252"))
    assert parse_message(raw).text.strip() == "Grüße – 5€"


def test_undeclared_latin1_falls_back_without_raising():
    msg = parse_message(body("text/plain", "café résumé".encode("latin-1")))
    assert msg.text.strip() == "café résumé"
    assert any("undeclared" in d for d in msg.defects)


def test_html_only_body_becomes_text():
    msg = parse_message(body("text/html; charset=utf-8", b"<p><b>APPROVE</b></p><p>Thanks</p>"))
    assert msg.html is not None
    assert msg.text.split()[0] == "APPROVE"


def test_raw_8bit_shift_jis_subject():
    raw = b"From: a@example.org\nSubject: " + "お見積り".encode("cp932") + b"\n\nx"
    assert parse_message(raw).subject == "お見積り"


def test_subject_control_characters_collapsed():
    raw = b"From: a@example.org\nSubject: =?utf-8?q?a=0D=0Ab=09c?=\n\nx"
    assert parse_message(raw).subject == "a b c"


def test_invalid_date_is_none_with_defect():
    msg = parse_message(b"From: a@example.org\nDate: yesterday-ish\n\nx")
    assert msg.date is None
    assert any("Date" in d for d in msg.defects)


def test_zoneless_date_is_aware():
    msg = parse_message(b"From: a@example.org\nDate: Mon, 3 Mar 2025 10:00:00 -0000\n\nx")
    assert msg.date is not None and msg.date.tzinfo == UTC


ATTACHED = (
    b'From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
    b"--b\nContent-Type: text/plain\n\nsee attached\n"
    b'--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename="q.pdf"\n'
    b"Content-Transfer-Encoding: base64\n\n" + b"QUJDREVGR0hJSg==\n" + b"--b--\n"
)


def test_attachment_kept_under_limit():
    (att,) = parse_message(ATTACHED).attachments
    assert (att.filename, att.content_type, att.size, att.data, att.truncated) == (
        "q.pdf",
        "application/pdf",
        10,
        b"ABCDEFGHIJ",
        False,
    )


def test_attachment_over_limit_keeps_metadata_only():
    (att,) = parse_message(ATTACHED, max_attachment_bytes=5).attachments
    assert (att.size, att.data, att.truncated) == (10, b"", True)


def test_message_over_max_bytes_keeps_headers():
    msg = parse_message(SIMPLE + b"x" * 1000, max_bytes=200)
    assert msg.from_addr == "yamada@example.jp"
    assert msg.message_id == "abc@example.jp"
    assert msg.text == ""
    assert any("limit" in d for d in msg.defects)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@x>", "abc@x"),
        ("  <a b@x>  ", "ab@x"),
        ("abc@x", "abc@x"),
        ("<CaSe@X>", "CaSe@X"),
        ("", None),
        ("<>", None),
        (None, None),
    ],
    ids=["brackets", "spaces", "bare", "case-kept", "empty", "empty-brackets", "none"],
)
def test_normalise_message_id(value, expected):
    assert normalise_message_id(value) == expected


def test_bounced_ids_from_dsn_headers_part():
    raw = (
        b"From: MAILER-DAEMON@mx\nMessage-ID: <dsn@mx>\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nfailed\n"
        b"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <ours-1@example.com>\n"
        b"--b--\n"
    )
    assert extract_bounced_message_ids(parse_message(raw)) == ("ours-1@example.com",)


def test_bounced_ids_from_attached_message_and_quoted_text():
    attached = (
        b"From: postmaster@mx\nMessage-ID: <dsn@mx>\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\n   Message-Id: <ours-2@example.com>\n"
        b"--b\nContent-Type: message/rfc822\n\nMessage-ID: <ours-3@example.com>\nSubject: q\n\nx\n"
        b"--b--\n"
    )
    assert set(extract_bounced_message_ids(attached)) == {
        "ours-2@example.com",
        "ours-3@example.com",
    }


MALFORMED = [
    b"",
    b"\x00\xff\xfe",
    b"Subject: =?utf-8?b?!!!?=\n\n",
    b'From: <<<@@@>>>\nTo: ,,,;;;\nCc: "unterminated\n\nx',
    b"Content-Type: multipart/mixed; boundary=\n\n--\n--\n",
    b'Content-Type: text/plain; charset="\n\nx',
    b"Content-Transfer-Encoding: base64\n\n!!!!not base64",
    b"Message-ID: \xff\xfe\nReferences: <a> <\nDate: Feb 31 2025\n\n",
    b"From: =?iso-2022-jp?B?GyRC?= <a@b>\n\n",
    b'Content-Type: multipart/alternative; boundary="x"\n\n--x\nContent-Type: text/html\n\n<p',
]


@pytest.mark.parametrize("raw", MALFORMED, ids=[f"malformed-{i}" for i in range(len(MALFORMED))])
def test_malformed_input_never_raises(raw):
    msg = parse_message(raw)
    assert isinstance(msg.text, str)
    extract_bounced_message_ids(msg)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_parse_message_never_raises_on_arbitrary_bytes(raw):
    msg = parse_message(raw)
    assert msg.size == len(raw)
    extract_bounced_message_ids(raw)


_HEADER_LINES = st.sampled_from(
    [
        b"From: Client <client@example.org>",
        b"From: =?utf-8?q?broken",
        b'To: a@b, <c@d>, "x" <>',
        b"Subject: =?ISO-2022-JP?B?GyRCOC84UBsoQg==?=",
        b"Subject: \x82\xa8\x8c\xa9",
        b"Date: Mon, 3 Mar 2025 10:00:00 +0900",
        b"Date: 99 Foo 12345",
        b"Message-ID: <x@y>",
        b"References: <a@b> junk <c",
        b'Content-Type: multipart/mixed; boundary="b"',
        b"Content-Type: text/plain; charset=shift_jis",
        b"Content-Type: text/html; charset=bogus",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Disposition: attachment; filename*=utf-8''%E3%81%82.pdf",
        b"\tcontinuation",
        b"no colon here",
    ]
)
_BODY_LINES = st.sampled_from(
    [
        b"--b",
        b"--b--",
        b"Content-Type: message/rfc822",
        b"",
        b"APPROVE",
        b"> REJECT",
        b"=E3=81=82=",
        b"QUJD",
        "承認".encode("cp932"),
        b"\x1b$B>5G'\x1b(B",
        b"<p>hi</p>",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_HEADER_LINES, max_size=12),
    st.lists(_BODY_LINES, max_size=20),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_parse_message_never_raises_on_mutated_mail(headers, lines, eol):
    raw = eol.join(headers) + eol + eol + eol.join(lines)
    msg = parse_message(raw)
    assert isinstance(msg.text, str) and isinstance(msg.subject, str)
    assert "\n" not in msg.subject and "\r" not in msg.subject
