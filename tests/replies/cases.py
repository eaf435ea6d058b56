"""The reply table: what clients write to a quote, and what must happen.

Each entry is the client's new text and the expected outcome:
``approve`` / ``reject`` / ``balance`` / ``buy N`` (N as written) /
``ambiguous`` (mentions a decision but is not a clear one: the client is asked,
nothing changes) / ``none`` (a comment: nothing to decide).

A *clear decision* is an entry expected to approve or reject; a *wrong action*
is any approval, rejection or purchase the expected outcome does not name.

The texts are grouped by language; each is put into a quote layout, a
signature and an encoding by :func:`all_cases` (round-robin, so every layout
and encoding meets every kind of text), and a sweep adds every layout with
every encoding its language allows for a few plain decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import cycle

from tests.replies.generator import ENCODINGS, HTML_LAYOUTS, LAYOUTS

EN: list[tuple[str, str]] = [
    # --- clear approvals
    ("approve", "APPROVE"),
    ("approve", "Approve"),
    ("approve", "approved"),
    ("approve", "Approved."),
    ("approve", "APPROVED!"),
    ("approve", "Approve, thanks."),
    ("approve", "Hi,\n\nAPPROVE\n\nThanks,\nJohn"),
    ("approve", "Hello team,\n\nApproved. Please go ahead.\n\nBest regards,\nEmily"),
    ("approve", "Dear Support,\n\nWe approve the quote.\n\nKind regards,\nKen Sato"),
    ("approve", "I approve this quote."),
    ("approve", "We approve."),
    ("approve", "Yes, approved - thank you!"),
    ("approve", "OK, approved."),
    ("approve", "Approved, please proceed."),
    ("approve", "Looks good. Approved."),
    ("approve", "Hi Sato-san,\n\nThanks for the quick quote. I approve.\n\nCheers,\nMike"),
    ("approve", "APPROVE - please start as soon as you can."),
    ("approve", "Thank you for the quote.\nApproved.\n\nRegards,\nTaro Tanaka\nAcme Inc."),
    ("approve", "approve"),
    ("approve", "Good morning,\n\nThis quote is approved.\n\nThanks"),
    ("approve", "Approved on our side. Thanks!"),
    ("approve", "We're happy to approve the quote. Thank you."),
    ("approve", "I'd like to approve this. Thanks!"),
    ("approve", "Approve. Thank you for the fast turnaround."),
    ("approve", "Sounds good, approved."),
    ("approve", "All good - APPROVE."),
    ("approve", "Approved. Could you send the invoice to our accounting address?"),
    ("approve", "APPROVE\n\nP.S. The new banner text is attached."),
    ("approve", "Approved! Looking forward to seeing the new page."),
    ("approve", "Thanks, we approve. When do you think it will be done?"),
    ("approve", "Hereby approved."),
    ("approve", "Approved as quoted."),
    ("approve", "Approve the quote please."),
    ("approve", "Yes - approve."),
    ("approve", "Hi there,\n\nAPPROVE. Thanks for your help!\n\nAnna"),
    ("approve", "Hello,\n\nWe approve this quote. Please go ahead."),
    ("approve", "OK, approved. Please proceed."),
    ("approve", "Approved, thanks!"),
    ("approve", "We approve this. Our finance team will pay the invoice."),
    ("approve", "Approve\n\nThanks,\nK"),
    # --- clear rejections
    ("reject", "REJECT"),
    ("reject", "Reject"),
    ("reject", "Rejected."),
    ("reject", "We reject the quote."),
    ("reject", "I reject this quote, thanks."),
    ("reject", "Hi,\n\nREJECT, it's over our budget this month.\n\nThanks, Anna"),
    ("reject", "We decline, thank you."),
    ("reject", "Declined."),
    ("reject", "Sorry, we have to decline this one."),
    ("reject", "We'll pass this time. Thanks anyway."),
    ("reject", "Reject - we found another solution."),
    ("reject", "No thanks. REJECT."),
    ("reject", "Unfortunately we have to reject this quote."),
    ("reject", "Dear team,\n\nThank you, but we decline.\n\nBest,\nLisa"),
    ("reject", "REJECTED - too expensive for us right now."),
    ("reject", "We'll pass."),
    ("reject", "Reject. Please send a cheaper option instead."),
    ("reject", "I decline the quote."),
    ("reject", "We won't go ahead, please reject."),
    ("reject", "Hello,\n\nAfter some discussion we decline this quote.\n\nRegards,\nTom"),
    # --- mentions a decision, not a clear one: ask
    ("ambiguous", "APPROVE?"),
    ("ambiguous", "Approve or reject? Not sure yet."),
    ("ambiguous", "I can't approve this yet."),
    ("ambiguous", "We don't approve."),
    ("ambiguous", "Please don't approve anything until I confirm."),
    ("ambiguous", "Do not approve - I'm checking with my boss."),
    ("ambiguous", "I will approve tomorrow."),
    ("ambiguous", "We'll approve it next week after our meeting."),
    ("ambiguous", "I would approve if you could lower it to 1 credit."),
    ("ambiguous", "Approve only if the work is done by Friday."),
    ("ambiguous", "We'll approve once we get budget."),
    ("ambiguous", "Our manager needs to approve this first."),
    ("ambiguous", "My boss will approve it later today."),
    ("ambiguous", "I need approval from finance before I can approve."),
    ("ambiguous", "Approved by our director."),
    ("ambiguous", "APPROVE\nREJECT"),
    ("ambiguous", "Approve. Actually no, reject."),
    ("ambiguous", "Approve.\n\nWait - reject please, sorry."),
    ("ambiguous", "Reject... actually, approve it."),
    ("ambiguous", "Is it possible to approve only part of the quote?"),
    ("ambiguous", "Can I approve this later?"),
    ("ambiguous", "Should we approve or reject?"),
    ("ambiguous", "If we approve, when will it be done?"),
    ("ambiguous", "We might approve it."),
    ("ambiguous", "Probably approve, let me check."),
    ("ambiguous", "Not approved."),
    ("ambiguous", "I'm unable to approve at this time."),
    ("ambiguous", "Never mind, don't approve."),
    ("ambiguous", "Please go ahead."),
    ("ambiguous", "Go ahead."),
    ("ambiguous", "Let's do it!"),
    ("ambiguous", "Please proceed with the work."),
    ("ambiguous", "Approve, but change the color to blue first."),
    ("ambiguous", "Approved, but only the first banner."),
    ("ambiguous", "Approve pending confirmation from our legal team."),
    ("ambiguous", "We'd approve, provided the due date can move to Dec 10."),
    ("ambiguous", "Reject? Approve? I'm confused by the price."),
    ("ambiguous", "We approved a similar quote last month - is this the same?"),
    ("ambiguous", "Approve? What exactly does this include?"),
    ("ambiguous", "Approve.\nWait, reject please."),
    ("ambiguous", "I approve. Hold on, let me check with my manager first."),
    ("ambiguous", "Please approve."),
    ("ambiguous", "Approve it when you're ready."),
    ("ambiguous", "I'll approve after I see the mockup."),
    ("ambiguous", "We'd like to approve, but the budget isn't confirmed yet."),
    ("ambiguous", "Approve - no wait, I need to ask my boss."),
    # --- nothing to decide
    ("none", "Thanks, looks good."),
    ("none", "Thank you. I'll check and get back to you."),
    ("none", "Could you send me a mockup first?"),
    ("none", "What does this include exactly?"),
    ("none", "Can you make the banner bigger?"),
    ("none", "Received, thanks."),
    ("none", "Please call me tomorrow."),
    ("none", "I'll pass it on to our designer."),
    ("none", "Could you balance the layout a bit better?"),
    ("none", "Let me check with my manager first."),
    ("none", "We bought the domain last week."),
    ("none", "Here is the logo file you asked for."),
    ("none", "Sorry for the late reply. I'm still reviewing."),
    ("none", "Thanks!"),
    ("none", "Hi,\n\nJust checking: is the due date the 3rd?\n\nThanks"),
    # --- balance
    ("balance", "BALANCE"),
    ("balance", "balance"),
    ("balance", "What is my balance?"),
    ("balance", "Could you send me our current balance?"),
    ("balance", "Balance please."),
    ("balance", "How many credits do we have left?"),
    ("balance", "Hi,\n\nWhat's our credit balance?\n\nThanks, Ken"),
    ("balance", "Check balance"),
    ("none", "I don't need the balance right now."),
    ("none", "If the balance is low, tell me."),
    ("none", "Please make the header smaller. Also, what's my balance?"),
    # --- purchases
    ("buy 5", "BUY 5"),
    ("buy 3", "buy 3 credits"),
    ("buy 10", "I'd like to buy 10 credits."),
    ("buy 5", "Hi,\n\nWe want to buy 5 more credits.\n\nThanks"),
    ("buy 0", "BUY 0"),
    ("buy -2", "BUY -2"),
    ("buy 1.5", "buy 1.5"),
    ("buy 1000", "Buy 1000 credits"),
    ("none", "Can we buy 5 credits?"),
    ("none", "Don't buy credits for us."),
    ("none", "If needed, we'll buy 5 credits."),
]

JA: list[tuple[str, str]] = [
    # --- clear approvals
    ("approve", "承認"),
    ("approve", "承認します"),
    ("approve", "承認します。"),
    ("approve", "承認いたします。"),
    ("approve", "承認致します。"),
    ("approve", "承認です。"),
    ("approve", "承認でお願いします。"),
    ("approve", "承認でお願いいたします。"),
    ("approve", "「承認」でお願いいたします。"),
    ("approve", "お世話になっております。\n承認いたします。\nよろしくお願いいたします。"),
    ("approve", "いつもお世話になっております。\n株式会社アクメの田中です。\n\nお見積りの件、承認いたします。\n"
                "引き続きよろしくお願いいたします。"),
    ("approve", "株式会社アクメの田中です。\n\nお見積りの件、承認いたします。"),
    ("approve", "お見積りありがとうございます。\n承認します。"),
    ("approve", "お疲れ様です。承認します。"),
    ("approve", "本件、承認いたします。"),
    ("approve", "上記お見積りの内容で承認いたします。"),
    ("approve", "内容を確認しましたので、承認いたします。"),
    ("approve", "社内で検討した結果、承認することになりました。"),
    ("approve", "承認させていただきます。"),
    ("approve", "ご提示の内容で承認させていただきます。"),
    ("approve", "はい、承認します。"),
    ("approve", "ＯＫです。承認します。"),
    ("approve", "承認いたします。作業を進めてください。"),
    ("approve", "承認しました。よろしくお願いします。"),
    ("approve", "承認いたしました。"),
    ("approve", "承認とさせていただきます。"),
    ("approve", "承認で大丈夫です。"),
    ("approve", "承認で問題ございません。"),
    ("approve", "お見積りを承認いたします。納期もこちらで問題ありません。"),
    ("approve", "ＡＰＰＲＯＶＥ"),
    ("approve", "承認　お願いします"),
    ("approve", "承認いたします。\n田中"),
    ("approve", "承認したいと思います。"),
    ("approve", "承認させて頂きます。"),
    ("approve", "お世話になります。\n\n承認します。\n\n以上、よろしくお願いいたします。"),
    ("approve", "大変お世話になっております。\nアクメの佐藤でございます。\n\nお見積りの件、承認いたします。\n"
                "何卒よろしくお願い申し上げます。"),
    ("approve", "承認いたします。作業開始はいつ頃になりますか？"),
    ("approve", "承認します！"),
    ("approve", "承認いたします。完了しましたらご連絡ください。"),
    ("approve", "ご連絡ありがとうございます。\n上記の件、承認します。"),
    # --- clear rejections
    ("reject", "却下"),
    ("reject", "却下します。"),
    ("reject", "却下でお願いします。"),
    ("reject", "却下いたします。"),
    ("reject", "不承認です。"),
    ("reject", "不承認とさせていただきます。"),
    ("reject", "今回は見送ります。"),
    ("reject", "今回は見送らせていただきます。"),
    ("reject", "誠に恐縮ですが、今回は見送らせていただきます。"),
    ("reject", "お見積りありがとうございます。検討しましたが、今回は見送りとさせていただきます。"),
    ("reject", "お世話になっております。\n今回はお断りいたします。\nよろしくお願いいたします。"),
    ("reject", "拒否します。"),
    ("reject", "辞退いたします。"),
    ("reject", "大変申し訳ございませんが、今回は見送らせてください。"),
    ("reject", "却下でお願いいたします。予算の都合です。"),
    ("reject", "社内で検討した結果、見送ることになりました。"),
    ("reject", "見送りでお願いします。"),
    ("reject", "ＲＥＪＥＣＴ"),
    ("reject", "お見積りの件、却下とさせていただきます。"),
    ("reject", "今回は見送りといたします。"),
    # --- mentions a decision, not a clear one: ask
    ("ambiguous", "承認できません。"),
    ("ambiguous", "承認できかねます。"),
    ("ambiguous", "承認は致しかねます。"),
    ("ambiguous", "承認しないでください。"),
    ("ambiguous", "まだ承認しないでください。"),
    ("ambiguous", "承認でよろしいでしょうか？"),
    ("ambiguous", "承認してもいいですか？"),
    ("ambiguous", "承認した場合、いつ完了しますか？"),
    ("ambiguous", "承認？"),
    ("ambiguous", "承認しますか？"),
    ("ambiguous", "来週承認します。"),
    ("ambiguous", "明日承認いたします。"),
    ("ambiguous", "後ほど承認いたします。"),
    ("ambiguous", "改めて承認のご連絡をいたします。"),
    ("ambiguous", "承認するかどうか検討します。"),
    ("ambiguous", "社内で確認してから承認します。"),
    ("ambiguous", "上長の承認が必要です。"),
    ("ambiguous", "上司に確認してから承認します。"),
    ("ambiguous", "部長の承認待ちです。"),
    ("ambiguous", "稟議が通り次第、承認いたします。"),
    ("ambiguous", "予算が確保できれば承認します。"),
    ("ambiguous", "納期が12月10日であれば承認します。"),
    ("ambiguous", "承認する前に、デザイン案を見せていただけますか。"),
    ("ambiguous", "承認します。やはり見送ります。"),
    ("ambiguous", "承認いたします。\n失礼しました、却下でお願いします。"),
    ("ambiguous", "承認か却下か迷っています。"),
    ("ambiguous", "承認と却下のどちらを選べばよいでしょうか。"),
    ("ambiguous", "一部のみ承認します。"),
    ("ambiguous", "バナー1点のみ承認します。"),
    ("ambiguous", "承認いたしますが、納期を1週間延ばしていただけますか。"),
    ("ambiguous", "進めてください。"),
    ("ambiguous", "了承しました。"),
    ("ambiguous", "お願いします。進めてください。"),
    ("ambiguous", "検討中です。承認は少々お待ちください。"),
    ("ambiguous", "仮承認とさせてください。"),
    ("ambiguous", "承認したいのですが、予算が足りません。"),
    ("ambiguous", "承認しません。"),
    ("ambiguous", "承認はまだです。"),
    ("ambiguous", "承認します。ただし、納期は12月10日でお願いします。"),
    ("ambiguous", "上長が承認しました。"),
    ("ambiguous", "却下はしないでください。"),
    ("ambiguous", "見送るかもしれません。"),
    # --- nothing to decide
    ("none", "ご連絡ありがとうございます。確認いたします。"),
    ("none", "了解しました。"),
    ("none", "お見積りありがとうございます。社内で検討いたします。"),
    ("none", "デザイン案を先に見せていただけますか？"),
    ("none", "バナーのサイズを変更できますか？"),
    ("none", "承知いたしました。"),
    ("none", "いつ頃完了しますか？"),
    ("none", "見積書をPDFでいただけますか？"),
    ("none", "ロゴデータを添付します。"),
    ("none", "お世話になっております。\n明日お電話してもよろしいでしょうか。"),
    ("none", "ありがとうございます。"),
    # --- balance
    ("balance", "残高"),
    ("balance", "残高を教えてください。"),
    ("balance", "現在の残高はいくつですか？"),
    ("balance", "クレジット残高を確認したいです。"),
    ("balance", "残高照会をお願いします。"),
    ("balance", "お世話になっております。\n残高を確認させてください。\nよろしくお願いいたします。"),
    ("none", "残高は不要です。"),
    ("none", "残高が少なければ教えてください。"),
    # --- purchases
    ("buy 5", "5クレジット購入します。"),
    ("buy 3", "購入 3"),
    ("buy 10", "クレジットを10購入したいです。"),
    ("buy 5", "追加で5クレジット購入したいです。"),
    ("buy 5", "５クレジット購入"),
    ("buy 2", "お世話になっております。\n2クレジット購入いたします。\nよろしくお願いいたします。"),
    ("none", "購入できますか？"),
    ("none", "5クレジット購入するか検討中です。"),
]

MIXED: list[tuple[str, str]] = [
    ("approve", "承認します。Thanks!"),
    ("approve", "Approve します"),
    ("approve", "APPROVE\nよろしくお願いします"),
    ("approve", "お世話になっております。\nAPPROVE\n田中"),
    ("reject", "REJECTでお願いします。"),
    ("reject", "却下 / REJECT"),
    ("approve", "Hi, 承認します。"),
    ("approve", "承認 (approve)"),
    ("balance", "BALANCE お願いします"),
    ("ambiguous", "承認しますが、can you finish by Friday?"),
    ("ambiguous", "APPROVE？"),
    ("ambiguous", "APPROVEできません"),
    ("ambiguous", "Approve... 来週まで待ってください"),
    ("ambiguous", "承認 or 却下?"),
    ("none", "Thank you. 確認します。"),
    ("buy 5", "BUY 5 お願いします"),
]

#: Plain decisions put into every layout and every encoding their language allows.
SWEEP = {
    "en": [("approve", "APPROVE"), ("reject", "Rejected, thanks."),
           ("ambiguous", "I can't approve this yet."), ("none", "Thanks, received.")],
    "ja": [("approve", "お世話になっております。\n承認いたします。\nよろしくお願いいたします。"),
           ("reject", "今回は見送らせていただきます。"), ("ambiguous", "承認できかねます。"),
           ("none", "ご連絡ありがとうございます。")],
}


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    expected: str          # approve / reject / balance / buy N / ambiguous / none
    lang: str              # en / ja / mixed (the quote answered is en or ja)
    layout: str
    encoding: str
    signature: str = "none"
    subject: str | None = None

    @property
    def quote_lang(self) -> str:
        return "en" if self.lang == "en" else "ja"

    @property
    def clear_decision(self) -> bool:
        return self.expected in ("approve", "reject")


_EN_LAYOUTS = [name for name in LAYOUTS if "ja" not in name]
_JA_LAYOUTS = [name for name in LAYOUTS if "ja" in name or name in (
    "none", "gmail", "outlook", "outlook-html", "bottom", "bottom-after-greeting", "gmail-html")]
_EN_SIGNATURES = ["none", "dash-dash", "iphone", "none", "name-only"]
_JA_SIGNATURES = ["none", "ja-rules", "ja-equals", "ja-dashes", "ja-iphone", "none"]


def _encodings(lang: str, layout: str) -> list[str]:
    if layout in HTML_LAYOUTS:
        return ["utf-8-qp", "utf-8-base64"] if lang == "en" else ["utf-8-qp", "shift_jis"]
    return list(ENCODINGS) if lang != "en" else ["utf-8", "utf-8-qp", "utf-8-base64",
                                                "iso-2022-jp"]


def _signature_fits(text: str, layout: str, signature: str) -> bool:
    """Mobile footers belong under a top-posted answer, not in a bottom-post or HTML."""
    return signature == "none" or layout not in (*HTML_LAYOUTS, "bottom-after-greeting")


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for lang, table, layouts, signatures in (("en", EN, _EN_LAYOUTS, _EN_SIGNATURES),
                                             ("ja", JA, _JA_LAYOUTS, _JA_SIGNATURES),
                                             ("mixed", MIXED, _JA_LAYOUTS, _JA_SIGNATURES)):
        layout_cycle, signature_cycle = cycle(layouts), cycle(signatures)
        encoding_turn = 0
        for n, (expected, text) in enumerate(table, 1):
            layout, signature = next(layout_cycle), next(signature_cycle)
            if not _signature_fits(text, layout, signature):
                signature = "none"
            encodings = _encodings(lang, layout)
            encoding = encodings[encoding_turn % len(encodings)]
            encoding_turn += 1
            cases.append(Case(f"{lang}-{n:03d}-{layout}-{encoding}", text, expected, lang,
                              layout, encoding, signature))
    for lang, texts in SWEEP.items():
        layouts = _EN_LAYOUTS if lang == "en" else _JA_LAYOUTS
        for layout in layouts:
            encodings = _encodings(lang, layout)
            for n, (expected, text) in enumerate(texts):
                encoding = encodings[n % len(encodings)]
                cases.append(Case(f"sweep-{lang}-{layout}-{expected}-{encoding}", text, expected,
                                  lang, layout, encoding))
    cases += [
        Case("subject-approve-empty-body", "", "approve", "en", "gmail", "utf-8",
             subject="Re: [REQ-3] APPROVE"),
        Case("subject-ja-approve-empty-body", "", "approve", "ja", "gmail-ja", "iso-2022-jp",
             subject="Re: [REQ-4] 承認"),
        Case("subject-approve-body-reject", "REJECT", "ambiguous", "en", "gmail", "utf-8",
             subject="Re: [REQ-3] APPROVE"),
        Case("subject-approve-body-hedge", "Let me check with my manager first.", "ambiguous",
             "en", "gmail", "utf-8", subject="Re: [REQ-3] APPROVE"),
        Case("quote-only-en", "", "none", "en", "gmail", "utf-8"),
        Case("quote-only-ja", "", "none", "ja", "gmail-ja", "iso-2022-jp"),
    ]
    return cases


def outcome_of(command: str | None, count_text: str | None = None) -> str:
    """A reading's command written like an expected outcome."""
    if command is None:
        return "none"
    if command == "buy":
        return f"buy {count_text}"
    return str(command)


def is_wrong_action(expected: str, got: str) -> bool:
    """An approval, rejection or purchase the client did not clearly state."""
    acted = got in ("approve", "reject") or got.startswith("buy")
    return acted and got != expected
