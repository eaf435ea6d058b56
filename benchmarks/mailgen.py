"""Realistic inbound mail for the benchmarks.

A deterministic (seeded) mix of what a support desk's inbox really holds:

| kind            | share | what it is |
| --------------- | ----- | ---------- |
| new_plain       | 28 %  | a new request from a known client, plain text (a third also carry an HTML alternative) |
| new_ja          | 10 %  | a new request from a Japanese client in ISO-2022-JP (encoded subject, 7-bit JIS body) |
| new_html        | 10 %  | a new request as HTML only (no text part) |
| new_attachment  |  2 %  | a new request with a 200 KB attachment (PDF or PNG, base64) |
| reply_approve   | 10 %  | APPROVE / 承認 replying to a real quote, the quote quoted underneath |
| reply_reject    |  5 %  | REJECT / 却下 replying to a real quote, the quote quoted underneath |
| reply_comment   | 10 %  | a question replying to our acknowledgement or quote, with quoted history |
| autoreply       | 10 %  | out-of-office and other automatic answers to our mail (RFC 3834 and vendor headers) |
| balance         |  5 %  | BALANCE / 残高 alone |
| unknown         | 10 %  | a request from an address no client has |

Replies need something to reply to: the caller seeds requests (and quotes) in
the database first and passes them in as `Thread`s.  An APPROVE or REJECT
needs a quote of its own (a second approval of the same quote is a different
case); when the quotes run out, the rest become comments.
"""

from __future__ import annotations

import base64
import html
import quopri
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime

SUPPORT = "support@agency.example"
SUPPORT_NAME = "Agency Support"

MIX: dict[str, float] = {
    "new_plain": 0.28,
    "new_ja": 0.10,
    "new_html": 0.10,
    "new_attachment": 0.02,
    "reply_approve": 0.10,
    "reply_reject": 0.05,
    "reply_comment": 0.10,
    "autoreply": 0.10,
    "balance": 0.05,
    "unknown": 0.10,
}

#: What each kind should become (the poller's verdict names).
EXPECTED_VERDICT = {
    "new_plain": "new_request", "new_ja": "new_request", "new_html": "new_request",
    "new_attachment": "new_request", "reply_approve": "approve", "reply_reject": "reject",
    "reply_comment": "comment", "autoreply": "automatic", "balance": "balance",
    "unknown": "unknown_sender",
}

ATTACHMENT_BYTES = 200 * 1024


# --- people -------------------------------------------------------------------------

FIRST_EN = ["Alice", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Henry", "Isla",
            "Jack", "Kate", "Liam", "Mia", "Noah", "Olivia", "Peter", "Quinn", "Ruby"]
LAST_EN = ["Smith", "Jones", "Taylor", "Brown", "Wilson", "Evans", "Thomas", "Walker",
           "White", "Hughes", "Green", "Hall", "Wood", "Clarke", "Turner"]
JA_NAMES = [("taro", "yamada", "山田 太郎"), ("hanako", "suzuki", "鈴木 花子"),
            ("kenji", "sato", "佐藤 健二"), ("yuki", "tanaka", "田中 由紀"),
            ("akira", "ito", "伊藤 明"), ("mai", "watanabe", "渡辺 舞"),
            ("hiroshi", "nakamura", "中村 博"), ("emi", "kobayashi", "小林 恵美"),
            ("daisuke", "kato", "加藤 大輔"), ("naoko", "yoshida", "吉田 直子")]
COMPANY_WORDS = ["Acme", "Bluebird", "Cedar", "Delta", "Evergreen", "Fjord", "Granite",
                 "Harbor", "Indigo", "Juniper", "Kestrel", "Lumen", "Maple", "Nimbus",
                 "Orchid", "Pioneer", "Quartz", "Riverside", "Summit", "Tidal"]
COMPANY_KINDS = ["Bakery", "Dental", "Logistics", "Books", "Studio", "Clinic", "Travel",
                 "Cafe", "Realty", "Farm", "Design", "Motors"]
JA_COMPANIES = ["山田商店", "鈴木工務店", "佐藤歯科", "田中製菓", "伊藤不動産", "渡辺運輸",
                "中村書店", "小林旅館", "加藤農園", "吉田デザイン"]


@dataclass(frozen=True)
class Person:
    name: str           # display name
    email: str


