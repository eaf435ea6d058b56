"""The decision reader: each rule with its own table, then whole replies."""

from __future__ import annotations

import pytest

from mailflow.core.decisions import (
    CONDITION,
    DEFERRAL,
    NEGATION,
    QUESTION,
    RETRACTION,
    SOMEONE_ELSE,
    Command,
    read_reply,
    read_sentence,
)
from mailflow.core.sentences import split_sentences

A, R, B, Y, Q = Command.APPROVE, Command.REJECT, Command.BALANCE, Command.BUY, Command.AMBIGUOUS


def ids(cases):
    return [c[0] for c in cases]


# --- sentences -------------------------------------------------------------------------

SPLITS = [
    ("terminators-ja", "承認します。よろしくお願いします！", ["承認します。", "よろしくお願いします!"]),
    ("terminators-en", "Approve. Thanks!", ["Approve.", "Thanks!"]),
    ("line-breaks", "Hi,\n\nAPPROVE\nREJECT", ["Hi,", "APPROVE", "REJECT"]),
    ("decimal-stays", "BUY 1.5 credits.", ["BUY 1.5 credits."]),
    ("full-width-question", "承認？", ["承認?"]),
    ("wrapped-lower-case-joins", "We approve\nif you finish by Friday",
     ["We approve if you finish by Friday"]),
    ("upper-case-line-is-new", "Approved\nWe start Monday", ["Approved", "We start Monday"]),
    ("japanese-particle-joins", "お見積りの件は\n承認いたします", ["お見積りの件は承認いたします"]),
    ("comma-joins", "Hi team,\nApproved", ["Hi team, Approved"]),
    ("blank-line-ends", "We approve,\n\nthanks", ["We approve,", "thanks"]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in SPLITS], ids=ids(SPLITS))
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


# --- the rules, one table each (sentence already case-folded and NFKC) -----------------

RULE_CASES = {
    NEGATION: [
        ("ja-dekimasen", "承認できません", True), ("ja-dekikanemasu", "承認できかねます", True),
        ("ja-itashikanemasu", "承認致しかねます", True), ("ja-shinaide", "承認しないでください", True),
        ("en-not", "we do not approve", True), ("en-dont", "don't approve", True),
        ("en-never", "never approve", True), ("en-cant", "we can't approve this", True),
        ("en-cannot", "i cannot approve", True), ("en-wont", "we won't approve", True),
        ("en-unable", "unable to approve", True), ("en-no-longer", "no longer approve", True),
        ("en-plain", "approved, thanks", False), ("ja-plain", "承認いたします", False),
    ],
    QUESTION: [
        ("ascii", "approve?", True), ("full-width-normalised", "承認?", True),
        ("ja-ka", "承認しますか", True), ("ja-deshouka", "承認でよろしいでしょうか", True),
        ("ja-masuka", "承認できますか", True), ("en-could-you", "could you approve it", True),
        ("en-is-it", "is it approved", True), ("statement", "i approve", False),
        ("ja-statement", "承認します", False),
    ],
    CONDITION: [
        ("if", "i would approve if the price were lower", True), ("unless", "approve unless", True),
        ("provided", "approved provided you finish", True), ("would", "we would approve", True),
        ("ja-mae", "承認する前に確認させてください", True), ("ja-baai", "承認した場合", True),
        ("ja-nara", "承認するなら", True), ("ja-tara", "承認したら", True),
        ("ja-deareba", "問題なしであれば承認", True), ("plain", "approved", False),
        ("ja-plain", "承認いたします", False),
    ],
    DEFERRAL: [
        ("tomorrow", "i will approve tomorrow", True), ("later", "approve later", True),
        ("next-week", "approve next week", True), ("after", "approve after the meeting", True),
        ("ja-raishu", "来週承認します", True), ("ja-ashita", "明日承認します", True),
        ("ja-nochihodo", "後ほど承認します", True), ("ja-aratamete", "改めて承認します", True),
        ("ja-kentou", "承認を検討します", True), ("ja-shanai", "社内で確認します", True),
        ("ja-past-consideration-is-not", "社内で検討した結果、承認いたします", False),
        ("plain", "approved", False),
    ],
    SOMEONE_ELSE: [
        ("ja-jouchou", "上長の承認が必要です", True), ("ja-joushi", "上司に確認して承認します", True),
        ("ja-hitsuyou", "承認が必要です", True), ("our-manager", "our manager will approve", True),
        ("approval-from", "we need approval from finance", True),
        ("approved-by", "approved by our ceo", True), ("plain", "we approve", False),
    ],
    RETRACTION: [
        ("wait", "wait, reject please", True), ("actually", "actually, reject", True),
        ("ja-yahari", "やはり見送ります", True), ("ja-torikeshi", "先ほどの承認を取り消します", True),
        ("plain", "reject", False),
    ],
}
RULE_TABLE = [(f"{rule.name}-{case}", rule, text, fires)
              for rule, cases in RULE_CASES.items() for case, text, fires in cases]


