"""Cut a reply down to what its author newly wrote.

Why this matters: our quote e-mail says "reply APPROVE or REJECT", so every
quoted reply contains both words. A command counts only in the new text, so
quoted history, attribution lines, forwarded parts and signatures must go,
and a quoted keyword must never survive.

How: every line is classified (text, quote, attribution, header, signature
delimiter, mobile footer, rule, empty). History starts at the first boundary
line (an attribution such as "On … wrote:", a forward/original-message
separator, an Outlook/Japanese header block, a "-- " delimiter, a trailing
mobile footer) that comes after some new text; everything from there is cut.
An attribution before any new text (bottom-posting: "On … wrote:", quotes,
then the answer) only removes itself, and so does one with only a greeting
above it and text below its ">" quote (the greeting above, the answer
below: both are new text); a forward separator or header block
before any new text means there is no new text at all. Finally every ">" line is dropped, wherever
it is: interleaved quotes are someone else's words too.

Multilingual patterns cover the forms in the corpus (English, German, French,
Spanish, Italian, Portuguese, Dutch, Scandinavian, Polish, Russian/Ukrainian,
Chinese, Japanese). Benchmarked in ``benchmarks/corpus_report.py``; the two
maintained libraries (mail-parser-reply, email-reply-parser) agreed with
the discourse ground truth far less often, so this module uses neither.
"""

from __future__ import annotations

import re
from enum import Enum

__all__ = ["trim_reply"]


class Kind(Enum):
    """What one line of a reply is."""

    EMPTY = "e"
    TEXT = "t"
    QUOTE = "q"
    ATTRIBUTION = "a"
    HEADER = "h"
    SIG_DELIMITER = "d"
    MOBILE = "m"
    RULE = "r"


_F = re.IGNORECASE

# "On <date>, <someone> wrote:" in its many languages: an opener, anything,
# then a "wrote" verb at the end of the line.
_OPENERS = r"(?:on|at|in message|le|am|el|il|op|em|den|dnia|dňa|w dniu|på|pe|在|el día)"
_WROTE = (
    r"(?:wrote|writes|said|says|a\s+écrit|nous\s+a\s+dit|schrieb(?:en\s+sie)?|"
    r"(?:hat\s+)?geschrieben|escribió|ha\s+scritto|schreef|het\s+volgende\s+geschreven|"
    r"escreveu|skrev|napisał(?:\(a\))?|написал[аи]?|пише|写道|が書きました|は書きました|"
    r"さんは書きました|書きました)"
)
_ATTRIBUTION_PATTERNS = [
    re.compile(rf"^{_OPENERS}\s.{{0,300}}?{_WROTE}[\s:：-]*$", _F),
    re.compile(rf"^{_OPENERS}\s.{{0,300}}?{_WROTE}\s.{{0,120}}[:：]\s*$", _F),
    re.compile(rf"^.{{0,200}}\s(?:via\s.+\s)?{_WROTE}\s*[:：]\s*$", _F),
    re.compile(r"^.{0,120}\bwrote\b\s+on\b.{0,120}:\s*$", _F),
    re.compile(r"^.{0,120}\bschrieb\b\s+am\b.{0,120}:\s*$", _F),
    re.compile(r"^.{0,120}\d{4}.{0,80}<[^<>@\s]+@[^<>\s]+>\s*[:：]?\s*$"),
    re.compile(r"^.{0,120}\d{4}.{0,80}пользователь.{0,80}написал.{0,20}:\s*$", _F),
    re.compile(r"^\d{4}-\d\d-\d\d \d\d?:\d\d GMT[+-]\d\d:\d\d [\w\s.]+:?$"),
    re.compile(r"^.{0,60}\d{4}年.{0,60}(?:書きました|wrote)?.{0,20}[:：]\s*$"),
    re.compile(r"^.{1,80}さんは(?:書きました|wrote)\s*[:：]?\s*$"),
    # iPhone/iPad in Japanese: "2026/11/30 10:00、Name <a@b>のメール:"
    re.compile(r"^.{0,80}\d{4}/\d{1,2}/\d{1,2}.{0,160}のメール\s*[:：]\s*$"),
    re.compile(r"^posted by .+ on \d{2}/\d{2}/\d{4}$", _F),
    re.compile(r"^from:.{1,200}\b(?:sent|date):.{1,200}", _F),
]