@dataclass
class ClientSpec:
    name: str
    lang: str
    contacts: list[Person]
    signature: str


def make_clients(count: int, rng: random.Random, *, ja_share: float = 0.25) -> list[ClientSpec]:
    """COUNT clients with one to three contacts each; about JA_SHARE of them Japanese."""
    clients = []
    for index in range(count):
        japanese = rng.random() < ja_share
        domain = f"client{index:05d}.example"
        contacts = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            if japanese:
                first, last, display = rng.choice(JA_NAMES)
            else:
                first, last = rng.choice(FIRST_EN), rng.choice(LAST_EN)
                display = f"{first} {last}"
            local = f"{first}.{last}".lower()
            email = f"{local}@{domain}"
            if any(c.email == email for c in contacts):
                email = f"{local}{len(contacts)}@{domain}"
            contacts.append(Person(display, email))
        if japanese:
            company = f"{rng.choice(JA_COMPANIES)} {index}"
            signature = (f"--\n{contacts[0].name}\n{company}\n"
                         f"TEL: 03-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}")
        else:
            company = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)} {index}"
            signature = (f"-- \n{contacts[0].name}\n{company}\n"
                         f"Tel +44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}")
        clients.append(ClientSpec(company, "ja" if japanese else "en", contacts, signature))
    return clients


# --- words --------------------------------------------------------------------------

EN_REQUESTS = [
    ("Replace the banner on the top page",
     "Could you replace the big banner on the top page with the new spring one? "
     "The image is in the shared folder as spring-2026.jpg. It should link to the "
     "campaign page."),
    ("Install a contact form plugin",
     "We would like a contact form on the About page. Name, e-mail, phone (optional) "
     "and a message field; the mails should go to info@ and to me."),
    ("Landing page for the autumn campaign",
     "We are running an autumn campaign from the 1st. Could you build a landing page "
     "with a hero image, three product blocks and a sign-up form? Text to follow."),
    ("Update the staff photos",
     "Two people joined the team and one left. I'll send the new photos; please also "
     "remove Mr Clarke from the staff page."),
    ("Broken link in the footer",
     "The 'Privacy policy' link in the footer goes to a 404 page since last week. "
     "Could you have a look?"),
    ("Add a new menu item",
     "Please add 'Careers' to the main menu, between 'About' and 'Contact', pointing "
     "to the new careers page."),
    ("Change the opening hours",
     "From next month we open at 9:00 instead of 10:00 on weekdays. Please update the "
     "opening hours on the top page and the access page."),
    ("Set up Google Analytics 4",
     "Our old analytics tag stopped working. Can you install GA4 on every page and "
     "give me access?"),
]
EN_PARAGRAPHS = [
    "It would be great to have this done before the end of the month if possible.",
    "Let me know how many credits this will take before you start.",
    "If anything is unclear, just give me a call.",
    "Our designer will send the files by Friday.",
    "This is not urgent, next week is fine.",
    "Please check that it also looks right on mobile phones.",
]
JA_REQUESTS = [
    ("トップページのバナー差し替えのお願い",
     "いつもお世話になっております。\nトップページのメインバナーを春のキャンペーン用の画像に"
     "差し替えていただけますでしょうか。\n画像は共有フォルダに入れてあります。"),
    ("お問い合わせフォーム設置について",
     "お世話になっております。\n会社概要ページにお問い合わせフォームを設置したいと考えて"
     "おります。\n項目は氏名、メールアドレス、電話番号、内容でお願いします。"),
    ("キャンペーン用ランディングページ作成のご相談",
     "いつもありがとうございます。\n来月から始まる秋のキャンペーン用に、ランディングページを"
     "一枚作成していただきたいです。\n原稿は来週お送りします。"),
    ("スタッフ紹介ページの更新",
     "お世話になっております。\n新しく入社した二名の写真と紹介文を追加していただけますか。\n"
     "また、退職した一名を削除してください。"),
    ("営業時間の変更",
     "いつもお世話になっております。\n来月より平日の営業時間が九時からに変わります。\n"
     "トップページとアクセスページの表記の修正をお願いいたします。"),
]
JA_CLOSINGS = ["よろしくお願いいたします。", "お手数ですが、よろしくお願いします。",
               "ご確認のほど、よろしくお願いいたします。"]
