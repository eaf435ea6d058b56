"""Property: a reply whose new text contains a negated, questioned, conditional,
deferred or someone else's decision is never acted on — whatever greetings,
closings, clear decisions, layout, signature and encoding surround it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.core.decisions import Command
from mailflow.core.message import parse_message
from mailflow.core.trim import trim_reply
from tests.replies.generator import HTML_LAYOUTS, LAYOUTS, SAMPLE_QUOTES, make_reply

EN_KEYWORDS = ["approve", "APPROVE", "approved", "Approve", "reject", "REJECT", "rejected",
               "decline"]
JA_KEYWORDS = ["承認", "却下", "不承認", "拒否"]

#: {k} is the keyword; each template states it negated, questioned, conditional,
#: deferred or as someone else's.
EN_HEDGED = [
    "I can't {k} this.", "We do not {k}.", "Please don't {k} yet.", "Never {k} this one.",
    "We won't {k} it.", "I'm unable to {k} today.", "{k}?", "Should we {k}?",
    "Could you {k} it for us?", "Is it OK to {k} now?", "I would {k} if the price were lower.",
    "{k} only if you finish by Friday.", "We'll {k} once the budget is confirmed.",
    "I'll {k} tomorrow.", "We will {k} next week.", "Let me {k} later.",
    "Our manager will {k} it.", "My boss needs to {k} first.", "Approval from finance is needed "
    "before we {k}.", "It was {k}d by our director.", "Maybe {k}.", "We might {k}.",
]
JA_HEDGED = [
    "{k}できません。", "{k}できかねます。", "{k}しないでください。", "{k}は致しかねます。",
    "{k}しますか？", "{k}でよろしいでしょうか。", "{k}した場合、いつ完了しますか？",
    "{k}する前に確認させてください。", "予算があれば{k}します。", "来週{k}します。",
    "明日{k}いたします。", "後ほど{k}いたします。", "{k}するか検討します。", "上長の{k}が必要です。",
    "上司に確認してから{k}します。", "部長が{k}する予定です。", "{k}するなら連絡します。",
]
EN_AROUND = ["Hi,", "Hello team,", "Dear Support,", "Thanks!", "Best regards,\nKen",
             "Thank you for the quote.", "APPROVE", "Approved.", "REJECT", "Please go ahead.",
             "The banner looks great.", ""]
JA_AROUND = ["お世話になっております。", "株式会社アクメの田中です。", "よろしくお願いいたします。",
             "承認いたします。", "却下でお願いします。", "承認", "ご連絡ありがとうございます。", ""]


@st.composite
def hedged_replies(draw):
    lang = draw(st.sampled_from(["en", "ja"]))
    keywords, hedged, around = ((EN_KEYWORDS, EN_HEDGED, EN_AROUND) if lang == "en"
                                else (JA_KEYWORDS, JA_HEDGED, JA_AROUND))
    sentence = draw(st.sampled_from(hedged)).format(k=draw(st.sampled_from(keywords)))
    before = draw(st.lists(st.sampled_from(around), max_size=3))
    after = draw(st.lists(st.sampled_from(around), max_size=3))
    separator = draw(st.sampled_from(["\n", "\n\n", " "]))
    text = separator.join([*before, sentence, *after]).strip()
    layouts = [name for name in LAYOUTS if lang == "ja" or "ja" not in name]
    layout = draw(st.sampled_from(layouts))
    encodings = (["utf-8-qp", "utf-8-base64"] if layout in HTML_LAYOUTS
                 else ["utf-8", "utf-8-qp", "utf-8-base64", "iso-2022-jp"]
                 + (["shift_jis"] if lang == "ja" else []))
    encoding = draw(st.sampled_from(encodings))
    return text, make_reply(text, SAMPLE_QUOTES[lang], layout=layout, encoding=encoding)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(hedged_replies())
def test_a_hedged_decision_is_never_acted_on(reply):
    from mailflow.core.decisions import read_reply

    text, raw = reply
    msg = parse_message(raw)
    new_text = trim_reply(msg.text)
    reading = read_reply(new_text, msg.subject)
    assert reading.command not in (Command.APPROVE, Command.REJECT, Command.BUY), (
        text, new_text, reading.reasons)