_SEPARATOR_WORDS = (
    r"forwarded message|original message|reply message|forwarded e-?mail|"
    r"ursprüngliche nachricht|weitergeleitete nachricht|message transféré|message d'origine|"
    r"message original|mensaje original|mensaje reenviado|messaggio originale|messaggio inoltrato|"
    r"oorspronkelijk bericht|doorgestuurd bericht|originalmeddelande|vidarebefordrat meddelande|"
    r"opprinnelig melding|oprindelig meddelelse|videresendt meddelelse|alkuperäinen viesti|"
    r"původní zpráva|wiadomość oryginalna|oryginalna wiadomość|исходное сообщение|"
    r"пересылаемое сообщение|原始邮件|转发邮件|元のメッセージ|転送メッセージ|オリジナルメッセージ|"
    r"original-nachricht"
)
_SEPARATOR_PATTERNS = [
    re.compile(rf"^[-_=*\s]*-{{2,}}\s*(?:{_SEPARATOR_WORDS})\s*-{{2,}}", _F),
    re.compile(rf"^[-_=*\s]*(?:{_SEPARATOR_WORDS})\s*-{{2,}}", _F),
    re.compile(
        r"^(?:begin forwarded message|début du message (?:transféré|réexpédié)|"
        r"anfang der weitergeleiteten nachricht|inicio del mensaje reenviado|"
        r"início da mensagem reencaminhada)\s*[:：]",
        _F,
    ),
]

_HEADER_NAMES = (
    r"from|sent|date|to|cc|bcc|subject|reply-to|von|gesendet|an|betreff|datum|kopie|de|envoyé|"
    r"à|objet|date d'envoi|expéditeur|destinataire|répondre à|enviado|enviada em|para|asunto|"
    r"assunto|fecha|da|inviato|oggetto|data|a|van|verzonden|aan|onderwerp|från|skickat|till|"
    r"ämne|fra|sendt|til|emne|od|wysłane|wysłano|do|temat|отправлено|от|кому|тема|дата|"
    r"差出人|送信者|送信日時|日付|日時|宛先|件名|発信者|発信日時|cc|发件人|发送时间|收件人|主题"
)
_FROM_NAMES = r"from|von|de|expéditeur|da|van|från|fra|od|от|差出人|送信者|発信者|发件人"
# "\s*(?:\*\s*)?" rather than "\s*\*?\s*": the same text, but one way to match a
# run of spaces, so "From" followed by 20,000 spaces is not quadratic.
_HEADER = re.compile(rf"^[\s*>]*(?:{_HEADER_NAMES})\s*(?:\*\s*)?[:：]\s*(?:\*\s*)?\S", _F)
_FROM_HEADER = re.compile(rf"^[\s*>]*(?:{_FROM_NAMES})\s*(?:\*\s*)?[:：]\s*(?:\*\s*)?\S", _F)

_MOBILE_PATTERNS = [
    re.compile(p, _F)
    for p in (
        r"^[(<\s]*sent (?:from|via|with|by|using) .{1,80}$",
        r"^\w+ from mobile$",
        r"^from my .{1,20}$",
        r"^get (?:\[)?outlook for ",
        r"^envoyé (?:depuis|de) (?:mon|ma|yahoo)",
        r"^von meinem .+ gesendet",
        r"^diese nachricht wurde von .+ gesendet",
        r"^inviato da ",
        r"^sendt fra min",
        r"^enviado (?:do|desde|de) (?:meu|mi|o|el) ",
        r"^verzonden (?:met|vanaf) ",
        r"^verstuurd vanaf mijn",
        r"^skickat från min",
        r"^från min ",
        r"^從我的 iphone 傳送",
        r"^(?:iphone|ipad|android|スマートフォン|携帯)から送信",
        r"^sent from my .*$",
    )
]

_SIGNOFF = re.compile(r"^\s*[-~]\s?[A-Z][\w.'-]*(?:\s[\w.'-]+){0,2}\s*$")
_LIST_FOOTER_RULE = re.compile(r"^\s*_{10,}\s*$")
_RULE = re.compile(r"^\s*(?:[-_=+~#*,.ᐧ—–━─═＝＿－〜～■□◆◇★☆※・]\s*){2,}$|^\s*[ᐧ]\s*$")
#: What a Japanese or English signature block is made of, between two rules.
_SIGNATURE_LINE = re.compile(
    r"株式会社|有限会社|合同会社|\(株\)|（株）|〒|\b(?:tel|fax|phone|mobile|e-?mail|mail|url)\b"
    r"|TEL|FAX|https?://|www\.|@|\b(?:inc|ltd|llc|corp|co)\b\.?", re.IGNORECASE)
