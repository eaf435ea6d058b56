"""Reply trimming: only the new text survives; a quoted keyword never does."""

import pytest

from mailflow.core.keywords import Command, detect_command
from mailflow.core.trim import trim_reply

OUR_QUOTE = "Reply APPROVE or REJECT to this message.\nQuote: 3 credits, due 2025-05-01."
QUOTED = "\n".join(f"> {line}" for line in OUR_QUOTE.splitlines())

CASES = [
    ("plain", "Hello there", "Hello there"),
    ("empty", "   \n\n", ""),
    (
        "on-wrote",
        f"APPROVE\n\nOn Mon, 3 Mar 2025 at 10:00, Support <support@example.com> wrote:\n> {OUR_QUOTE}",
        "APPROVE",
    ),
    (
        "on-wrote-wrapped",
        "Yes please\n\nOn Mon, Aug 19, 2013 at 2:36 AM, Support Desk <\nsupport@example.com> wrote:\n\n> quote",
        "Yes please",
    ),
    (
        "original-message",
        "Rejected, sorry.\n\n-----Original Message-----\nFrom: Support\nSent: Monday\n\n"
        + OUR_QUOTE,
        "Rejected, sorry.",
    ),
    (
        "outlook-header-block",
        "Fine by me\n\n________________________________\nFrom: Support <support@example.com>\n"
        "Sent: Monday, March 3, 2025 10:00\nTo: Client\nSubject: [REQ-1] Quote\n\n" + OUR_QUOTE,
        "Fine by me",
    ),
    (
        "japanese-header-block",
        "承認します。\n\n差出人: サポート <support@example.com>\n送信日時: 2025年3月3日 10:00\n"
        "宛先: client@example.jp\n件名: [REQ-1] お見積り\n\n" + OUR_QUOTE,
        "承認します。",
    ),
    (
        "japanese-wrote",
        "却下でお願いします\n\n2025年3月3日(月) 10:00 サポート <support@example.com>:\n> "
        + OUR_QUOTE,
        "却下でお願いします",
    ),
    (
        "japanese-san-wrote",
        "承認\n\nサポートさんは書きました:\n> " + OUR_QUOTE,
        "承認",
    ),
    (
        "german-am-schrieb",
        "Passt.\n\nAm 03.03.2025 um 10:00 schrieb Support <support@example.com>:\n> " + OUR_QUOTE,
        "Passt.",
    ),
    (
        "french-le-a-ecrit",
        "D'accord\n\nLe 3 mars 2025 à 10:00, Support <support@example.com> a écrit :\n> x",
        "D'accord",
    ),
    ("sig-delimiter", "APPROVE\n\n-- \nJane Doe\nACME Inc.", "APPROVE"),
    ("sent-from-iphone", "APPROVE\n\nSent from my iPhone", "APPROVE"),
    ("japanese-mobile-footer", "承認\n\niPhoneから送信", "承認"),
    (
        "forwarded",
        "See below\n\n---------- Forwarded message ---------\nFrom: A <a@example.com>\n"
        "Date: Mon\nSubject: x\nTo: <b@example.com>\n\nbody",
        "See below",
    ),
    ("quote-only", QUOTED, ""),
    ("interleaved-quotes-dropped", "> question?\nanswer\n> other?\nsecond", "answer\nsecond"),
    (
        "bottom-posting",
        "On Mon, 3 Mar 2025, Support <support@example.com> wrote:\n" + QUOTED + "\n\nAPPROVE",
        "APPROVE",
    ),
    ("crlf", "APPROVE\r\n\r\n> REJECT\r\n", "APPROVE"),
    ("text-with-on-is-kept", "On Monday I will check.\nThanks", "On Monday I will check.\nThanks"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_trim_reply(text, expected):
    assert trim_reply(text) == expected


@pytest.mark.parametrize(
    "reply",
    [
        f"Thanks\n\nOn Mon, Support <support@example.com> wrote:\n{QUOTED}",
        QUOTED,
        f"-----Original Message-----\n{OUR_QUOTE}",
        f"Thanks\n\n-----Original Message-----\nFrom: Support\nSent: Mon\nTo: c\n\n{OUR_QUOTE}",
        f"ok\n\n差出人: サポート\n送信日時: 2025/03/03\n件名: 見積\n\n{OUR_QUOTE}",
        f"From: Support <support@example.com>\nSent: Mon\nTo: c\nSubject: Quote\n\n{OUR_QUOTE}",
    ],
    ids=["on-wrote", "quote-only", "separator-only", "outlook", "japanese-outlook", "headers-only"],
)
def test_quoted_keywords_never_become_commands(reply):
    trimmed = trim_reply(reply)
    assert "APPROVE" not in trimmed and "REJECT" not in trimmed
    assert detect_command(trimmed, "Re: [REQ-1] Quote") is None


def test_reply_quoting_both_keywords_approves_once():
    reply = f"approve\n\nOn Mon, Support <support@example.com> wrote:\n{QUOTED}"
    assert detect_command(trim_reply(reply), "Re: [REQ-1] Quote") is Command.APPROVE


LAYOUTS = [
    ("greeting-above-answer-below",
     f"Hi,\n\nOn Mon, 3 Mar 2025, Support <support@example.com> wrote:\n{QUOTED}\n\nAPPROVE\n",
     "Hi,\n\nAPPROVE"),
    ("greeting-above-answer-right-under-quote",
     f"お世話になっております。\n\n2025年3月3日(月) 10:00 サポート <support@example.com>:\n{QUOTED}\n"
     "承認いたします。", "お世話になっております。\n\n承認いたします。"),
    ("answer-above-is-top-posting",
     f"APPROVE\n\nOn Mon, 3 Mar 2025, Support <support@example.com> wrote:\n{QUOTED}\n\nREJECT",
     "APPROVE"),
    ("japanese-iphone-attribution",
     "承認します\n\niPhoneから送信\n\n2026/11/30 10:00、サポート <support@example.com>のメール:\n\n> 承認 却下",
     "承認します"),
    ("japanese-signature-between-rules",
     "承認します。\n\n━━━━━━━━━━━━\n株式会社アクメ\n田中 太郎\n〒100-0001 東京都千代田区\n"
     "TEL: 03-1234-5678\n━━━━━━━━━━━━\n\n差出人: サポート <support@example.com>\n"
     "送信日時: 2026年11月30日 10:00\n宛先: tanaka@acme.example\n件名: [REQ-1] お見積り\n\n"
     "作業を進める場合は「承認」、見送る場合は「却下」とご返信ください。",
     "承認します。"),
    ("japanese-signature-full-width-equals",
     "却下でお願いします\n\n＝＝＝＝＝＝＝＝\n株式会社アクメ 田中\nTEL 03-1234-5678\n＝＝＝＝＝＝＝＝",
     "却下でお願いします"),
    ("rule-without-signature-stays", "Approved.\n\n----\nsee the attached mockup\n----\n",
     "Approved.\n\n----\nsee the attached mockup"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in LAYOUTS], ids=[c[0] for c in LAYOUTS])
def test_trim_client_layouts(text, expected):
    assert trim_reply(text) == expected
