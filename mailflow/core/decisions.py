"""Read a client's reply the way people write it: precision first (DESIGN §3 rule 4).

The reply's new text (already trimmed of quotes, signatures and forwards by
:func:`mailflow.core.trim.trim_reply`) is split into sentences
(:mod:`mailflow.core.sentences`) and small named rules look at each one, the
way Mailman's chain of rules looks at a message:

* ``greeting`` / ``closing`` — お世話になっております, Hi/Dear …, よろしくお願いいたします,
  Thanks/Best regards, 株式会社アクメの田中です: they carry nothing and are removed
  from the sentence before anything else looks at it.
* ``negation`` — できません, できかねます, しないで, not, don't, never, can't …
* ``question`` — ``?``, ``？``, か。, "could you", でしょうか, ますか …
* ``condition`` — if, would, unless, provided, but, only, 前に, 場合, なら, たら, ただし …
* ``deferral`` — tomorrow, later, next week, will, 来週, 明日, 後ほど, 改めて, 検討します …
* ``someone-else`` — our manager, approval from, sign-off, 上長, 上司, 決裁, 承認が必要 …
* ``contradiction`` — both decisions, or a decision then its retraction
  ("Approve." / "Wait, reject please.", 「承認します。やはり見送ります。」).
* ``form`` — the keyword is there but not as the writer's own present decision
  ("please approve", "to approve", 承認者, ご承認 …).

A decision counts only when exactly one kind of decision (approve or reject)
is stated clearly — the keyword in the writer's own present form, and none of
the rules above fired on its sentence or on any other sentence of the new
text — and nothing else in the text mentions the other decision. Everything
else that mentions a decision is *ambiguous*: the caller asks the client to
reply with the one word alone and changes nothing. A wrong action (credits
taken without consent) is far worse than a question.

Decisions made here, deliberately:

* "Go ahead" / "proceed" / 進めてください / 了承しました **without** a keyword are
  not decisions: they are ordinary words in comments ("go ahead and send the
  files", "how do we proceed?") and taking credits on them would act on mail
  that never answered the quote. They make the reply ambiguous (the client is
  asked for the word), and they are welcome next to a keyword ("We approve
  this quote. Please go ahead.").
* "We'll pass" (also "we'll pass on this") is a rejection: it is the plain
  English idiom for declining an offer. "Pass it on to …" is not, and "we'll
  pass for now" is deferred: neither counts.
* A question about something else next to a clear decision does not block it
  ("Approved. When can you start?"); a question *about the decision* does
  ("Approve? What exactly does this include?").
* A sentence that starts with a condition or a reservation (If …, But …,
  However …, Only …, ただし …) anywhere in the text blocks the decision: an
  approval with conditions is not unconditional.
* ``BALANCE`` / 残高 is harmless information, so a question counts ("What is
  my balance?", 残高を教えてください), but only when the balance is all the reply
  asks about: a comment that also asks for the balance stays a comment for
  staff. A negated or conditional one does not count.
* ``BUY n`` / 「5クレジット購入」: the count is returned as written (``count_text``)
  and as an integer when it is one; the caller validates it (0, -1, 1.5, too
  many). A purchase that is questioned, negated or conditional is not a command;
  when the purchase is all the reply is about, ``buy_unclear`` says so (the
  caller asks for ``BUY n`` alone), else the reply goes to staff as it is. A
  decision and a purchase in one reply are ambiguous.
* The subject counts only when, without Re:/返信: prefixes and the ``[REQ-n]``
  tag, it is the keyword alone; a subject decision that the body contradicts
  or hedges is ambiguous.

Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

from mailflow.core.sentences import normalise, split_sentences

__all__ = ["Command", "Reading", "read_reply", "read_sentence", "strip_subject"]


class Command(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    BALANCE = "balance"
    BUY = "buy"
    AMBIGUOUS = "ambiguous"


_DECISIONS = (Command.APPROVE, Command.REJECT)


@dataclass(frozen=True)
class Reading:
    """What a reply says: one command, or none, or "ask the client".

    ``reasons`` names the rules that fired (for the staff record and the
    tests); ``mentioned`` the decisions the text mentions, clear or not.
    """

    command: Command | None
    count: int | None = None
    count_text: str | None = None
    ambiguous: bool = False
    reasons: tuple[str, ...] = ()
    mentioned: frozenset[Command] = frozenset()
    #: A purchase is all the reply is about, but not a clear order (questioned,
    #: hedged, two counts): the caller asks for `BUY n` alone and creates nothing.
    buy_unclear: bool = False
    #: A clear `BUY n` whose text also says something else (a question, more
    #: work): the order counts, and staff should read the rest.
    more_text: bool = False

    @property
    def acts(self) -> bool:
        """True when the reading would change something (approve, reject, buy)."""
        return self.command in (Command.APPROVE, Command.REJECT, Command.BUY)

    @property
    def mentions_both(self) -> bool:
        return set(_DECISIONS) <= self.mentioned


@dataclass(frozen=True)
class Rule:
    """A named rule: does it fire on this (normalised, case-folded) sentence?"""

    name: str
    pattern: re.Pattern

    def fires(self, sentence: str) -> bool:
        return bool(self.pattern.search(sentence))


def _rule(name: str, *alternatives: str) -> Rule:
    return Rule(name, re.compile("|".join(f"(?:{a})" for a in alternatives)))


# --- idioms that look like markers but are not -------------------------------------

#: Said before the rules look: "no problem" is not a negation, "would like to"
#: is not a condition, すみません is not a negative verb.
_NEUTRAL = [
    # "We'll pass" / "we will pass on this": the idiom for declining, not a deferral.
    (re.compile(r"\b(?:i|we)(?:'ll|\s+will)\s+(?:have\s+to\s+)?pass(?:\s+on\s+(?:this|that|it"
                r"|the\s+(?:quote|offer|estimate|proposal))(?:\s+(?:one|quote|offer|time))?"
                r"|\s+this\s+time)?(?=\s*(?:[,.!]|$))"), "we reject"),
    (re.compile(r"\b(?:would|'d)\s+like\s+to\b"), "want to"),
    (re.compile(r"\b(?:would|'d)\s+love\s+to\b"), "want to"),
    (re.compile(r"\bas\s+soon\s+as\s+(?:possible|you\s+can)\b|\basap\b|\bright\s+away\b"
                r"|\bafter\s+(?:some\s+|careful\s+|much\s+)?(?:consideration|discussion|review"
                r"|thought)\b"), ""),
    (re.compile(r"\b(?:no|not\s+a)\s+(?:problem|worries)\b|\bcan'?t\s+wait\b|\bcannot\s+wait\b"
                r"|\bno\s+doubt\b|\bwithout\s+(?:further\s+)?(?:delay|changes)\b"), ""),
    (re.compile(r"問題(?:は|も)?(?:ありません|ございません|ないです|ない|無いです|無い|なし|無し)"
                r"|(?:構い|かまい)ません|差し支え(?:ありません|ございません|ない)|差し支えなければ"
                r"|申し訳(?:ありません|ございません|ない)|すみません|すいません"
                r"|お手数(?:を(?:おかけ|お掛け)(?:いた|致)?しますが|ですが|ではございますが)"
                r"|恐れ入りますが|恐縮ですが|お忙しいところ|ありがとうございますが"
                r"|間違いなく|間違いありません|遅くなりまして|遅くなり"), ""),
]


def _neutralise(sentence: str) -> str:
    for pattern, replacement in _NEUTRAL:
        sentence = pattern.sub(replacement, sentence)
    return re.sub(r"\s{2,}", " ", sentence).strip()


# --- greeting and closing ---------------------------------------------------------------

_KEYWORDISH = re.compile(r"approv|reject|declin|balance|buy|purchase|承認|却下|拒否|見送|お断り"
                         r"|辞退|残高|購入|否認")

_GREETING = _rule(
    "greeting",
    r"^(?:hi|hello|hey|dear|good\s+(?:morning|afternoon|evening|day)|greetings|attn:?)"
    r"(?:\s+[\w.&'-]+){0,3}\s*(?:[,!:.]+\s*|$)",
    r"^(?:大変|いつも|平素より|平素は)?(?:大変)?お世話にな(?:って|り)(?:おります|ます|ました)[。、,!\s]*",
    r"^お疲れ(?:様|さま)です[。、,!\s]*",
    r"^(?:こんにちは|こんばんは|おはようございます)[。、,!\s]*",
    r"^(?:(?:株式会社|有限会社|合同会社|\(株\))?[^\s、。,]{0,20}の)?[^\s、。,]{1,10}(?:です|でございます|と申します)[。、,!\s]*",
    r"^[^\s、。,]{1,20}(?:様|さま|御中|各位)[。、,!\s]*",
    r"^(?:thanks|thank\s+you|many\s+thanks)(?:\s+(?:very|so)\s+much)?"
    r"(?:\s+for\s+[^,.!?]{1,60})?\s*[,!.]+\s*",
    r"^(?:お見積り|お見積もり|見積り|見積もり|お見積|見積|ご連絡|ご返信|ご回答|ご提案|ご対応|ご送付)"
    r"(?:書)?(?:を|の)?(?:ご送付|ご連絡|送付|ご提示|いただき|頂き|くださり)*"
    r"(?:誠に)?ありがとうございま(?:す|した)[。、,!\s]*",
    r"^(?:誠に)?ありがとうございま(?:す|した)[。、,!\s]*",
    r"^sorry\s+for\s+the\s+(?:late|delayed|slow)\s+(?:reply|response)[,.!\s]*",
    r"^(?:i\s+)?hope\s+(?:you(?:'re|\s+are)|this\s+finds\s+you|all\s+is)\s+[^,.!?]{0,30}[,.!\s]*",
)

_CLOSING = _rule(
    "closing",
    r"[,.!\s-]*\b(?:thanks|thank\s+you|thx|cheers|ty|many\s+thanks|thanks\s+(?:a\s+lot|again)"
    r"|thank\s+you\s+(?:very|so)\s+much|best(?:\s+regards|\s+wishes)?|kind\s+regards|regards"
    r"|warm\s+regards|sincerely|yours(?:\s+sincerely|\s+truly)?|all\s+the\s+best|br"
    r"|have\s+a\s+(?:nice|good|great)\s+(?:day|weekend|week)"
    r"|looking\s+forward\s+to\s+[^,.!?]{1,40})"
    r"(?:\s*[,!.]+(?:\s*[\w.'-]+){0,3})?[,!.\s]*$",
    r"[、,。!\s]*(?:以上[、,]?\s*)?(?:何卒|引き続き|今後とも|改めて)?(?:どうぞ|どうか)?"
    r"(?:よろしく|宜しく)(?:お願い|おねがい)(?:いた|致|申し上げ)?(?:し)?(?:ます|ました)[。!\s]*$",
    r"[、,。!\s]*(?:以上|以上です|以上となります|取り急ぎ(?:ご連絡|ご返信|お返事|用件のみ)?(?:まで)?"
    r"|失礼(?:いた|致)?します|ありがとうございま(?:す|した))[。!\s]*$",
    r"^(?:please\s+)?let\s+(?:me|us)\s+know\s+if\s+[^.!?]{0,60}[.!]*$",
    r"^if\s+you\s+(?:have|need)\s+(?:any|anything)\s+[^.!?]{0,60}[.!]*$",
    r"^(?:ご不明な点|ご不明点|何か)(?:が|など)?(?:ございましたら|ありましたら|あれば)[^。!?]{0,30}[。!]*$",
    r"^ご確認(?:の)?(?:ほど)?(?:よろしく|宜しく)?(?:お願い)[^。!?]{0,20}[。!]*$",
    r"^(?:引き続き|今後とも)[^。!?]{0,30}(?:お願い|申し上げ)[^。!?]{0,20}[。!]*$",
)


def _strip_courtesy(sentence: str) -> tuple[str, list[str]]:
    """The sentence without greetings and closings at its ends; the rules that fired.

    A greeting or closing never eats a keyword: "お見積りの承認です" is not a
    self-introduction.
    """
    fired: list[str] = []
    for _ in range(4):
        before = sentence
        match = _CLOSING.pattern.search(sentence)
        if match and match.group() and not _KEYWORDISH.search(match.group()):
            sentence = sentence[:match.start()].strip()
            fired.append("closing")
        match = _GREETING.pattern.search(sentence)
        if match and match.group() and not _KEYWORDISH.search(match.group()):
            sentence = sentence[match.end():].strip()
            fired.append("greeting")
            if re.match(r"(?:thanks|thank\s+you|many\s+thanks)", match.group()):
                sentence = re.sub(r"^but\s+", "", sentence)  # "Thank you, but we decline."
        if sentence == before:
            break
    return sentence, fired


# --- the rules that make a decision unclear -------------------------------------------------

NEGATION = _rule(
    "negation",
    r"\bnot\b|n't\b|\bnever\b|\bno\s+longer\b|\bunable\b|\bcannot\b|\bnor\b|\bneither\b"
    r"|\bwithout\b|\bno\s+(?:approv\w*|go|need|way|deal)\b|\brefuse|\bdont\b|\bcant\b|\bwont\b"
    r"|\bdisagree|\bdeclining\s+to\b",
    r"ません|(?:でき|出来)(?:ない|ず|かね)|かね(?:ます|る)|しない|しないで|せず|ずに|られない"
    r"|(?:では|じゃ)(?:なく|ない|ありません)|不可|無理|難しい|難しく|控え(?:ます|させて|たい)"
    r"|いない|ないで|ないです|ない[。!]?$|ないため|ないので|ないよう|なかった|できかね|不要",
)

QUESTION = _rule(
    "question",
    r"\?",
    r"^(?:could|can|would|will|shall|should|may|do|does|did|is|are|am|was|were|what|why|how"
    r"|when|where|which|who|whom|whose)\b",
    r"\b(?:could|can|would|will)\s+(?:you|we|i)\b|\b(?:is|are)\s+(?:it|this|that|there)\b"
    r"|\bwhether\b|\bwonder|\bnot\s+sure\b|\bunsure\b|\bany\s+chance\b",
    r"(?:か|かな|かしら|かね|っけ)[。.!]*$|かどうか|でしょうか|ますか|ですか|いかが|可能か",
)

CONDITION = _rule(
    "condition",
    r"\bif\b|\bunless\b|\bprovided\b|\bproviding\b|\bas\s+long\s+as\b|\bassuming\b|\bwould\b"
    r"|'d\b|\bonce\b|\bonly\b|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b"
    r"|\bsubject\s+to\b|\bcondition|\bdepend|\bin\s+case\b|\bpartial|\bpartly\b|\bsome\s+of\b"
    r"|\bfirst\s+(?:one|item|part|two|three|half)\b",
    r"場合|なら|たら|れば|であれば|前に|条件|ただし|但し|^ただ[、,]|(?:ます|です|した|ません|ある|たい|いる)が"
    r"|が[、,]|けど|けれど|ものの|限り|上で|うえで|前提|のみ|だけ|一部|以外|とりあえず|取り敢えず"
    r"|もし|仮に|としても",
)

DEFERRAL = _rule(
    "deferral",
    r"\btomorrow\b|\blater\b|\bnext\s+(?:week|month|year|time|monday|tuesday|wednesday"
    r"|thursday|friday|saturday|sunday|quarter)\b|\bafter\b|\bsoon\b|\btonight\b"
    r"|\bthis\s+(?:afternoon|evening)\b|\bwill\b|'ll\b|\bgoing\s+to\b|\bgonna\b|\bplan(?:ning)?\s+to\b"
    r"|\bintend|\bexpect\s+to\b|\bprobably\b|\bmaybe\b|\bperhaps\b|\blikely\b|\bmight\b"
    r"|\bconsider|\bthink(?:ing)?\s+(?:about|it\s+over|over)\b|\blet\s+(?:me|us)\b"
    r"|\bget\s+back\b|\bdiscuss|\breview|\bcheck\s+(?:with|internally|first)\b|\bfor\s+now\b"
    r"|\byet\b|\bstill\b|\bhold\b|\bpending\b|\bwhen\b|\buntil\b|\beventually\b|\btentativ"
    r"|\bprovisional|\bpreliminar|\bin\s+principle\b|\bby\s+(?:monday|tuesday|wednesday"
    r"|thursday|friday|the\s+end|end\s+of)\b",
    r"来週|明日|明後日|あした|後ほど|後程|のちほど|改めて|あらためて"
    r"|検討(?:します|いたします|致します|させて|中|の上|して|したい|する|しており|いたしたく)"
    r"|社内で(?:確認|相談|協議)(?:します|いたします|中|して|の上|させて|したい|する)"
    r"|確認(?:後|してから|の上|中|次第|させて|いたします|します)"
    r"|追って|後日|週明け|来月|今後|予定|つもり|見込み|次第|後で|あとで|少々お待ち|お待ち(?:ください|いただ|頂)"
    r"|保留|一旦|いったん|持ち帰|相談(?:します|いたします|して|の上|させて|中)|今週中|明朝"
    r"|仮|内定|いずれ|まだ",
)

SOMEONE_ELSE = _rule(
    "someone-else",
    r"\b(?:manager|boss|supervisor|director|ceo|cfo|coo|cto|president|vp|head\s+of|team\s+lead"
    r"|finance|accounting|procurement|purchasing|legal|board|committee|colleague|management"
    r"|he|she|they|his|her|their|him|them|someone|somebody|client'?s|customer'?s)\b"
    r"|\bapproval\s+from\b|\bsign[- ]?off\b|\bsigned\s+off\b|\bby\s+(?:my|our|the|his|her|their)\b"
    r"|\bneeds?\s+(?:approval|to\s+approve)\b|\bhas\s+to\s+approve\b|\bmust\s+approve\b",
    r"上長|上司|部長|課長|社長|役員|取締役|決裁|稟議|経理|本部|本社|責任者|承認者|ご承認"
    r"|承認(?:が|を)(?:必要|得|もら|いただ|頂|お願い|取|下り|おり)|承認待ち|承認依頼|承認済"
    r"|承認され|社内承認|社内の承認|関係者|先方|クライアント|お客様|担当者に|に確認",
)

#: A decision then its retraction, or a change of mind.
RETRACTION = _rule(
    "contradiction",
    r"\bwait\b|\bactually\b|\bon\s+second\s+thought|\bsecond\s+thoughts\b|\bhold\s+on\b"
    r"|\bscratch\s+that\b|\bnever\s*mind\b|\bdisregard\b|\bignore\s+(?:my|the|that)\b"
    r"|\bcorrection\b|\bi\s+meant?\b|\btypo\b|\bmistake\b|\boops\b|\bchanged?\s+(?:my|our)\s+minds?\b"
    r"|\bchange\s+of\s+plans?\b|\bundo\b|\bretract|\bwithdraw|\brevoke|\bcancel\s+(?:that|my|our)\b",
    r"やはり|やっぱり|待って|まって|取り消|取消|撤回|訂正|間違|前言|先ほどの|先程の|さきほどの"
    r"|なかったことに|考え直|気が変わ",
)

#: Rules that make a sentence with a decision in it unclear, in the order reported.
DECISION_RULES: tuple[Rule, ...] = (NEGATION, QUESTION, CONDITION, DEFERRAL, SOMEONE_ELSE,
                                    RETRACTION)

#: A sentence without a decision that still casts doubt on one elsewhere.
HEDGE_RULES: tuple[Rule, ...] = (
    RETRACTION,
    _rule("deferral",
          r"\blet\s+(?:me|us)\s+(?:think|check|discuss|confirm|review|consider|get\s+back|talk)"
          r"|\bthink\s+(?:about\s+it|it\s+over)\b|\bget\s+back\s+to\s+you\b|\bneed\s+more\s+time\b"
          r"|\bnot\s+(?:decided|sure)\b|\bhaven'?t\s+decided\b|\bundecided\b|\bhold\s+off\b"
          r"|\bon\s+hold\b|\bconsider(?:ing)?\b|\bdiscuss\s+(?:it\s+)?(?:internally|with)\b"
          r"|\bcheck\s+(?:internally|with)\b|\bconfirm\s+with\b|\btalk\s+(?:to|with)\b",
          r"検討(?:します|いたします|致します|させて|中|の上|して|したい|する|しており|いたしたく)"
          r"|社内で(?:確認|相談|協議)(?:します|いたします|中|して|の上|させて|したい|する)"
          r"|(?:改めて|あらためて|後ほど|後程|追って|後日)(?:ご)?(?:連絡|返信|回答)|相談(?:します|いたします|して|の上|させて|中)"
          r"|持ち帰|保留|少々お待ち|お待ちください|一旦|いったん|判断(?:します|いたします|させて|中|して)"),
    _rule("someone-else",
          r"\bapproval\s+from\b|\bsign[- ]?off\b|\b(?:ask|check\s+with|confirm\s+with|talk\s+to)\s+"
          r"(?:my|our|the)\b|\b(?:manager|boss|supervisor|director|ceo|cfo|president|finance"
          r"|accounting|procurement|legal|board|management)\s+(?:will|needs?|has|must|should|to"
          r"|is|wants?|may|might|would)\b",
          r"上長|上司|部長|課長|社長|役員|取締役|決裁|稟議|承認が必要|承認を得|承認待ち"),
    _rule("condition",
          r"^(?:but|however|although|though|except|unless|only|provided|providing|as\s+long\s+as"
          r"|on\s+condition|if|assuming|subject\s+to)\b",
          r"^(?:ただし|但し|ただ[、,]|もし|仮に|条件|なお[、,]?条件)"),
)


# --- the decision itself -------------------------------------------------------------------

@dataclass(frozen=True)
class Mention:
    """A decision, balance or purchase mentioned in a sentence."""

    kind: Command
    keyword: bool                     # the keyword itself, not a go-ahead phrase
    reasons: tuple[str, ...] = ()     # why it is not clear; empty = clear
    count: int | None = None
    count_text: str | None = None

    @property
    def clear(self) -> bool:
        return not self.reasons


#: English words end where Latin letters end: "REJECTでお願いします" is REJECT.
_EN_APPROVE = re.compile(r"(?<![a-z])(?:approve|approved)(?![a-z])")
_EN_REJECT = re.compile(r"(?<![a-z])(?:reject|rejected|decline|declined)(?![a-z])")
_EN_APPROVE_OTHER = re.compile(r"\b(?:approv(?:es|ing|al|als|er|ers)|pre-?approv\w*)\b")
_EN_REJECT_OTHER = re.compile(r"\b(?:reject(?:s|ing|ion|ions)|declin(?:es|ing)|disapprov\w*"
                              r"|unapprov\w*)\b")
_EN_APPROVE_LIKE = re.compile(r"\b(?:go\s+ahead|proceed|go\s+for\s+it|green\s+light"
                              r"|let'?s\s+do\s+it)\b")
_EN_REJECT_LIKE = re.compile(r"\b(?:no\s+thanks|no\s+thank\s+you|not\s+interested|too\s+expensive"
                             r"|cancel)\b")

#: Before an English keyword: fillers, then "I/we" with a willing verb, or "the quote is".
_EN_LEAD = re.compile(
    r"(?:(?:ok|okay|yes|yep|yeah|sure|great|perfect|fine|good|alright|all\s+right|all\s+good"
    r"|thanks|thank\s+you|looks\s+good|sounds\s+good|that'?s\s+fine|that\s+works|excellent|cool"
    r"|hi|hello|all|hereby|so|then|re:?|\[?req-?\d+\]?|quote|fully|sorry|unfortunately"
    r"|regretfully)[\s,!.:;-]*)*"
    r"(?:(?:i|we)(?:\s+(?:hereby|do|gladly|happily|fully|now|also|hence|therefore))*"
    r"(?:\s*(?:want|wish|'m\s+happy|'re\s+happy|am\s+happy|are\s+happy|am\s+glad|are\s+glad"
    r"|'m\s+glad|'re\s+glad|am\s+pleased|are\s+pleased|'m\s+pleased|'re\s+pleased"
    r"|(?:have|'ve)?\s*decided|need|have|must)\s+to)?\s+"
    r"|(?:the|this|your|that|our)\s+(?:quote|estimate|proposal|offer|request|price|work)\s+"
    r"(?:is\s+)?)?"
)

_JA_APPROVE = re.compile(r"(?<![不未非])承認")
_JA_REJECT = re.compile(r"不承認|却下|拒否|見送|お断り|辞退|否認")
_JA_APPROVE_LIKE = re.compile(r"進めて|お進め|進行|着手|発注|作業開始|作業を開始|了承|承諾|goサイン|ゴーサイン")
_JA_REJECT_LIKE = re.compile(r"キャンセル|見合わせ|やめて|止めて|やめ(?:ます|ておきます)|結構です"
                             r"|なしで|無しで|高すぎ|予算(?:オーバー|を超え)")

#: What may follow a Japanese keyword for it to be the writer's own decision.
_JA_TAIL = (
    r"(?:(?:を|と)?(?:いた|致)?し(?:ます|ました)|する|した|です|でございます"
    r"|と(?:いた|致)?します|とさせて(?:いただ|頂)きます|(?:を)?させて(?:いただ|頂)き(?:ます|ました)"
    r"|(?:で|にて)?(?:よろしく|宜しく)?(?:お願い|おねがい)(?:いた|致)?し?ます"
    r"|(?:で|にて)?(?:お願い|おねがい)申し上げます|願います"
    r"|(?:いた|致)?したく(?:存じます|思います)|(?:いた|致)?したいと(?:思います|存じます|思っております)"
    r"|したいです|したい|で(?:す)?|で(?:大丈夫|結構|ok)(?:です)?|とします|申し上げます"
    r"|(?:する|と)ことに(?:なりました|しました|いたしました|致しました)"
    r"|で(?:進めて|お進め)(?:ください|下さい)|)"
)
#: A clause may follow the decision after a comma (「承認します、進めてください」):
#: the rules still read the whole sentence.
_JA_END = r"(?:[、,].*)?$"
_JA_KEYWORD_FORM = {
    "承認": re.compile(rf"承認{_JA_TAIL}{_JA_END}"),
    "不承認": re.compile(rf"不承認{_JA_TAIL}{_JA_END}"),
    "却下": re.compile(rf"却下{_JA_TAIL}{_JA_END}"),
    "拒否": re.compile(rf"拒否{_JA_TAIL}{_JA_END}"),
    "辞退": re.compile(rf"辞退{_JA_TAIL}{_JA_END}"),
    "否認": re.compile(rf"否認{_JA_TAIL}{_JA_END}"),
    "お断り": re.compile(rf"お断り(?:{_JA_TAIL}|させて(?:いただ|頂)きます){_JA_END}"),
    "見送": re.compile(
        rf"見送(?:り{_JA_TAIL}|ります|りました|る(?:ことに(?:なりました|しました|いたしました))?|らせて(?:いただ|頂)き(?:ます|たく(?:存じます|思います)?)"
        rf"|らせてください|らせて(?:いただ|頂)きたいと(?:思います|存じます)|りたいと(?:思います|存じます)"
        rf"|りたいです|りたい|りとします|りといたします){_JA_END}"),
}
#: What may come before a Japanese keyword: nothing, or a topic ending in a particle.
_JA_LEAD = re.compile(
    r"(?:^|[、,.!\s]|は|を|で|の|にて|として|について|につきまして|の件|ので|ため|から|本件|上記|標記"
    r"|今回|はい|以上|了解です|承知しました|承知いたしました"
    r"|見積り|見積もり|見積|件|内容|金額|案|提案|こちら|これ)$")


def _strip_marks(sentence: str) -> str:
    """Emphasis and quotation marks around words: **APPROVE**, 「承認」."""
    return re.sub(r"[*_\"`「」『』【】〈〉《》()（）\[\]]", " ", sentence).strip(" ")


def _trailing(sentence: str) -> str:
    return sentence.rstrip(" 。.!、,;:~〜ー-")


def _ja_form(sentence: str, start: int, word: str) -> bool:
    lead = sentence[:start].strip()
    if lead and not _JA_LEAD.search(lead):
        return False
    if lead.endswith(("ご", "お")) and word == "承認":
        return False
    return bool(_JA_KEYWORD_FORM[word].match(re.sub(r"\s+", "", _trailing(sentence[start:]))))


def _en_form(sentence: str, start: int) -> bool:
    lead = sentence[:start]
    return len(lead) <= 120 and bool(_EN_LEAD.fullmatch(lead))


def _decision_mentions(s: str, markers: list[str]) -> list[Mention]:
    """Every approve/reject mention in one sentence, each with its reasons."""
    found: list[tuple[Command, bool, bool]] = []  # kind, keyword, form ok
    for pattern, kind in ((_EN_APPROVE, Command.APPROVE), (_EN_REJECT, Command.REJECT)):
        for match in pattern.finditer(s):
            found.append((kind, True, _en_form(s, match.start())))
    for pattern, kind in ((_EN_APPROVE_OTHER, Command.APPROVE),
                          (_EN_REJECT_OTHER, Command.REJECT)):
        found += [(kind, True, False) for _ in pattern.finditer(s)]
    for match in _JA_REJECT.finditer(s):
        word = "見送" if match.group().startswith("見送") else match.group()
        found.append((Command.REJECT, True, _ja_form(s, match.start(), word)))
    for match in _JA_APPROVE.finditer(s):
        found.append((Command.APPROVE, True, _ja_form(s, match.start(), "承認")))
    for pattern, kind in ((_EN_APPROVE_LIKE, Command.APPROVE), (_JA_APPROVE_LIKE, Command.APPROVE),
                          (_EN_REJECT_LIKE, Command.REJECT), (_JA_REJECT_LIKE, Command.REJECT)):
        if pattern.search(s):
            found.append((kind, False, False))
    kinds = {kind for kind, keyword, _ in found}
    mentions = []
    for kind, keyword, form in found:
        reasons = list(markers)
        if len(kinds) > 1:
            reasons.append("contradiction")
        if not keyword:
            reasons.append("no-keyword")
        elif not form:
            reasons.append("form")
        mentions.append(Mention(kind, keyword, tuple(dict.fromkeys(reasons))))
    return mentions


# --- balance and purchase ------------------------------------------------------------------------

_BALANCE = re.compile(
    r"\b(?:my|our|the|current|credit|credits|remaining|account|available|your)\s+balance\b"
    r"|^(?:(?:check|show|send|please|what'?s|what\s+is)\s+)*balance(?:\s+(?:please|pls|check"
    r"|inquiry|enquiry|request))?\s*(?:を?(?:お願い|おねがい)(?:いた|致)?(?:します)?)?[\s?.!]*$"
    r"|\bhow\s+many\s+credits\b|\bcredits?\s+(?:left|remaining)\b"
    r"|残高|残りのクレジット|クレジットの残り|クレジット残|残クレジット|残り何クレジット")
_NUMBER = r"[-+−]?\d+(?:[.,]\d+)?|[〇一二三四五六七八九十百]+"
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                 "seven": 7, "eight": 8, "nine": 9, "ten": 10, "twenty": 20}
_EN_BUY = re.compile(
    r"\b(?:buy|purchase)\b(?:\s+(?P<n>" + _NUMBER + r"|" + "|".join(_NUMBER_WORDS) + r")(?!\w))?"
    r"(?:\s+(?:more|additional|extra))?(?:\s+(?P<c>credits?))?")
_JA_BUY = (
    re.compile(r"(?P<n>" + _NUMBER + r")\s*(?:クレジット|credits?|cr|点|個|つ|口)?\s*(?:分)?\s*"
               r"(?:を|の)?\s*(?:追加)?\s*(?:で)?\s*(?:追加)?\s*(?:で)?\s*購入"),
    re.compile(r"購入\s*[:：]?\s*(?P<n>" + _NUMBER + r")"),
    re.compile(r"クレジット\s*(?:を)?\s*(?P<n>" + _NUMBER + r")\s*(?:つ|個|点|口)?\s*(?:分)?\s*"
               r"(?:を)?\s*(?:追加)?\s*(?:で)?\s*購入"),
    re.compile(r"クレジット\s*(?:を)?\s*(?:追加)?\s*(?:で)?\s*購入"),
)
_KANJI_DIGITS = {"〇": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
                 "九": 9}


def _count(text: str | None) -> int | None:
    """The integer a count as written stands for, or None (1.5, "some")."""
    if text is None:
        return None
    text = text.replace("−", "-")
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if text in _NUMBER_WORDS:
        return _NUMBER_WORDS[text]
    if re.fullmatch(r"[〇一二三四五六七八九]", text):
        return _KANJI_DIGITS[text]
    tens = re.fullmatch(r"([一二三四五六七八九]?)十([一二三四五六七八九]?)", text)
    if tens:
        return (_KANJI_DIGITS.get(tens.group(1), 1) * 10) + _KANJI_DIGITS.get(tens.group(2), 0)
    return None


def _buy_mention(s: str, markers: list[str]) -> Mention | None:
    """A purchase in this sentence, with its count as written."""
    english = _EN_BUY.search(s)
    if english:
        count_text = english.group("n")
        shaped = bool(count_text or english.group("c") or _trailing(s) == "buy") \
            and _en_form(s, english.start())
    else:
        match = next((m for m in (p.search(s) for p in _JA_BUY) if m), None)
        if match is None:
            if "購入" in s or re.search(r"\b(?:buy|purchase)\b", s):
                return Mention(Command.BUY, True, ("form", *markers))
            return None
        count_text = match.groupdict().get("n")
        tail = _trailing(s[match.end():])
        shaped = bool(re.fullmatch(_JA_TAIL + r"|(?:を)?希望(?:します|いたします|です)?", tail)
                      or re.fullmatch(r"(?:を|で)?(?:お願い|おねがい).{0,12}", tail))
    reasons = list(markers)
    if not shaped:
        reasons.append("form")
    return Mention(Command.BUY, True, tuple(reasons), _count(count_text), count_text)


#: A sentence that is only a name, a company, a phone number or an address:
#: what remains of a signature the trimmer could not tell from text.
_SIGNATURE_LIKE = re.compile(
    r"^(?:[\w.'-]+(?:\s+[\w.'-]+){0,2}|.*(?:tel|fax|phone|mobile|〒|株式会社|有限会社|inc|ltd|llc"
    r"|co\.|corp|https?:|www\.|@|部|課|室|担当).*)$")


@dataclass(frozen=True)
class SentenceReading:
    """One sentence, read: what it mentions and which rules fired."""

    text: str
    courtesy: tuple[str, ...] = ()    # greeting / closing, when they fired
    mentions: tuple[Mention, ...] = ()
    hedges: tuple[str, ...] = ()      # doubt cast on a decision made elsewhere
    balance: bool = False
    balance_clear: bool = False
    content: bool = False             # something besides courtesy and signature lines
    markers: tuple[str, ...] = field(default=())


def read_sentence(sentence: str) -> SentenceReading:
    """Apply every rule to one sentence (already split; any case, any width)."""
    s = _strip_marks(normalise(sentence).casefold())
    s = _neutralise(s)
    core, courtesy = _strip_courtesy(s)
    core = core.strip(" ,、")
    if not core or not re.search(r"\w", core):
        return SentenceReading(text=s, courtesy=tuple(courtesy))
    markers = [rule.name for rule in DECISION_RULES if rule.fires(core)]
    mentions = _decision_mentions(core, markers)
    buy = _buy_mention(core, markers)
    if buy is not None:
        mentions.append(buy)
    balance = bool(_BALANCE.search(core))
    # Asking for information is harmless: only a negated or conditional one is unclear.
    balance_markers = [m for m in markers if m in ("negation", "condition")]
    hedges = () if mentions else tuple(rule.name for rule in HEDGE_RULES if rule.fires(core))
    return SentenceReading(
        text=core, courtesy=tuple(courtesy), mentions=tuple(mentions), hedges=hedges,
        balance=balance, balance_clear=balance and not balance_markers,
        content=not balance and not mentions and not _SIGNATURE_LIKE.match(core),
        markers=tuple(markers))


# --- the subject ---------------------------------------------------------------------------------

_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|fw|aw|wg|sv|vs|tr|rv|antw|odp|返信|転送|回复|答复|转发)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*|\[[^\]]*\]\s*)",
    re.IGNORECASE,
)
_SUBJECT_KEYWORDS = {
    "approve": Command.APPROVE, "approved": Command.APPROVE, "承認": Command.APPROVE,
    "reject": Command.REJECT, "rejected": Command.REJECT, "decline": Command.REJECT,
    "却下": Command.REJECT, "不承認": Command.REJECT, "拒否": Command.REJECT,
    "見送り": Command.REJECT, "balance": Command.BALANCE, "残高": Command.BALANCE,
}


def strip_subject(subject: str) -> str:
    """Subject without Re:/Fwd:/返信: prefixes and bracketed tags like ``[REQ-12]``."""
    text = unicodedata.normalize("NFKC", subject).casefold().strip()
    while True:
        stripped = _SUBJECT_PREFIX.sub("", text, count=1)
        if stripped == text:
            return text.strip()
        text = stripped


def _subject_mention(subject: str) -> Mention | None:
    """The subject's command when, cleaned, it is the keyword alone (or BUY n)."""
    core = _strip_marks(strip_subject(subject)).strip(" \t.。!！?？、,")
    if not core:
        return None
    kind = _SUBJECT_KEYWORDS.get(core)
    if kind is not None:
        return Mention(kind, True)
    buy = re.fullmatch(r"(?:buy|purchase|購入)\s*(?P<n>" + _NUMBER + r")"
                       r"(?:\s*(?:credits?|クレジット))?|(?P<m>" + _NUMBER + r")\s*(?:credits?\s*"
                       r"|クレジット)?\s*購入", core)
    if buy:
        text = buy.group("n") or buy.group("m")
        return Mention(Command.BUY, True, (), _count(text), text)
    return None


