"""Raw MIME replies to one of our quotes, the way mail programs write them.

A reply is the client's new text put into a *layout* (where the quoted quote
goes and how its attribution looks: Gmail, Outlook desktop/OWA, Thunderbird,
Apple Mail/iPhone, their Japanese forms, HTML-only Outlook, a forward below,
bottom-posting), optionally with a *signature*, then encoded as mail programs
send it (UTF-8 8bit/quoted-printable/base64, ISO-2022-JP, Shift_JIS, HTML).
Every reply has In-Reply-To and References set to the quote's Message-ID.
"""

from __future__ import annotations

import base64
import html
import quopri
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.header import Header

SUPPORT = "Example Support <support@agency.example>"


@dataclass(frozen=True)
class QuoteMail:
    """The quote being answered: what the reply quotes and threads on."""

    message_id: str
    subject: str
    body: str
    lang: str = "en"


#: Our quotes as the templates write them (for tests without a database).
SAMPLE_QUOTES = {
    "en": QuoteMail(
        message_id="<quote-3.abc@agency.example>",
        subject="[REQ-3] Quote: Replace banner",
        body=(
            "Hello Acme,\n\nHere is our quote for [REQ-3] Replace banner:\n\n"
            "  Credits:          2 credits (16,000 yen)\n"
            "  Completion date:  2026-12-03 (Thu)\n  Valid until:      2026-12-09 (Wed)\n\n"
            "Your balance is 5 credits; after approval it would be 3 credits.\n\n"
            "To go ahead, reply with the word APPROVE.\nTo decline, reply with the word REJECT.\n"
            "Put the word at the start of your reply. Credits are taken only when you\n"
            "approve, and this quote is valid until 2026-12-09 (Wed).\n\n"
            "Quote reference: abcdefghijklmnopqrstuvwxyz\n"
            "(Please keep this line when you reply.)\n\n"
            "Example Support\n\n-- \nBalance: 5 credits available.\n"
        ),
        lang="en",
    ),
    "ja": QuoteMail(
        message_id="<quote-4.def@agency.example>",
        subject="[REQ-4] お見積り：バナー差し替え",
        body=(
            "株式会社アクメ\nご担当者様\n\nいつもお世話になっております。Example Supportです。\n\n"
            "[REQ-4]「バナー差し替え」のお見積りをお送りいたします。\n\n"
            "  必要クレジット：2クレジット（16,000円相当）\n"
            "  完了予定日：　　2026年12月3日（木）\n  有効期限：　　　2026年12月9日（水）\n\n"
            "現在の残高は5クレジットです。ご承認後の残高は3クレジットとなります。\n\n"
            "作業を進める場合は「承認」、見送る場合は「却下」とご返信ください。\n"
            "返信本文の最初にご記入ください（英語の APPROVE / REJECT でも承ります）。\n"
            "クレジットはご承認の時点で差し引かれます。\n"
            "このお見積りの有効期限は2026年12月9日（水）です。\n\n"
            "Quote reference: abcdefghijklmnopqrstuvwxyz\n"
            "（お見積り番号です。ご返信の際はこの行を残してください。）\n\n"
            "Example Support\n\n-- \n残高：5クレジット\n"
        ),
        lang="ja",
    ),
}


def quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.rstrip("\n").split("\n"))


# --- signatures ------------------------------------------------------------------------

SIGNATURES: dict[str, str] = {
    "none": "",
    "dash-dash": "-- \nTaro Tanaka\nAcme Inc. | Marketing\nTel: +81 3 1234 5678",
    "ja-rules": ("━━━━━━━━━━━━━━━━━━━━\n株式会社アクメ　マーケティング部\n田中 太郎\n"
                 "〒100-0001 東京都千代田区千代田1-1\nTEL: 03-1234-5678\n"
                 "━━━━━━━━━━━━━━━━━━━━"),
    "ja-equals": ("＝＝＝＝＝＝＝＝＝＝＝＝＝＝＝＝\n株式会社アクメ\n田中太郎\nTEL 03-1234-5678\n"
                  "＝＝＝＝＝＝＝＝＝＝＝＝＝＝＝＝"),
    "ja-dashes": "--------------------------------\n株式会社アクメ 田中\n〒100-0001 東京都千代田区\n--------------------------------",
    "iphone": "Sent from my iPhone",
    "ja-iphone": "iPhoneから送信",
    "name-only": "Taro",
}