EN_COMMENTS = [
    "Thanks! One more thing: could you also make the logo a bit larger?",
    "Thank you. Is it possible to have it finished by Thursday instead?",
    "Quick question before we decide: does this include the mobile layout?",
    "Great, thanks. Our designer will send the final image tomorrow.",
    "Could you call me about this? I have a couple of questions.",
]
JA_COMMENTS = [
    "ありがとうございます。ロゴも少し大きくしていただけますか。",
    "ご連絡ありがとうございます。木曜日までに完了は可能でしょうか。",
    "確認ですが、スマートフォン表示も含まれますでしょうか。",
]
UNKNOWN_REQUESTS = [
    ("Website quote", "Hello, we are looking for an agency to redo our website. "
     "Could you send us your prices?"),
    ("Partnership proposal", "Dear team, we offer SEO services and would like to "
     "discuss a partnership with your agency."),
    ("Question about our site", "Hi, my company's site was made by you years ago. "
     "Can you still help with updates?"),
]


def _now_header() -> str:
    return format_datetime(datetime.now(UTC))


def _msgid(domain: str) -> str:
    return f"{uuid.uuid4().hex}@{domain}"


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


# --- threads seeded in the database --------------------------------------------------

@dataclass
class Thread:
    """One of our messages a client can reply to (an acknowledgement or a quote)."""

    request_id: int
    requester: str
    lang: str
    subject: str        # our message's subject, e.g. "[REQ-12] Replace the banner"
    message_id: str     # our message's Message-ID (no angle brackets)
    body: str           # our message's text, for quoting
    references: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Mail:
    kind: str
    raw: bytes
    sender: str
    message_id: str


# --- builders -----------------------------------------------------------------------
# Raw bytes written by hand, as mail programs write them: `email`'s own
# generator with policy.default costs 5-10 ms a message, too slow to make 10,000.

def _h(value: str, charset: str = "utf-8") -> str:
    """A header value, RFC 2047-encoded when it is not ASCII."""
    if value.isascii():
        return value
    return Header(value, charset).encode()


def _addr(person: Person, charset: str = "utf-8") -> str:
    return f"{_h(person.name, charset)} <{person.email}>" if person.name else person.email


def _headers(sender: Person, subject: str, *, message_id: str, in_reply_to: str | None = None,
             references: list[str] | None = None, extra: dict[str, str] | None = None,
             charset: str = "utf-8", mailer: str = "Mozilla/5.0 Thunderbird/115.0") -> str:
    lines = [f"From: {_addr(sender, charset)}", f"To: {SUPPORT_NAME} <{SUPPORT}>",
             f"Subject: {_h(subject, charset)}", f"Date: {_now_header()}",
             f"Message-ID: <{message_id}>"]
    if in_reply_to:
        lines.append(f"In-Reply-To: <{in_reply_to}>")
        lines.append("References: " + "\r\n ".join(
            f"<{r}>" for r in [*(references or []), in_reply_to]))
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    lines += ["MIME-Version: 1.0", f"User-Agent: {mailer}"]
    return "\r\n".join(lines) + "\r\n"


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _text_part(body: str, subtype: str = "plain", *, charset: str = "utf-8",
               cte: str | None = None) -> bytes:
    """Content headers and body of one text part, encoded as mail programs do:
    7bit when ASCII, else quoted-printable or base64 (UTF-8), or 7bit JIS."""
    if charset == "iso-2022-jp":
        data = _crlf(body).encode("iso-2022-jp")
        cte = "7bit"
    elif body.isascii():
        data, cte = _crlf(body).encode("ascii"), "7bit"
    elif cte == "base64":
        data = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    else:
        cte = "quoted-printable"
        data = quopri.encodestring(body.encode("utf-8")).replace(b"\n", b"\r\n")
    head = (f"Content-Type: text/{subtype}; charset={charset.upper()}\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n")
    return head.encode("ascii") + data


def _single(headers: str, part: bytes) -> bytes:
    return headers.encode("ascii") + part + b"\r\n"


def _multipart(headers: str, subtype: str, parts: list[bytes]) -> bytes:
    boundary = f"------------{uuid.uuid4().hex[:24]}"
    out = [headers.encode("ascii"),
           f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'
           f"This is a multi-part message in MIME format.\r\n".encode("ascii")]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode("ascii") + part + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