_SIG_DELIMITER = re.compile(r"^-- ?$|^--\s*$")
_QUOTE = re.compile(r"^\s*(?:>|&gt;)")
# No "[" inside the text and no "(" inside the target: each attempt then stops
# at the next bracket, so a line of 10,000 "[" is linear (it took minutes).
_MARKDOWN_LINK = re.compile(r"\[([^\[\]]+)\]\([^()]*\)")
_LEADING_NOISE = re.compile(r"^[\s>*\-]+")


def _plain(line: str) -> str:
    """The line without quote marks, bullets, emphasis and markdown links."""
    return _LEADING_NOISE.sub("", _MARKDOWN_LINK.sub(r"\1", line)).strip().strip("*").strip()


def _is_attribution(line: str) -> bool:
    plain = _plain(line)
    if not plain or len(plain) > 400:
        return False
    if any(p.search(plain) for p in _SEPARATOR_PATTERNS):
        return True
    return any(p.search(plain) for p in _ATTRIBUTION_PATTERNS)


def _classify(line: str) -> Kind:
    """The kind of one line, the most specific first."""
    stripped = line.strip()
    if not stripped:
        return Kind.EMPTY
    if _SIG_DELIMITER.match(line.rstrip("\n")) and stripped == "--":
        return Kind.SIG_DELIMITER
    if _QUOTE.match(line):
        return Kind.ATTRIBUTION if _is_attribution(line) else Kind.QUOTE
    if _RULE.match(line):
        return Kind.RULE
    plain = _plain(line)
    if _SIGNOFF.match(line) or any(p.search(plain) for p in _MOBILE_PATTERNS):
        return Kind.MOBILE
    if _is_attribution(line):
        return Kind.ATTRIBUTION
    if _HEADER.match(line):
        return Kind.HEADER
    return Kind.TEXT


_ATTRIBUTION_START = re.compile(rf"^(?:{_OPENERS})\s|^\d|<$|^\w+\.?, \d", _F)
_WROTE_ALONE = re.compile(rf"^{_WROTE}\s*[:：]?$", _F)
_ADDRESS_IN_LINE = re.compile(r"<[^<>\s]+@[^<>\s]+>|<$")
_SPACE_IN_BRACKETS = re.compile(r"<\s+|\s+>")


def _join_wrapped_attributions(lines: list[str], kinds: list[Kind]) -> None:
    """Mark "On … <\\nfoo@bar> wrote:" wrapped over up to five lines as attribution.

    Mail programs wrap long attribution lines, even inside the address. Only a
    line that can start an attribution (an opener word, a date) is joined with
    the lines below it, so ordinary text above an attribution is never eaten.
    """
    for i, kind in enumerate(kinds):
        if kind not in (Kind.TEXT, Kind.QUOTE):
            continue
        strong = bool(_ATTRIBUTION_START.search(_plain(lines[i])))
        if not strong and not _ADDRESS_IN_LINE.search(lines[i]):
            continue
        for span in range(2, 6):
            if i + span > len(lines) or kinds[i + span - 1] == Kind.EMPTY:
                continue
            if _is_attribution(_joined(lines[i : i + span])) and (
                strong or not _is_attribution(_joined(lines[i + 1 : i + span]))
            ):
                end = i + span
                while end < len(lines) and _WROTE_ALONE.match(_plain(lines[end])):
                    end += 1
                for j in range(i, end):
                    kinds[j] = Kind.ATTRIBUTION
                break


def _joined(lines: list[str]) -> str:
    joined = " ".join(_plain(x) for x in lines if x.strip())
    return _SPACE_IN_BRACKETS.sub(lambda m: m.group().strip(), joined)


def _header_block_at(lines: list[str], kinds: list[Kind], i: int) -> bool:
    """Does an embedded header block (From:/Sent:/To:/Subject: …) start at line i?

    Two header lines suffice when the first names the sender (From:, Von:,
    差出人: …); otherwise three, so that a "To: John" in a letter is not taken
    for history.
    """
    window = [j for j in range(i, min(len(lines), i + 8)) if kinds[j] != Kind.EMPTY][:5]
    headers = sum(1 for j in window if kinds[j] == Kind.HEADER)
    needed = 2 if _FROM_HEADER.match(lines[i]) else 3
    return kinds[i] == Kind.HEADER and headers >= needed