# --- layouts: (new text, quote) -> body ------------------------------------------------

Layout = Callable[[str, QuoteMail], str]


def _gmail_en(new: str, q: QuoteMail) -> str:
    return f"{new}\n\nOn Mon, Nov 30, 2026 at 10:00 AM {SUPPORT} wrote:\n\n{quoted(q.body)}\n"


def _gmail_en_folded(new: str, q: QuoteMail) -> str:
    return (f"{new}\n\nOn Mon, Nov 30, 2026 at 10:00 AM Example Support <\n"
            f"support@agency.example> wrote:\n\n{quoted(q.body)}\n")


def _gmail_ja(new: str, q: QuoteMail) -> str:
    return f"{new}\n\n2026年11月30日(月) 10:00 {SUPPORT}:\n\n{quoted(q.body)}\n"


def _gmail_ja_folded(new: str, q: QuoteMail) -> str:
    return (f"{new}\n\n2026年11月30日(月) 10:00 Example Support <support@agency.example\n"
            f">:\n\n{quoted(q.body)}\n")


def _gmail_ja_folded_name(new: str, q: QuoteMail) -> str:
    return (f"{new}\n\n2026年11月30日(月) 10:00 Example Support\n<support@agency.example>:\n\n"
            f"{quoted(q.body)}\n")


def _headers_en(q: QuoteMail) -> str:
    return (f"From: {SUPPORT}\nSent: Monday, November 30, 2026 10:00 AM\n"
            f"To: Taro Tanaka <tanaka@acme.example>\nSubject: {q.subject}\n")


def _headers_ja(q: QuoteMail) -> str:
    return (f"差出人: {SUPPORT}\n送信日時: 2026年11月30日 10:00\n"
            f"宛先: 田中 太郎 <tanaka@acme.example>\n件名: {q.subject}\n")


def _outlook_original(new: str, q: QuoteMail) -> str:
    return f"{new}\n\n-----Original Message-----\n{_headers_en(q)}\n{q.body}"


def _outlook_owa(new: str, q: QuoteMail) -> str:
    return f"{new}\n\n________________________________\n{_headers_en(q)}\n{q.body}"


def _outlook_ja(new: str, q: QuoteMail) -> str:
    return f"{new}\n\n{_headers_ja(q)}\n{q.body}"


def _outlook_ja_underscore(new: str, q: QuoteMail) -> str:
    return f"{new}\n\n________________________________\n{_headers_ja(q)}\n{q.body}"


def _outlook_ja_mixed(new: str, q: QuoteMail) -> str:
    return (f"{new}\n\nFrom: {SUPPORT}\n送信日時: 2026年11月30日(月) 10:00\n"
            f"宛先: tanaka@acme.example\n件名: {q.subject}\n\n{q.body}")


def _outlook_ja_original(new: str, q: QuoteMail) -> str:
    return f"{new}\n\n-----Original Message-----\n{_headers_ja(q)}\n{q.body}"


def _thunderbird_en(new: str, q: QuoteMail) -> str:
    return f"{new}\n\nOn 2026/11/30 10:00, Example Support wrote:\n{quoted(q.body)}\n"


def _thunderbird_ja(new: str, q: QuoteMail) -> str:
    return f"{new}\n\n2026/11/30 10:00 に Example Support さんは書きました:\n{quoted(q.body)}\n"


def _apple(new: str, q: QuoteMail) -> str:
    return f"{new}\n\nOn Nov 30, 2026, at 10:00, {SUPPORT} wrote:\n\n{quoted(q.body)}\n"