def _en_body(rng: random.Random, text: str, client: ClientSpec, person: Person) -> str:
    extra = "\n\n".join(rng.sample(EN_PARAGRAPHS, rng.randint(1, 3)))
    first = person.name.split()[0]
    return f"Hello,\n\n{text}\n\n{extra}\n\nBest regards,\n{first}\n\n{client.signature}\n"


def _ja_body(rng: random.Random, text: str, client: ClientSpec, person: Person) -> str:
    return (f"エージェンシー サポートご担当者様\n\n{client.name.split()[0]}の"
            f"{person.name.split()[0]}です。\n{text}\n\n{rng.choice(JA_CLOSINGS)}\n\n"
            f"{client.signature}\n")


def _request_body(rng, client: ClientSpec, person: Person) -> tuple[str, str]:
    if client.lang == "ja":
        subject, text = rng.choice(JA_REQUESTS)
        return subject, _ja_body(rng, text, client, person)
    subject, text = rng.choice(EN_REQUESTS)
    return subject, _en_body(rng, text, client, person)


def _html_of(body: str) -> str:
    return "".join(f"<p>{html.escape(para).replace(chr(10), '<br>')}</p>"
                   for para in body.split("\n\n"))


def new_plain(rng, client: ClientSpec) -> Mail:
    person = rng.choice(client.contacts)
    subject, body = _request_body(rng, client, person)
    mid = _msgid(person.email.split("@")[1])
    headers = _headers(person, subject, message_id=mid)
    cte = "base64" if rng.random() < 0.5 else None
    if rng.random() < 0.33:  # what most mail programs send: text plus an HTML alternative
        raw = _multipart(headers, "alternative", [
            _text_part(body, cte=cte),
            _text_part(f"<html><body>{_html_of(body)}</body></html>", "html", cte=cte)])
    else:
        raw = _single(headers, _text_part(body, cte=cte))
    return Mail("new_plain", raw, person.email, mid)


def new_ja(rng, client: ClientSpec) -> Mail:
    """ISO-2022-JP as Japanese mail programs still send it: encoded subject, JIS body."""
    person = rng.choice(client.contacts)
    subject, text = rng.choice(JA_REQUESTS)
    body = _ja_body(rng, text, client, person)
    mid = _msgid(person.email.split("@")[1])
    headers = _headers(person, subject, message_id=mid, charset="iso-2022-jp",
                       mailer="Becky! ver. 2.81.04")
    return Mail("new_ja", _single(headers, _text_part(body, charset="iso-2022-jp")),
                person.email, mid)


def new_html(rng, client: ClientSpec) -> Mail:
    """HTML only, as some webmail and marketing-minded clients send it."""
    person = rng.choice(client.contacts)
    subject, body = _request_body(rng, client, person)
    paras = "".join(
        f'<p style="margin:0 0 12px 0;font-family:Arial,sans-serif;font-size:14px">'
        f"{html.escape(para).replace(chr(10), '<br>')}</p>" for para in body.split("\n\n"))
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>"
            "td{padding:4px} .sig{color:#888}</style></head><body>"
            f'<table width="100%" cellpadding="0" cellspacing="0"><tr><td>{paras}</td></tr>'
            '</table><div class="sig"><img src="cid:logo" alt="logo" width="80"></div>'
            "</body></html>")
    mid = _msgid(person.email.split("@")[1])
    headers = _headers(person, subject, message_id=mid, mailer="Webmail 2.1")
    return Mail("new_html", _single(headers, _text_part(page, "html")), person.email, mid)


def new_attachment(rng, client: ClientSpec) -> Mail:
    person = rng.choice(client.contacts)
    subject, text = rng.choice(EN_REQUESTS)
    body = _en_body(rng, text + " The mock-up is attached.", client, person)
    mid = _msgid(person.email.split("@")[1])
    if rng.random() < 0.5:
        ctype, name, data = "application/pdf", "mockup.pdf", b"%PDF-1.7\n"
    else:
        ctype, name, data = "image/png", "banner-draft.png", b"\x89PNG\r\n\x1a\n"
    data += rng.randbytes(ATTACHMENT_BYTES)
    attachment = (f'Content-Type: {ctype}; name="{name}"\r\n'
                  f'Content-Disposition: attachment; filename="{name}"\r\n'
                  f"Content-Transfer-Encoding: base64\r\n\r\n").encode("ascii") + \
        base64.encodebytes(data).replace(b"\n", b"\r\n")
    raw = _multipart(_headers(person, subject, message_id=mid), "mixed",
                     [_text_part(body), attachment])
    return Mail("new_attachment", raw, person.email, mid)


