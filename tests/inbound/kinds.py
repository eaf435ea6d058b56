"""A table of inbound mail as mail programs, responders, lists and mailer
daemons write it (EN and JA), with what each one is: `person`, `auto_reply`,
`bounce`, `list`, `bulk`.  Read by the pure classifier's tests and, through
the whole pipeline, by the service tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.header import Header

OWN = "support@agency.example"


@dataclass(frozen=True)
class Kind:
    id: str
    raw: bytes
    expected: str          # person | auto_reply | bounce | list | bulk | complaint


def _digest(*values: str) -> str:
    return hashlib.sha256("\0".join(values).encode()).hexdigest()[:16]


def build(subject: str = "Re: [REQ-1] Banner", *, sender: str = "Tanaka <tanaka@acme.example>",
          headers: str = "", body: str = "Thank you.", charset: str = "utf-8") -> bytes:
    encoded = subject if subject.isascii() else Header(subject, "utf-8").encode()
    head = (f"From: {sender}\nTo: {OWN}\nSubject: {encoded}\n"
            "Date: Thu, 26 Nov 2026 10:00:00 +0900\n"
            f"Message-ID: <m-{_digest(subject, headers, sender, body, charset)}@acme.example>\n"
            f"{headers}MIME-Version: 1.0\nContent-Type: text/plain; charset={charset}\n"
            "Content-Transfer-Encoding: 8bit\n\n")
    return head.encode() + body.encode(charset)


_VACATION_SUBJECTS = [
    "Out of Office: Re: [REQ-1] Banner", "Out of office: [REQ-1] Banner", "OUT OF OFFICE",
    "Out of Office AutoReply: [REQ-1] Banner", "Automatic reply: Re: [REQ-1] Banner",
    "Autoreply: Re: [REQ-1] Banner", "Auto-Reply: [REQ-1] Banner", "AUTO: Tanaka is out",
    "Auto Response: Re: [REQ-1] Banner", "Away from my desk: Re: [REQ-1] Banner",
    "On vacation: Re: [REQ-1] Banner", "Vacation reply", "[Out of Office] Re: [REQ-1] Banner",
    "Re: [REQ-1] Banner [Auto-Reply]", "Abwesenheitsnotiz: Re: [REQ-1] Banner",
    "Réponse automatique : Re: [REQ-1] Banner",
    "自動応答: Re: [REQ-1] バナー", "自動返信: Re: [REQ-1] バナー", "【自動返信】Re: [REQ-1] バナー",
    "【自動応答】[REQ-1] バナー", "[自動返信] Re: [REQ-1] バナー", "不在: Re: [REQ-1] バナー",
    "【不在】Re: [REQ-1] バナー", "不在通知", "不在のお知らせ", "不在のご連絡（12月29日〜1月3日）",
    "自動返信メール", "自動応答メッセージ: Re: [REQ-1] バナー", "（自動送信）Re: [REQ-1] バナー",
    "休暇のお知らせ: Re: [REQ-1] バナー", "Re: [REQ-1] バナー【自動返信】",
]
_PERSON_SUBJECTS = [
    "Re: [REQ-1] Banner", "Out of office next week?", "Re: Out of office banner",
    "Our out of office hours page needs an update", "Question about automatic replies",
    "Re: [REQ-1] I will be on vacation from Monday", "Please set up an auto-reply for info@",
    "自動返信メールの設定について", "来週は不在です", "Re: [REQ-1] 不在時の対応について",
    "不在票の画像を差し替えたい", "お問い合わせフォームの自動返信を変更したい",
    "Re: [REQ-1] 休暇中の対応", "Absence calendar on the website", "Re: 配信エラーについて",
    "Vacation rental page: new photos", "auto parts catalogue page",
]

_LIST_HEADERS = [
    ("precedence-list", "Precedence: list\n"),
    ("precedence-bulk", "Precedence: bulk\n"),
    ("precedence-junk", "Precedence: junk\n"),
    ("list-id", "List-Id: Acme staff <staff.acme.example>\nList-Post: <mailto:staff@acme.example>\n"),
    ("mailman", "List-Id: <web.lists.acme.example>\nPrecedence: list\n"
                "Sender: web-bounces@lists.acme.example\n"),
    ("fml", "X-ML-Name: acme-web\nX-MLServer: fml [fml 4.0]\nPrecedence: bulk\n"),
    ("google-groups", "X-Original-From: tanaka@acme.example\nX-Google-Group-Id: 12345\n"
                      "Mailing-list: list web@acme.example; contact web+owners@acme.example\n"
                      "List-Id: <web.acme.example>\nPrecedence: list\n"),
    ("google-groups-encoded", "X-Original-From: =?UTF-8?B?55Sw5Lit?= <tanaka@acme.example>\n"
                         "X-Google-Group-Id: 12345\nList-Id: <web.acme.example>\n"),
]

_DSN = (
    f"From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\nTo: {OWN}\n"
    "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
    "--b\nContent-Type: text/plain\n\nI'm sorry to have to inform you.\n"
    "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
    "Final-Recipient: rfc822; x@acme.example\nAction: failed\nStatus: 5.1.1\n"
    "--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <ours@agency.example>\n--b--\n"
).encode()


def cases() -> list[Kind]:
    found: list[Kind] = []
    for n, subject in enumerate(_VACATION_SUBJECTS):
        found.append(Kind(f"vacation-subject-{n}", build(subject, body="I am away."),
                          "auto_reply"))
        found.append(Kind(f"vacation-subject-jis-{n}", build(
            subject, body="ただいま不在にしております。", charset="iso-2022-jp")
            if not subject.isascii() else build(subject, body="I am away.", charset="us-ascii"),
            "auto_reply"))
    for n, subject in enumerate(_PERSON_SUBJECTS):
        found.append(Kind(f"person-subject-{n}", build(subject), "person"))
        found.append(Kind(f"person-subject-jis-{n}", build(
            subject, body="よろしくお願いいたします。", charset="iso-2022-jp"), "person"))
    for name, headers in _LIST_HEADERS:
        found.append(Kind(f"list-{name}", build(headers=headers), "list"))
        found.append(Kind(f"list-{name}-ja", build("【web】トップページの修正", headers=headers,
                                                   body="お世話になっております。"), "list"))
    headers_auto = [
        ("auto-submitted", "Auto-Submitted: auto-replied\n"),
        ("auto-generated", "Auto-Submitted: auto-generated\n"),
        ("x-autoreply", "X-Autoreply: yes\n"),
        ("x-autorespond", "X-Autorespond: on\n"),
        ("precedence-auto-reply", "Precedence: auto_reply\n"),
        ("apple-vacation", "X-Apple-Action: VACATION\n"),
        ("exchange-rule-loop", "X-MS-Exchange-Inbox-Rules-Loop: tanaka@acme.example\n"),
        ("null-return-path", "Return-Path: <>\n"),
        ("vacation-list", "Precedence: bulk\n"),  # a responder stamps bulk; its subject tells
    ]
    for name, headers in headers_auto:
        subject = "Out of office: Re: [REQ-1] Banner" if name == "vacation-list" \
            else "Re: [REQ-1] Banner"
        found.append(Kind(f"auto-{name}", build(subject, headers=headers), "auto_reply"))
    found += [
        Kind("person-auto-submitted-no", build(headers="Auto-Submitted: no\n"), "person"),
        Kind("person-suppress-alone", build(headers="X-Auto-Response-Suppress: All\n"), "person"),
        Kind("postmaster-person", build("Question about our mail server",
                                        sender="postmaster@acme.example",
                                        body="Could you check the SPF record?"), "person"),
        Kind("postmaster-person-reply", build("Re: 配信エラーについて",
                                              sender="postmaster@acme.example",
                                              body="確認いたします。"), "person"),
        Kind("mailer-daemon-person", build("Hello", sender="mailer-daemon@acme.example",
                                           body="Just a test from our admin."), "person"),
        Kind("daemon-returned-mail", build("Returned mail: see transcript",
                                           sender="MAILER-DAEMON@mx.acme.example",
                                           body="User unknown"), "bounce"),
        Kind("dsn", _DSN, "bounce"),
        Kind("dsn-from-person-address", _DSN.replace(b"MAILER-DAEMON@mx", b"tanaka@"), "bounce"),
        Kind("postfix-text", build("Undelivered Mail Returned to Sender",
                                   sender="MAILER-DAEMON@mx.acme.example",
                                   body="This is the mail system at host mx.acme.example.\n\n"
                                        "I'm sorry to have to inform you that your message "
                                        "could not\nbe delivered to one or more recipients."),
             "bounce"),
        Kind("noreply", build("Your invoice", sender="no-reply@vendor.example"), "bulk"),
    ]
    return found


CASES = cases()