@pytest.mark.parametrize(("rule", "sentence", "fires"), [c[1:] for c in RULE_TABLE],
                         ids=ids(RULE_TABLE))
def test_rule_fires(rule, sentence, fires):
    assert rule.fires(sentence) is fires


COURTESY = [
    ("ja-greeting", "お世話になっております。", ("greeting",)),
    ("ja-greeting-itsumo", "いつもお世話になっております。", ("greeting",)),
    ("ja-closing", "よろしくお願いいたします。", ("closing",)),
    ("ja-self-introduction", "株式会社アクメの田中です。", ("greeting",)),
    ("en-hi", "Hi team,", ("greeting",)),
    ("en-dear", "Dear Support,", ("greeting",)),
    ("en-thanks", "Thanks!", ("closing",)),
    ("en-best-regards", "Best regards,", ("closing",)),
    ("en-kind-regards", "Kind regards, Taro", ("closing",)),
]


@pytest.mark.parametrize(("sentence", "fired"), [c[1:] for c in COURTESY], ids=ids(COURTESY))
def test_greetings_and_closings_carry_nothing(sentence, fired):
    reading = read_sentence(sentence)
    assert reading.courtesy == fired and reading.mentions == () and not reading.content


def test_a_self_introduction_never_eats_a_keyword():
    reading = read_sentence("お見積りの承認です。")
    assert [m.kind for m in reading.mentions] == [A] and reading.mentions[0].clear


# --- whole replies ------------------------------------------------------------------------