def _person(client_of: dict[str, ClientSpec], address: str) -> Person:
    client = client_of[address]
    return next(c for c in client.contacts if c.email == address)


def _attribution(lang: str) -> str:
    if lang == "ja":
        return f"2026年11月26日(木) 10:00 {SUPPORT_NAME} <{SUPPORT}>:"
    return f"On Thu, 26 Nov 2026 at 10:00, {SUPPORT_NAME} <{SUPPORT}> wrote:"


def _reply(rng, kind: str, thread: Thread, answer: str, person: Person,
           client: ClientSpec, *, extra: dict[str, str] | None = None,
           subject_prefix: str = "Re: ") -> Mail:
    body = (f"{answer}\n\n{client.signature}\n\n{_attribution(client.lang)}\n"
            f"{_quoted(thread.body)}\n")
    if rng.random() < 0.2 and client.lang == "en":  # Outlook's style
        body = (f"{answer}\n\n{client.signature}\n\n-----Original Message-----\n"
                f"From: {SUPPORT_NAME} <{SUPPORT}>\nSent: Thursday, November 26, 2026 10:00\n"
                f"To: {person.email}\nSubject: {thread.subject}\n\n{thread.body}\n")
    mid = _msgid(person.email.split("@")[1])
    charset = "utf-8"
    if client.lang == "ja" and rng.random() < 0.5:
        try:
            body.encode("iso-2022-jp")
            charset = "iso-2022-jp"
        except UnicodeEncodeError:
            pass
    headers = _headers(person, f"{subject_prefix}{thread.subject}", message_id=mid,
                       in_reply_to=thread.message_id, references=thread.references,
                       extra=extra, charset=charset)
    part = _text_part(body, charset=charset, cte="base64" if rng.random() < 0.3 else None)
    return Mail(kind, _single(headers, part), person.email, mid)

def reply_command(rng, kind: str, thread: Thread, client_of) -> Mail:
    client = client_of[thread.requester]
    person = _person(client_of, thread.requester)
    if kind == "reply_approve":
        answer = rng.choice(["承認します。", "承認\n\n進めてください。"]) if client.lang == "ja" \
            else rng.choice(["APPROVE", "Approve\n\nThanks, please go ahead.",
                             "approve - looks good to us."])
    else:
        answer = "却下\n\n今回は見送ります。" if client.lang == "ja" \
            else rng.choice(["REJECT", "Reject\n\nToo expensive for us right now, sorry."])
    return _reply(rng, kind, thread, answer, person, client)


def reply_comment(rng, thread: Thread, client_of) -> Mail:
    client = client_of[thread.requester]
    person = _person(client_of, thread.requester)
    answer = rng.choice(JA_COMMENTS) if client.lang == "ja" else rng.choice(EN_COMMENTS)
    return _reply(rng, "reply_comment", thread, answer, person, client)


AUTO_VARIANTS = [
    ({"Auto-Submitted": "auto-replied"}, "Automatic reply: ",
     "I am out of the office until Monday with limited access to e-mail. "
     "For urgent matters please call the office."),
    ({"X-Autoreply": "yes", "Auto-Submitted": "auto-replied"}, "Out of Office: ",
     "Thank you for your message. I am on holiday and will reply when I am back."),
    ({"Precedence": "bulk"}, "Auto: ",
     "This mailbox is not monitored. Your message has been forwarded to our team."),
    ({"X-Autorespond": "true"}, "Re: ",
     "Thank you for contacting us. We have received your e-mail."),
    ({"X-Auto-Response-Suppress": "All", "Auto-Submitted": "auto-generated"},
     "自動応答: ", "ただいま不在にしております。○月○日以降に順次対応いたします。"),
]


