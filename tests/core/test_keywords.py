"""Command detection: first word of the new text, or the subject alone."""

import pytest

from mailflow.core.keywords import Command, detect_command, strip_subject

CASES = [
    # (id, new_text, subject, expected)
    ("approve-first-word", "APPROVE\n\nThanks!", "Re: [REQ-12] Quote", Command.APPROVE),
    ("approve-lower-case", "approve, go ahead", "Re: [REQ-12] Quote", Command.APPROVE),
    ("approved-counts", "Approved.", "Re: [REQ-12] Quote", Command.APPROVE),
    ("full-width", "ＡＰＰＲＯＶＥ", "Re: [REQ-12] Quote", Command.APPROVE),
    ("reject", "Reject - too expensive", "Re: [REQ-12] Quote", Command.REJECT),
    ("balance", "balance?", "Hello", Command.BALANCE),
    ("subject-alone-approve", "", "Re: [REQ-12] APPROVE", Command.APPROVE),
    ("subject-fullwidth-prefix", "", "Ｒｅ：[REQ-3] 承認", Command.APPROVE),
    ("subject-japanese-prefix", "", "返信: [REQ-3] 却下", Command.REJECT),
    ("subject-balance", "", "BALANCE", Command.BALANCE),
    ("subject-with-more-words-is-not-command", "", "Re: please approve the banner", None),
    ("keyword-later-in-sentence", "I will approve tomorrow", "Re: [REQ-1] Quote", None),
    ("negated", "Do not approve yet", "Re: [REQ-1] Quote", None),
    ("no-keyword", "Thanks, looks good", "Re: [REQ-1] Quote", None),
    ("empty", "", "", None),
    ("both-in-first-line", "APPROVE or REJECT?", "Re: [REQ-1] Quote", Command.AMBIGUOUS),
    ("text-and-subject-disagree", "REJECT", "Re: [REQ-1] APPROVE", Command.AMBIGUOUS),
    ("text-and-subject-agree", "approve", "Re: [REQ-1] APPROVE", Command.APPROVE),
    ("decision-beats-balance", "APPROVE", "BALANCE", Command.APPROVE),
    ("reject-word-on-later-line-ignored", "APPROVE\nreject the old one", "Re: x", Command.APPROVE),
    ("ja-approve", "承認します。", "Re: [REQ-5] お見積り", Command.APPROVE),
    ("ja-approve-bare", "承認", "Re: [REQ-5] お見積り", Command.APPROVE),
    ("ja-polite", "承認いたします\nよろしくお願いします", "Re: x", Command.APPROVE),
    ("ja-disapprove-is-reject", "不承認です", "Re: x", Command.REJECT),
    ("ja-kyakka", "却下", "Re: x", Command.REJECT),
    ("ja-kyohi", "拒否します", "Re: x", Command.REJECT),
    ("ja-balance", "残高を教えてください", "", Command.BALANCE),
    ("ja-keyword-inside-word-not-command", "承認者に確認します", "Re: x", None),
    ("ja-not-at-start", "本件は承認します", "Re: x", None),
    ("ja-both", "承認、いや却下", "Re: x", Command.AMBIGUOUS),
    ("ja-fullwidth-space", "承認\u3000お願いします", "Re: x", Command.APPROVE),
    ("leading-punctuation", "**APPROVE**", "Re: x", Command.APPROVE),
]


@pytest.mark.parametrize(
    ("new_text", "subject", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_detect_command(new_text, subject, expected):
    assert detect_command(new_text, subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: RE: Fwd: [REQ-9] Approve", "approve"),
        ("返信: Ｒｅ： [REQ-9] 承認", "承認"),
        ("AW: [REQ-1042] Quote", "quote"),
        ("Plain subject", "plain subject"),
    ],
    ids=["english-prefixes", "japanese-prefixes", "german-aw", "no-prefix"],
)
def test_strip_subject(subject, expected):
    assert strip_subject(subject) == expected


def test_command_is_str_enum():
    assert Command.APPROVE == "approve"