# --- the whole reply -----------------------------------------------------------------------------

def _ordered(reasons: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(reasons))


def _echoes(mention: Mention, clear: set[Command]) -> bool:
    """Does this unclear mention only repeat the clear decision?

    "We approve. Please go ahead." and 「承認します。作業開始はいつ頃ですか？」
    repeat it; a keyword in a question ("Approve. Approve before payment?")
    does not.
    """
    if mention.kind not in clear:
        return False
    allowed = {"form"} if mention.keyword else {"no-keyword", "question"}
    return set(mention.reasons) <= allowed


def read_reply(new_text: str, subject: str = "") -> Reading:
    """Read a reply's new text (and its subject): the one command it states, if any."""
    sentences = [read_sentence(s) for s in split_sentences(new_text or "")]
    courtesy = [name for s in sentences for name in s.courtesy]
    mentions = [m for s in sentences for m in s.mentions]
    hedges = [h for s in sentences for h in s.hedges]
    subject_mention = _subject_mention(subject or "")
    if subject_mention is not None:
        mentions.append(subject_mention)
        courtesy.append("subject")  # reported with the rules that read the text
    decisions = [m for m in mentions if m.kind in _DECISIONS]
    buys = [m for m in mentions if m.kind is Command.BUY]
    mentioned = frozenset(m.kind for m in decisions)

    if decisions:
        clear = {m.kind for m in decisions if m.clear}
        blocking = [m for m in decisions if not m.clear and not _echoes(m, clear)]
        reasons = [r for m in decisions for r in m.reasons] + hedges
        if len(mentioned) > 1:
            reasons.append("contradiction")
        if len(clear) == 1 and not blocking and not hedges:
            if any(b.clear for b in buys):
                return Reading(Command.AMBIGUOUS, ambiguous=True, mentioned=mentioned,
                               reasons=_ordered([*courtesy, "several-commands"]))
            return Reading(clear.pop(), mentioned=mentioned,
                           reasons=_ordered([*courtesy, "decision"]))
        return Reading(Command.AMBIGUOUS, ambiguous=True, mentioned=mentioned,
                       reasons=_ordered([*courtesy, *reasons]))

    if buys:
        clear_buys = [b for b in buys if b.clear]
        counts = {(b.count, b.count_text) for b in clear_buys}
        if clear_buys and len(clear_buys) == len(buys) and len(counts) == 1 and not hedges:
            count, count_text = counts.pop()
            return Reading(Command.BUY, count=count, count_text=count_text,
                           more_text=any(s.content for s in sentences),
                           reasons=_ordered([*courtesy, "buy"]))
        return Reading(None, buy_unclear=not any(s.content for s in sentences),
                       reasons=_ordered([*courtesy, "buy-unclear",
                                         *(r for b in buys for r in b.reasons), *hedges]))

    balance = [s for s in sentences if s.balance]
    subject_balance = subject_mention is not None and subject_mention.kind is Command.BALANCE
    if balance or subject_balance:
        others = [s for s in sentences if s.content]
        if all(s.balance_clear for s in balance) and not others and not hedges:
            return Reading(Command.BALANCE, reasons=_ordered([*courtesy, "balance"]))
        return Reading(None, reasons=_ordered([*courtesy, "balance-unclear",
                                               *(m for s in balance for m in s.markers)]))
    return Reading(None, reasons=_ordered(courtesy))