def autoreply(rng, thread: Thread, client_of) -> Mail:
    client = client_of[thread.requester]
    person = _person(client_of, thread.requester)
    extra, prefix, text = rng.choice(AUTO_VARIANTS)
    mid = _msgid(person.email.split("@")[1])
    headers = _headers(person, f"{prefix}{thread.subject}", message_id=mid,
                       in_reply_to=thread.message_id, references=thread.references,
                       extra=extra, mailer="Microsoft Outlook 16.0")
    return Mail("autoreply", _single(headers, _text_part(f"{text}\n\n{client.signature}\n")),
                person.email, mid)


def balance(rng, client: ClientSpec) -> Mail:
    person = rng.choice(client.contacts)
    mid = _msgid(person.email.split("@")[1])
    if client.lang == "ja":
        subject, body = rng.choice([("残高", f"\n{client.signature}\n"),
                                    ("残高確認", f"残高\n\n{client.signature}\n")])
    else:
        subject, body = rng.choice([("BALANCE", f"\n{client.signature}\n"),
                                    ("balance please", f"BALANCE\n\n{client.signature}\n")])
    return Mail("balance", _single(_headers(person, subject, message_id=mid), _text_part(body)),
                person.email, mid)


def unknown(rng, index: int) -> Mail:
    first, last = rng.choice(FIRST_EN), rng.choice(LAST_EN)
    person = Person(f"{first} {last}", f"{first.lower()}.{last.lower()}{index}@unknown{index % 97}.example")
    subject, text = rng.choice(UNKNOWN_REQUESTS)
    mid = _msgid(person.email.split("@")[1])
    body = f"{text}\n\nKind regards,\n{person.name}\n"
    return Mail("unknown", _single(_headers(person, subject, message_id=mid), _text_part(body)),
                person.email, mid)


# --- the mix ------------------------------------------------------------------------

def plan(count: int, rng: random.Random) -> list[str]:
    """COUNT kinds in the proportions of MIX (rounded, the remainder to new_plain), shuffled."""
    kinds: list[str] = []
    for kind, share in MIX.items():
        if kind != "new_plain":
            kinds += [kind] * round(count * share)
    kinds += ["new_plain"] * max(0, count - len(kinds))
    kinds = kinds[:count]
    rng.shuffle(kinds)
    return kinds


def quotes_needed(kinds: list[str]) -> int:
    return sum(1 for k in kinds if k in ("reply_approve", "reply_reject"))


def generate(kinds: list[str], clients: list[ClientSpec], *, quotes: list[Thread],
             acks: list[Thread], rng: random.Random) -> list[Mail]:
    """One mail per kind.  QUOTES are used once each (APPROVE/REJECT); ACKS (and
    quotes) are what comments and auto-replies answer."""
    client_of = {c.email: client for client in clients for c in client.contacts}
    en = [c for c in clients if c.lang == "en"] or clients
    ja = [c for c in clients if c.lang == "ja"] or clients
    free_quotes = list(quotes)
    rng.shuffle(free_quotes)
    threads = acks + quotes
    mails = []
    for index, kind in enumerate(kinds):
        if kind in ("reply_approve", "reply_reject") and not free_quotes:
            kind = "reply_comment"
        if kind in ("reply_comment", "autoreply") and not threads:
            kind = "new_plain"
        match kind:
            case "new_plain":
                mails.append(new_plain(rng, rng.choice(clients)))
            case "new_ja":
                mails.append(new_ja(rng, rng.choice(ja)))
            case "new_html":
                mails.append(new_html(rng, rng.choice(clients)))
            case "new_attachment":
                mails.append(new_attachment(rng, rng.choice(en)))
            case "reply_approve" | "reply_reject":
                mails.append(reply_command(rng, kind, free_quotes.pop(), client_of))
            case "reply_comment":
                mails.append(reply_comment(rng, rng.choice(threads), client_of))
            case "autoreply":
                mails.append(autoreply(rng, rng.choice(threads), client_of))
            case "balance":
                mails.append(balance(rng, rng.choice(clients)))
            case "unknown":
                mails.append(unknown(rng, index))
    return mails


def describe(mails: list[Mail]) -> dict[str, int]:
    return dict(Counter(m.kind for m in mails))


def expected_verdicts(mails: list[Mail]) -> dict[str, int]:
    return dict(Counter(EXPECTED_VERDICT[m.kind] for m in mails))