def _only_footer_after(kinds: list[Kind], i: int) -> bool:
    """True when nothing but footers, quotes and history follows line i."""
    return all(k != Kind.TEXT for k in kinds[i + 1 :])


#: A line that only greets: what bottom-posters write above the quote.
_GREETING_LINE = re.compile(
    r"^(?:(?:hi|hello|hey|dear|good\s+(?:morning|afternoon|evening)|greetings)\b[^.!?]{0,40}"
    r"|.{0,30}(?:様|さま|御中|各位)|(?:大変|いつも)?お世話にな(?:って|り)(?:おります|ます)。?"
    r"|お疲れ(?:様|さま)です。?|.{0,30}(?:です|と申します)。?)$", re.IGNORECASE)


def _answer_below_quote(lines: list[str], kinds: list[Kind], i: int) -> bool:
    """Is the text above the attribution at line i only a greeting, with a ">"
    quote and then text below it?

    "Hi,\n\nOn … wrote:\n> …\nAPPROVE": a bottom-poster greets above the quote
    and answers below it; both are new text. When the text above is more than a
    greeting it is a top-posted answer, and everything from the attribution on
    is history, as for any top-posted reply.
    """
    above = [lines[j].strip() for j in range(i) if kinds[j] == Kind.TEXT]
    if not above or len(above) > 3 or not all(_GREETING_LINE.match(x) for x in above):
        return False
    j = i
    while j < len(kinds) and kinds[j] == Kind.ATTRIBUTION:
        j += 1
    while j < len(kinds) and kinds[j] == Kind.EMPTY:
        j += 1
    if j >= len(kinds) or kinds[j] != Kind.QUOTE:
        return False
    while j < len(kinds) and kinds[j] in (Kind.QUOTE, Kind.EMPTY):
        j += 1
    return j < len(kinds) and kinds[j] == Kind.TEXT


def _history_start(lines: list[str], kinds: list[Kind]) -> int:
    """Index of the first line of history/signature after new text, or len(lines)."""
    seen_text = False
    for i, kind in enumerate(kinds):
        if kind == Kind.TEXT:
            seen_text = True
            continue
        if not seen_text:
            continue
        if kind == Kind.ATTRIBUTION and _answer_below_quote(lines, kinds, i):
            for j in range(i, len(kinds)):  # the attribution goes with its quote
                if kinds[j] != Kind.ATTRIBUTION:
                    break
                kinds[j] = Kind.QUOTE
            continue
        if kind in (Kind.ATTRIBUTION, Kind.SIG_DELIMITER):
            return i
        if kind == Kind.HEADER and _header_block_at(lines, kinds, i):
            return i
        if kind == Kind.RULE and _rule_opens_history(lines, kinds, i):
            return i
        if kind == Kind.MOBILE and _only_footer_after(kinds, i):
            return i
    return len(lines)


def _history_or_nothing_after(lines: list[str], kinds: list[Kind], i: int) -> bool:
    """After line i: only footers and quotes, or history (an attribution, a header block)."""
    following = [j for j in range(i + 1, len(lines)) if kinds[j] != Kind.EMPTY][:2]
    if not following or _only_footer_after(kinds, i):
        return True
    j = following[0]
    if kinds[j] == Kind.RULE and len(following) > 1:
        j = following[1]
    return kinds[j] == Kind.ATTRIBUTION or _header_block_at(lines, kinds, j)


def _rule_opens_history(lines: list[str], kinds: list[Kind], i: int) -> bool:
    """A "-----" / "_____" line above a header block or attribution, a list
    footer, or a signature block.

    Mailman and Outlook put a long line of underscores above their footer or
    the quoted message; a long underscore line is never part of a reply.
    Japanese signatures sit between two rules (━━━, ＝＝＝, ----) and name a
    company, a postcode or a phone number.
    """
    if _LIST_FOOTER_RULE.match(lines[i]):
        return True
    following = [j for j in range(i + 1, len(lines)) if kinds[j] != Kind.EMPTY][:1]
    if not following:
        return False
    j = following[0]
    return kinds[j] == Kind.ATTRIBUTION or _header_block_at(lines, kinds, j) \
        or _signature_block_at(lines, kinds, i)