SUBJECT = "Re: [REQ-3] Quote: Replace banner"
REPLIES = [
    # wrong actions seen in the field (issue 8): never acted on
    ("ja-cannot", "承認できません。", Q),
    ("ja-cannot-kaneru", "承認できかねます。", Q),
    ("en-question", "APPROVE?", Q),
    ("en-question-then-question", "Approve? What exactly does this include?", Q),
    ("both-on-two-lines", "APPROVE\nREJECT", Q),
    ("retraction", "Approve.\nWait, reject please.", Q),
    ("ja-retraction", "承認します。やはり見送ります。", Q),
    # missed approvals seen in the field: recognised
    ("ja-greeting-and-closing", "お世話になっております。\n承認いたします。\nよろしくお願いいたします。", A),
    ("ja-self-introduction", "株式会社アクメの田中です。\n\nお見積りの件、承認いたします。", A),
    ("en-hi-approved-thanks", "Hi team,\n\nApproved, thanks!", A),
    ("en-we-approve-go-ahead", "Hello,\n\nWe approve this quote. Please go ahead.", A),
    ("en-i-approve", "I approve.", A),
    ("en-ok-approved-proceed", "OK, approved. Please proceed.", A),
    ("en-dear-thank-you", "Dear Support,\n\nThank you for the quote. APPROVE.", A),
    # the other rules
    ("ja-someone-else", "上長の承認が必要です。", Q),
    ("en-someone-else", "Our manager will approve it.", Q),
    ("en-condition", "I would approve if the price were lower.", Q),
    ("ja-deferral", "来週承認します。", Q),
    ("ja-conditional-question", "承認した場合、いつ完了しますか？", Q),
    ("wrapped-condition", "We approve\nif you can finish by Friday", Q),
    ("ja-but-then-question", "承認いたしますが、\n納期を1週間延ばしていただけますか。", Q),
    ("decision-then-reservation", "Approved. But please use the blue logo.", Q),
    ("ja-decision-then-tadashi", "承認します。ただし、納期は12月10日でお願いします。", Q),
    ("decision-then-think", "APPROVE. Actually, let me think about it.", Q),
    ("please-approve-is-not-mine", "Please approve.", Q),
    ("go-ahead-alone", "Please go ahead.", Q),
    ("ja-ryoushou-alone", "了承しました。", Q),
    ("our-own-quote-en", "To go ahead, reply with the word APPROVE.\n"
                         "To decline, reply with the word REJECT.", Q),
    ("our-own-quote-ja", "作業を進める場合は「承認」、見送る場合は「却下」とご返信ください。", Q),
    # clear decisions in many forms
    ("full-width", "ＡＰＰＲＯＶＥ", A),
    ("ja-full-width-space", "承認\u3000お願いします", A),
    ("ja-bracketed", "「承認」でお願いします。", A),
    ("emphasis", "**APPROVE**", A),
    ("approve-please", "Approve please", A),
    ("yes-approved", "Yes, approved.", A),
    ("passive", "The quote is approved.", A),
    ("hereby", "I hereby approve the quote.", A),
    ("happy-to", "We are happy to approve this.", A),
    ("would-like-to", "I'd like to approve this quote.", A),
    ("ja-shitai-to-omoimasu", "承認したいと思います。", A),
    ("ja-sasete-itadakimasu", "承認させていただきます。", A),
    ("ja-past-consideration", "社内で検討した結果、承認いたします。", A),
    ("ja-mondai-arimasen", "承認で問題ありません。", A),
    ("ja-sumimasen", "すみません、承認します。", A),
    ("cant-wait-is-not-negation", "I can't wait to see it. Approved!", A),
    ("other-question-next-to-decision", "Approved. When can you start?", A),
    ("ja-other-question", "承認いたします。作業開始はいつ頃になりますか？", A),
    ("later-in-another-sentence", "APPROVE\nI'll send the images tomorrow.", A),
    ("signature-left-over", "承認します。\n\n田中太郎\n株式会社アクメ", A),
    ("ja-reject", "却下でお願いします", R),
    ("ja-miokuri", "今回は見送らせていただきます。", R),
    ("ja-okotowari", "お断りいたします。", R),
    ("ja-futoshounin", "不承認です", R),
    ("ja-kyohi", "拒否します", R),
    ("en-decline", "We decline.", R),
    ("en-reject-reason", "REJECT - too expensive", R),
    ("en-well-pass", "We'll pass.", R),
    ("en-well-pass-on-this", "We'll pass on this, thanks.", R),
    ("pass-it-on-is-not", "I'll pass it on to our designer.", None),
    ("reject-then-requote-wish", "Reject. Please quote a simpler version instead.", R),
    # balance: a question counts, a negated one does not, other content stays a comment
    ("ja-balance-question", "残高を教えてください", B),
    ("en-balance-question", "What is my balance?", B),
    ("balance-alone", "balance?", B),
    ("balance-with-signature", "BALANCE\n\nTaro Tanaka\nAcme Inc.", B),
    ("ja-balance-check", "クレジット残高を確認したいです。", B),
    ("balance-negated", "I don't need my balance.", None),
    ("balance-and-a-comment", "Please fix the header. Also, what is my balance?", None),
    ("balance-the-layout-is-not", "Could you balance the layout a little?", None),
    # nothing to decide
    ("thanks-looks-good", "Thanks, looks good", None),
    ("ja-ryoukai", "了解しました。", None),
    ("check-with-manager", "Let me check with my manager first.", None),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in REPLIES], ids=ids(REPLIES))
def test_read_reply(text, expected):
    reading = read_reply(text, SUBJECT)
    assert reading.command == expected, reading.reasons
    assert reading.ambiguous is (expected is Q)


BUYS = [
    # (id, text, count, count_text)
    ("en", "BUY 5", 5, "5"),
    ("en-credits", "I'd like to buy 5 credits.", 5, "5"),
    ("ja-credits", "5クレジット購入", 5, "5"),
    ("ja-kounyu-n", "購入 5", 5, "5"),
    ("ja-shimasu", "5クレジット購入します", 5, "5"),
    ("ja-tsuika-shitai", "追加で5クレジット購入したい", 5, "5"),
    ("full-width", "ＢＵＹ　５", 5, "5"),
    ("zero-as-written", "BUY 0", 0, "0"),
    ("negative-as-written", "BUY -1", -1, "-1"),
    ("fraction-as-written", "buy 1.5 credits", None, "1.5"),
    ("no-count", "I'd like to buy more credits.", None, None),
    ("ja-kanji", "五クレジット購入します", 5, "五"),
]


