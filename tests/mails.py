"""Building realistic inbound mail for tests: replies quoting our messages,
Japanese mail in ISO-2022-JP, auto-replies, broken MIME."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid


def mail(*, sender: str, subject: str, body: str, to: str = "support@agency.example",
         charset: str = "utf-8", message_id: str | None = None,
         in_reply_to: str | None = None, references: list[str] | None = None,
         headers: dict[str, str] | None = None, html: str | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id or make_msgid(idstring=uuid.uuid4().hex[:8],
                                                     domain="client.example")
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to.strip('<>')}>"
    refs = references if references is not None else ([in_reply_to] if in_reply_to else [])
    if refs:
        message["References"] = " ".join(f"<{r.strip('<>')}>" for r in refs)
    for name, value in (headers or {}).items():
        message[name] = value
    if charset == "iso-2022-jp":
        message.set_content(body.encode("iso-2022-jp"), maintype="text", subtype="plain",
                            cte="7bit")
        message.set_param("charset", "iso-2022-jp")
    else:
        message.set_content(body, charset=charset)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return bytes(message)


def quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines())


def reply(*, sender: str, original_subject: str, original_body: str, original_id: str,
          answer: str, **kwargs) -> bytes:
    """A reply as mail programs write it: the answer on top, the original quoted."""
    body = f"{answer}\n\nOn Thu, 26 Nov 2026 at 10:00, Support wrote:\n{quoted(original_body)}\n"
    return mail(sender=sender, subject=f"Re: {original_subject}", body=body,
                in_reply_to=original_id, **kwargs)


def japanese_request(sender: str, subject: str, body: str) -> bytes:
    """A request as Japanese mail programs still send it: ISO-2022-JP, encoded subject."""
    from email.header import Header

    raw_body = body.encode("iso-2022-jp")
    encoded_subject = Header(subject, "iso-2022-jp").encode()
    return (f"From: {sender}\r\nTo: support@agency.example\r\n"
            f"Subject: {encoded_subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@client.example>\r\n"
            f"Date: Thu, 26 Nov 2026 10:00:00 +0900\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=ISO-2022-JP\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n").encode() + raw_body + b"\r\n"