def _iphone_en(new: str, q: QuoteMail) -> str:
    return (f"{new}\n\nSent from my iPhone\n\n> On Nov 30, 2026, at 10:00, {SUPPORT} wrote:\n>\n"
            f"{quoted(q.body)}\n")


def _iphone_ja(new: str, q: QuoteMail) -> str:
    return (f"{new}\n\niPhoneから送信\n\n2026/11/30 10:00、{SUPPORT}のメール:\n\n"
            f"{quoted(q.body)}\n")


def _forwarded_below(new: str, q: QuoteMail) -> str:
    return (f"{new}\n\n---------- Forwarded message ---------\nFrom: {SUPPORT}\n"
            f"Date: Mon, Nov 30, 2026 at 10:00 AM\nSubject: {q.subject}\n"
            f"To: <tanaka@acme.example>\n\n{q.body}")


def _bottom_gmail(new: str, q: QuoteMail) -> str:
    return f"On Mon, Nov 30, 2026 at 10:00 AM {SUPPORT} wrote:\n\n{quoted(q.body)}\n\n{new}\n"


def _bottom_after_greeting(new: str, q: QuoteMail) -> str:
    """A greeting above the quote, the answer below it (what bottom-posters do)."""
    first, _, rest = new.partition("\n")
    if not rest.strip() or not _GREETING.match(first):
        first, rest = ("Hi," if q.lang == "en" else "お世話になっております。"), new
    return (f"{first}\n\nOn Mon, Nov 30, 2026 at 10:00 AM {SUPPORT} wrote:\n"
            f"{quoted(q.body)}\n{rest.strip()}\n")


_GREETING = re.compile(r"^(?:hi|hello|dear|good morning)\b|お世話に|様$", re.IGNORECASE)


def _no_quote(new: str, q: QuoteMail) -> str:
    return f"{new}\n"


def _html_paragraphs(text: str) -> str:
    return "\n".join(f'<p class="MsoNormal">{html.escape(line) or "&nbsp;"}<o:p></o:p></p>'
                     for line in text.split("\n"))


def _outlook_html(new: str, q: QuoteMail) -> str:
    """HTML-only Outlook (desktop): Word's paragraphs, a border above the header block."""
    label = ("差出人", "送信日時", "宛先", "件名") if q.lang == "ja" else ("From", "Sent", "To",
                                                                  "Subject")
    return (
        '<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>'
        '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        "<style><!-- p.MsoNormal {margin:0mm;font-size:11.0pt;} --></style>"
        "<!--[if gte mso 9]><xml><o:shapedefaults v:ext=\"edit\" spidmax=\"1026\" /></xml>"
        "<![endif]--></head><body lang=\"JA\"><div class=\"WordSection1\">"
        f"{_html_paragraphs(new)}"
        '<p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0mm 0mm 0mm">'
        f'<p class="MsoNormal"><b>{label[0]}:</b> {html.escape(SUPPORT)}<br>'
        f"<b>{label[1]}:</b> 2026年11月30日 10:00<br>"
        f"<b>{label[2]}:</b> tanaka@acme.example<br>"
        f"<b>{label[3]}:</b> {html.escape(q.subject)}<o:p></o:p></p></div>"
        f"{_html_paragraphs(q.body)}</div></body></html>"
    )


def _owa_html(new: str, q: QuoteMail) -> str:
    """HTML-only Outlook on the web: divRplyFwdMsg after an <hr>."""
    return (
        f'<html><body><div dir="ltr">{"<br>".join(html.escape(x) for x in new.split(chr(10)))}'
        '</div><div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
        '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>From:</b> '
        f"{html.escape(SUPPORT)}<br><b>Sent:</b> Monday, November 30, 2026 10:00 AM<br>"
        f"<b>To:</b> Taro Tanaka<br><b>Subject:</b> {html.escape(q.subject)}</font><div>&nbsp;</div>"
        f'</div><div>{"<br>".join(html.escape(x) for x in q.body.split(chr(10)))}</div>'
        "</body></html>"
    )


