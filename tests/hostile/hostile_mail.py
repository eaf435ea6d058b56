"""Hostile and broken inbound mail: hypothesis strategies for the fuzz tests and
plain builders for the pipeline tests.  Everything is built in memory as bytes;
nothing here parses or sends."""

from __future__ import annotations

import base64
import secrets
import uuid

from hypothesis import strategies as st

SUPPORT = "support@agency.example"
CLIENT = "a@acme.example"

# --- building blocks ----------------------------------------------------------------

CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "iso-2022-jp", "shift_jis", "euc-jp",
            "cp932", "windows-1252", "utf-16", "utf-7", "x-bogus", "unknown-8bit", "",
            '"utf-8', "utf-8'ja'", "../../etc/passwd", "a" * 300]
ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode",
             "bogus", ""]
EOLS = [b"\r\n", b"\n", b"\r"]
SENDERS = [CLIENT, "Acme <a@acme.example>", "stranger@else.example", "", "<>",
           "MAILER-DAEMON", "=?utf-8?q?A=0D=0AB?= <a@acme.example>", "a\x00b@acme.example",
           '"a\r\n b" <a@acme.example>', "a" * 400 + "@acme.example",
           "undisclosed-recipients:;", "@@@", SUPPORT]
HEADER_NAMES = ["Subject", "From", "To", "Cc", "Reply-To", "Date", "Message-ID",
                "In-Reply-To", "References", "Content-Type", "Content-Transfer-Encoding",
                "Content-Disposition", "MIME-Version", "Auto-Submitted", "Precedence",
                "Return-Path", "Authentication-Results", "X-Autoreply", "X-Mailflow-Template",
                "List-Id", "X-Failed-Recipients"]

header_text = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["=?utf-8?q?Hi=0D=0ABcc:_victim@x?=", "=?x-bogus?b?////?=",
                     "=?utf-8?b?not base64?=", "=?iso-2022-jp?b?GyRCJCIbKEI=?=",
                     "Hi\r\nBcc: victim@x", "\x00", "\r", " \t", "=?", "?=",
                     "<a@b> <c@d", "Thu, 31 Feb 2026 25:61:61 +9999", "multipart/mixed",
                     'multipart/mixed; boundary=""', "text/plain; charset=x-bogus",
                     "mx.agency.example; dmarc=fail", "auto-replied", "bulk"]),
)


def _header_line(name: str, value: str, eol: bytes, fold: bool) -> bytes:
    data = value.encode("utf-8", "surrogateescape")
    if fold and len(data) > 10:
        data = data[:10] + eol + b"\t" + data[10:]
    return name.encode() + b": " + data + eol


@st.composite
def header_blocks(draw, eol: bytes) -> bytes:
    """A header block with random, repeated, folded and broken headers."""
    lines = [_header_line("From", draw(st.sampled_from(SENDERS)), eol, False)]
    if draw(st.booleans()):
        lines.append(_header_line("Message-ID", f"<{uuid.uuid4().hex}@fuzz.example>",
                                  eol, False))
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(HEADER_NAMES))
        lines.append(_header_line(name, draw(header_text), eol, draw(st.booleans())))
    if draw(st.booleans()):
        lines.append(b"X-Long: " + b"a" * draw(st.integers(990, 3000)) + eol)
    return b"".join(lines)


def _encode_body(text: str, charset: str, cte: str, broken: bool) -> bytes:
    try:
        data = text.encode(charset or "utf-8")
    except (LookupError, UnicodeError):
        data = text.encode("utf-8", "surrogateescape")
    if cte == "base64":
        data = base64.encodebytes(data)
        if broken:
            data = data[: len(data) // 2] + b"!!*\xff==" + data[len(data) // 2:]
    elif cte == "quoted-printable":
        data = data.replace(b"=", b"=3D") + (b"=Z\xff=\r" if broken else b"")
    return data


@st.composite
def leaf_parts(draw, eol: bytes) -> bytes:
    ctype = draw(st.sampled_from(["text/plain", "text/html", "application/octet-stream",
                                  "message/rfc822", "message/delivery-status",
                                  "text/rfc822-headers", "image/png", "bogus", ""]))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(ENCODINGS))
    body = draw(st.text(max_size=200))
    if draw(st.booleans()):
        body = draw(st.sampled_from([
            "APPROVE\n\nOn Thu, Support wrote:\n> reply APPROVE or REJECT",
            "<script>alert(1)</script><p>hi</p>", "承認します", "\x00" * 5,
            "[" * 300, "\n" * 300, "From: x\nSent: y\nTo: z\nSubject: w\n",
            "Final-Recipient: rfc822; a@b\nAction: failed\n"])) + body
    headers = b"Content-Type: " + ctype.encode() + (
        b"; charset=" + charset.encode("utf-8", "replace") if charset else b"") + eol
    if cte:
        headers += b"Content-Transfer-Encoding: " + cte.encode() + eol
    if draw(st.booleans()):
        headers += (b"Content-Disposition: " + draw(st.sampled_from(
            [b"attachment", b"inline", b"attachment; filename*=x-bogus''%FF%00.txt",
             b'attachment; filename="=?utf-8?q?a=0Ab.txt?="', b"bogus; ;;"])) + eol)
    return headers + eol + _encode_body(body, charset, cte, draw(st.booleans()))