def _signature_block_at(lines: list[str], kinds: list[Kind], i: int) -> bool:
    """Lines i+1.. up to the next rule (at most 10) are a signature, and nothing
    but history follows it."""
    block = []
    for j in range(i + 1, min(len(lines), i + 12)):
        if kinds[j] == Kind.RULE:
            return bool(block) and any(_SIGNATURE_LINE.search(x) for x in block) \
                and _history_or_nothing_after(lines, kinds, j)
        if kinds[j] != Kind.EMPTY:
            block.append(lines[j])
    return False


def _drop_leading_history(lines: list[str], kinds: list[Kind]) -> tuple[list[str], list[Kind]]:
    """Before any new text, drop header blocks and attributions (bottom-posting)."""
    keep_lines, keep_kinds = [], []
    seen_text = False
    in_block = False
    for i, (line, kind) in enumerate(zip(lines, kinds, strict=True)):
        if kind == Kind.TEXT and not in_block:
            seen_text = True
        if not seen_text:
            if kind == Kind.HEADER and (in_block or _header_block_at(lines, kinds, i)):
                in_block = True
                continue
            if in_block and kind == Kind.TEXT:
                if _next_is_header(kinds, i):
                    continue  # a header value wrapped onto the next line
                in_block = False
                seen_text = True
            if kind in (Kind.ATTRIBUTION, Kind.RULE, Kind.SIG_DELIMITER):
                continue
        keep_lines.append(line)
        keep_kinds.append(kind)
    return keep_lines, keep_kinds


def _next_is_header(kinds: list[Kind], i: int) -> bool:
    following = [k for k in kinds[i + 1 : i + 3] if k != Kind.EMPTY][:1]
    return following == [Kind.HEADER]


def _starts_with_forward(lines: list[str], kinds: list[Kind]) -> bool:
    """A message that opens with "-----Original Message-----" or a From:/Sent: block.

    Nothing above the forwarded part means the sender wrote nothing new; the
    forwarded text (perhaps our own "reply APPROVE or REJECT") must not be
    read as theirs. The discourse corpus keeps such a forwarded body; we
    deliberately do not.
    """
    first = next((i for i, k in enumerate(kinds) if k != Kind.EMPTY), None)
    if first is None:
        return False
    plain = _plain(lines[first])
    if any(p.search(plain) for p in _SEPARATOR_PATTERNS):
        return True
    return kinds[first] == Kind.HEADER and _header_block_at(lines, kinds, first)


def _strip_footer(lines: list[str], kinds: list[Kind]) -> list[str]:
    """Drop quotes everywhere, and trailing empty lines, rules and footers."""
    kept = []
    for line, kind in zip(lines, kinds, strict=True):
        if kind == Kind.QUOTE or (kind == Kind.EMPTY and kept and kept[-1][1] == Kind.EMPTY):
            continue  # a removed quote leaves one blank line, not several
        kept.append((line, kind))
    while kept and kept[-1][1] in (Kind.EMPTY, Kind.RULE, Kind.MOBILE, Kind.SIG_DELIMITER):
        kept.pop()
    return [line for line, _ in kept]


#: Only the first lines are examined: classifying costs up to ~0.2 ms a line, and
#: a 25 MB body of short lines must not hold the pipeline for minutes. New text
#: is at the top; nobody types 5,000 lines above the history. The caller keeps
#: the full text anyway.
MAX_LINES = 5000


def _normalise(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    return [line.rstrip() for line in text.split("\n", MAX_LINES)[:MAX_LINES]]


def trim_reply(text: str) -> str:
    """The new text of a reply: no quoted history, attributions, forwards or signature.

    Returns "" for a reply that is only quotation. Never raises on str input.
    Looks at the first ``MAX_LINES`` lines only.
    """
    if not text or not text.strip():
        return ""
    lines = _normalise(text)
    kinds = [_classify(line) for line in lines]
    _join_wrapped_attributions(lines, kinds)
    if _starts_with_forward(lines, kinds):
        return ""
    lines, kinds = _drop_leading_history(lines, kinds)
    cut = _history_start(lines, kinds)
    return "\n".join(_strip_footer(lines[:cut], kinds[:cut])).strip()