def _gmail_html(new: str, q: QuoteMail) -> str:
    """HTML-only Gmail: the quote in a gmail_quote blockquote."""
    return (
        f'<div dir="ltr">{"<br>".join(html.escape(x) for x in new.split(chr(10)))}</div><br>'
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Nov 30, 2026 at '
        f"10:00 AM {html.escape(SUPPORT)} wrote:<br></div>"
        '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">'
        f'{"<br>".join(html.escape(x) for x in q.body.split(chr(10)))}</blockquote></div>'
    )


LAYOUTS: dict[str, Layout] = {
    "none": _no_quote,
    "gmail": _gmail_en,
    "gmail-folded": _gmail_en_folded,
    "gmail-ja": _gmail_ja,
    "gmail-ja-folded": _gmail_ja_folded,
    "gmail-ja-folded-name": _gmail_ja_folded_name,
    "outlook": _outlook_original,
    "outlook-owa": _outlook_owa,
    "outlook-ja": _outlook_ja,
    "outlook-ja-underscore": _outlook_ja_underscore,
    "outlook-ja-mixed": _outlook_ja_mixed,
    "outlook-ja-original": _outlook_ja_original,
    "thunderbird": _thunderbird_en,
    "thunderbird-ja": _thunderbird_ja,
    "apple": _apple,
    "iphone": _iphone_en,
    "iphone-ja": _iphone_ja,
    "forwarded-below": _forwarded_below,
    "bottom": _bottom_gmail,
    "bottom-after-greeting": _bottom_after_greeting,
    "outlook-html": _outlook_html,
    "owa-html": _owa_html,
    "gmail-html": _gmail_html,
}
HTML_LAYOUTS = frozenset({"outlook-html", "owa-html", "gmail-html"})
ENCODINGS = ("utf-8", "utf-8-qp", "utf-8-base64", "iso-2022-jp", "shift_jis")


def body_text(new_text: str, quote: QuoteMail, *, layout: str, signature: str = "none") -> str:
    """The reply body (text or HTML) before encoding."""
    sig = SIGNATURES[signature]
    new = f"{new_text}\n\n{sig}" if sig else new_text
    return LAYOUTS[layout](new, quote)


def _encoded_subject(subject: str) -> str:
    if subject.isascii():
        return subject
    return Header(subject, "utf-8").encode(maxlinelen=76)


def make_reply(new_text: str, quote: QuoteMail, *, layout: str = "gmail",
               encoding: str = "utf-8", signature: str = "none",
               sender: str = "tanaka@acme.example", subject: str | None = None,
               message_id: str | None = None) -> bytes:
    """A raw reply (bytes, CRLF) to ``quote`` whose new text is ``new_text``."""
    text = body_text(new_text, quote, layout=layout, signature=signature)
    subtype = "html" if layout in HTML_LAYOUTS else "plain"
    charset = {"iso-2022-jp": "ISO-2022-JP", "shift_jis": "Shift_JIS"}.get(encoding, "utf-8")
    payload = text.replace("\n", "\r\n").encode(charset.lower(), errors="strict")
    if encoding == "utf-8-qp":
        cte, payload = "quoted-printable", quopri.encodestring(payload)
    elif encoding == "utf-8-base64":
        cte = "base64"
        payload = b"\r\n".join(base64.encodebytes(payload).splitlines())
    elif encoding == "iso-2022-jp":
        cte = "7bit"
    else:
        cte = "8bit"
    headers = [
        f"From: {sender}",
        "To: support@agency.example",
        f"Subject: {_encoded_subject(subject if subject is not None else 'Re: ' + quote.subject)}",
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@acme.example>'}",
        f"In-Reply-To: {quote.message_id}",
        f"References: {quote.message_id}",
        "Date: Mon, 30 Nov 2026 11:00:00 +0900",
        "MIME-Version: 1.0",
        f"Content-Type: text/{subtype}; charset={charset}",
        f"Content-Transfer-Encoding: {cte}",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + payload + b"\r\n"