@st.composite
def mime_bodies(draw, eol: bytes, depth: int = 0) -> bytes:
    """A leaf, or a multipart with random (sometimes wrong or missing) boundaries."""
    if depth >= 3 or draw(st.integers(0, 2)) == 0:
        return draw(leaf_parts(eol))
    boundary = draw(st.sampled_from(["b1", "=_x", "", " ", "a" * 80, "--", "b\x00"]))
    declared = boundary if draw(st.integers(0, 4)) else draw(st.sampled_from(["other", ""]))
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report", "digest"]))
    parts = draw(st.lists(mime_bodies(eol, depth + 1), max_size=4))
    out = (b"Content-Type: multipart/" + subtype.encode() + b'; boundary="'
           + declared.encode() + b'"' + eol + eol + b"preamble" + eol)
    for part in parts:
        out += b"--" + boundary.encode() + eol + part + eol
    if draw(st.booleans()):
        out += b"--" + boundary.encode() + b"--" + eol + b"epilogue"
    return out


@st.composite
def broken_messages(draw) -> bytes:
    """Structured but broken MIME: random headers, trees, charsets, line endings."""
    eol = draw(st.sampled_from(EOLS))
    message = draw(header_blocks(eol)) + draw(mime_bodies(eol))
    if draw(st.integers(0, 5)) == 0:  # mixed line endings and stray NULs
        message = message.replace(b"\n", draw(st.sampled_from([b"\r", b"\n\x00", b"\r\r\n"])))
    if draw(st.integers(0, 5)) == 0:
        cut = draw(st.integers(0, len(message)))
        message = message[:cut]
    return message


any_mail = st.one_of(st.binary(max_size=2000), broken_messages())


# --- builders for the pipeline tests -------------------------------------------------

def _msgid() -> str:
    return f"<{uuid.uuid4().hex}@hostile.example>"


def raw_mail(headers: list[tuple[str, str]] | list[tuple[str, bytes]], body: bytes = b"hi\r\n",
             *, message_id: bool = True) -> bytes:
    """A message from literal header lines (no encoding, no checking: hostile on purpose)."""
    lines = []
    if message_id:
        lines.append(b"Message-ID: " + _msgid().encode())
    for name, value in headers:
        value = value if isinstance(value, bytes) else value.encode("utf-8")
        lines.append(name.encode() + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def huge_attachment(size: int, sender: str = CLIENT) -> bytes:
    """A request with one base64 attachment of ``size`` random-ish bytes, built in memory."""
    boundary = "hostile-boundary"
    chunk = secrets.token_bytes(57 * 1024)  # 57 bytes -> 76 base64 chars per line
    encoded = base64.encodebytes(chunk).replace(b"\n", b"\r\n")
    repeats = max(1, size * 4 // 3 // len(encoded))
    head = raw_mail([("From", sender), ("To", SUPPORT), ("Subject", "Huge attachment"),
                     ("MIME-Version", "1.0"),
                     ("Content-Type", f'multipart/mixed; boundary="{boundary}"')], b"")
    return b"".join([
        head, f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n".encode(),
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="big.bin"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n".encode(),
        encoded * repeats, f"--{boundary}--\r\n".encode()])


def many_parts(count: int, sender: str = CLIENT) -> bytes:
    boundary = "many"
    head = raw_mail([("From", sender), ("To", SUPPORT), ("Subject", f"{count} parts"),
                     ("MIME-Version", "1.0"),
                     ("Content-Type", f'multipart/mixed; boundary="{boundary}"')], b"")
    first = f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nMany parts follow.\r\n"
    part = (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: attachment; filename="p.bin"\r\n\r\nxyz\r\n')
    return head + (first + part * (count - 1) + f"--{boundary}--\r\n").encode()


def deep_nesting(depth: int, sender: str = CLIENT) -> bytes:
    head = raw_mail([("From", sender), ("To", SUPPORT), ("Subject", f"{depth} levels"),
                     ("MIME-Version", "1.0"),
                     ("Content-Type", 'multipart/mixed; boundary="b0"')], b"")
    opening = "".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{i + 1}\"\r\n\r\n"
                      for i in range(depth))
    inner = f"--b{depth}\r\nContent-Type: text/plain\r\n\r\nThe bottom.\r\n--b{depth}--\r\n"
    closing = "".join(f"--b{i}--\r\n" for i in reversed(range(depth)))
    return head + (opening + inner + closing).encode()


def invalid_base64(sender: str = CLIENT) -> bytes:
    return raw_mail([("From", sender), ("To", SUPPORT), ("Subject", "Broken base64"),
                     ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=utf-8"),
                     ("Content-Transfer-Encoding", "base64")],
                    b"Please=replace*the banner!!!\xff\xfe\r\n====\r\nQUJD\r\n")


def guessed_token() -> str:
    """Random lower-case base32 of a quote token's length (26: 128 bits)."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