@pytest.mark.parametrize(("text", "count", "count_text"), [c[1:] for c in BUYS], ids=ids(BUYS))
def test_buy_carries_the_count_as_written(text, count, count_text):
    reading = read_reply(text, SUBJECT)
    assert (reading.command, reading.count, reading.count_text) == (Y, count, count_text)


@pytest.mark.parametrize("text", ["Can I buy 5 credits?", "Don't buy 5 credits",
                                  "If needed, buy 5 credits", "5クレジット購入するかもしれません"],
                         ids=["question", "negated", "conditional", "ja-maybe"])
def test_unclear_purchase_is_not_a_command(text):
    assert read_reply(text, SUBJECT).command is None


UNCLEAR_BUYS = [
    # (id, text, buy_unclear): unclear purchases; asked about only when alone
    ("question", "Can we buy 5 credits?", True),
    ("conditional", "If needed, we'll buy 5 credits.", True),
    ("two-counts", "BUY 3\nBUY 5", True),
    ("ja-question", "購入できますか？", True),
    ("ja-maybe", "5クレジット購入するかもしれません", True),
    ("with-a-request", "Please update the banner on the top page. Can we buy 5 credits?",
     False),
    ("ja-with-a-request", "トップページのバナーを差し替えてください。5クレジット購入できますか？",
     False),
]


@pytest.mark.parametrize(("text", "unclear"), [c[1:] for c in UNCLEAR_BUYS],
                         ids=ids(UNCLEAR_BUYS))
def test_unclear_purchase_alone_is_asked_about(text, unclear):
    reading = read_reply(text, SUBJECT)
    assert reading.command is None, reading.reasons
    assert reading.buy_unclear is unclear, reading.reasons


@pytest.mark.parametrize("text", ["BUY 5", "APPROVE", "Thanks for the update.", "残高",
                                  "BUY 3\nAPPROVE"])
def test_clear_readings_are_not_unclear_purchases(text):
    assert read_reply(text, SUBJECT).buy_unclear is False


@pytest.mark.parametrize(("text", "more"), [
    ("BUY 5", False), ("Hi,\n\nBUY 5\n\nThanks,\nHanako", False),
    ("お世話になっております。\n5クレジット購入します。\nよろしくお願いいたします。", False),
    ("BUY 5\nAlso, could you update the footer?", True),
    ("5クレジット購入します。あわせてフッターの修正もお願いできますか？", True),
], ids=["alone", "with-courtesy", "ja-with-courtesy", "with-a-request", "ja-with-a-request"])
def test_an_order_says_whether_the_text_says_more(text, more):
    reading = read_reply(text, SUBJECT)
    assert reading.command is Y and reading.more_text is more, reading.reasons


def test_decision_and_purchase_together_are_ambiguous():
    assert read_reply("BUY 3\nAPPROVE", SUBJECT).command is Q


SUBJECTS = [
    ("keyword-alone", "", "Re: [REQ-3] APPROVE", A),
    ("ja-keyword-alone", "", "返信: [REQ-3] 承認", A),
    ("keyword-in-title-is-not", "", "Re: [REQ-3] お見積り：承認フロー改修", None),
    ("agrees-with-body", "approve", "Re: [REQ-3] APPROVE", A),
    ("contradicted-by-body", "REJECT", "Re: [REQ-3] APPROVE", Q),
    ("hedged-by-body", "Let me check with my manager first.", "Re: [REQ-3] APPROVE", Q),
    ("buy-n", "", "BUY 3", Y),
]


@pytest.mark.parametrize(("text", "subject", "expected"), [c[1:] for c in SUBJECTS],
                         ids=ids(SUBJECTS))
def test_subject_counts_only_as_the_keyword_alone(text, subject, expected):
    assert read_reply(text, subject).command == expected


def test_reasons_name_the_rules_that_fired():
    reading = read_reply("お世話になっております。\n承認できません。", SUBJECT)
    assert reading.ambiguous and {"greeting", "negation"} <= set(reading.reasons)
    assert read_reply("APPROVE\nREJECT", SUBJECT).mentions_both
