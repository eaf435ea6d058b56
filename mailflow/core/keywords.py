"""Find the client's command in a reply (DESIGN §3 step 3).

A command is a keyword that is the *first word* of the reply's new text
(already trimmed by :func:`mailflow.core.trim.trim_reply`) or the whole
subject once reply prefixes and our ``[REQ-n]`` tag are removed. Anything
else (a keyword later in a sentence, in quoted history) is not a command: the
reply is a comment for staff. Text is NFKC-normalised and case-folded, so
full-width ``ＡＰＰＲＯＶＥ`` and ``approve`` both count.

Decisions:

* ``APPROVED`` / ``REJECTED`` count like ``APPROVE`` / ``REJECT``: people answer
  "Approved." and mean it; the word is unambiguous.
* Japanese has no spaces, so a first line that *starts* with 承認 / 却下 /
  拒否 / 不承認 / 残高 counts when the keyword is followed by the end of the
  line, punctuation, a space or a polite suffix (します, いたします, です,
  お願いします …). 不承認 is checked before 承認: it is a rejection.
* Both an approval and a rejection word in the first line or the subject (or
  one in each) is :attr:`Command.AMBIGUOUS`: nothing happens and the client
  is asked which one they meant. A decision beats ``BALANCE``.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

__all__ = ["Command", "detect_command", "strip_subject"]


class Command(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    BALANCE = "balance"
    AMBIGUOUS = "ambiguous"


_ENGLISH = {
    "approve": Command.APPROVE,
    "approved": Command.APPROVE,
    "reject": Command.REJECT,
    "rejected": Command.REJECT,
    "balance": Command.BALANCE,
}
# Longest first: 不承認 must win over 承認.
_JAPANESE = (
    ("不承認", Command.REJECT),
    ("承認", Command.APPROVE),
    ("却下", Command.REJECT),
    ("拒否", Command.REJECT),
    ("残高", Command.BALANCE),
)
_POLITE_SUFFIX = (
    r"(?:いたします|致します|します|します|です|でお願いします|をお願いします|お願いします|"
    r"お願い致します|願います|を希望します|で|を確認|を教えて|確認|照会)"
)
_JAPANESE_START = re.compile(
    r"^(" + "|".join(word for word, _ in _JAPANESE) + r")"
    r"(?=$|[\s、。,.!?！？・:：)）」』]|" + _POLITE_SUFFIX + ")"
)
_FIRST_WORD = re.compile(r"^[\W_]*([a-z]+)\b")
_ENGLISH_WORDS = re.compile(r"\b(approved?|reject(?:ed)?)\b")
_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|fw|aw|wg|sv|vs|tr|rv|antw|odp|返信|転送|回复|答复|转发)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*|\[[^\]]*\]\s*)",
    re.IGNORECASE,
)


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def strip_subject(subject: str) -> str:
    """Subject without Re:/Fwd:/返信: prefixes and bracketed tags like ``[REQ-12]``."""
    text = _normalise(subject).strip()
    while True:
        stripped = _SUBJECT_PREFIX.sub("", text, count=1)
        if stripped == text:
            return text.strip()
        text = stripped


def _first_line(text: str) -> str:
    for line in _normalise(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _leading_keyword(line: str) -> Command | None:
    """The command that ``line`` starts with (English first word or Japanese prefix)."""
    japanese = _JAPANESE_START.match(line)
    if japanese:
        return dict(_JAPANESE)[japanese.group(1)]
    english = _FIRST_WORD.match(line)
    if english:
        return _ENGLISH.get(english.group(1))
    return None


def _subject_keyword(subject: str) -> Command | None:
    """The command when the cleaned subject is the keyword alone (punctuation allowed)."""
    core = strip_subject(subject).strip(" \t.。!！?？、,")
    if not core:
        return None
    found = _leading_keyword(core)
    if found is None:
        return None
    words = re.findall(r"\w+", core)
    if len(words) == 1 or _JAPANESE_START.match(core):
        return found
    return None


def _decisions_in(line: str) -> set[Command]:
    """Every approve/reject word in ``line``: used to spot "APPROVE … REJECT"."""
    found = {_ENGLISH[w] for w in _ENGLISH_WORDS.findall(line)}
    without_negated = line.replace("不承認", "")
    if "不承認" in line or "却下" in line or "拒否" in line:
        found.add(Command.REJECT)
    if "承認" in without_negated:
        found.add(Command.APPROVE)
    return found


def detect_command(new_text: str, subject: str) -> Command | None:
    """The command in a reply's new text or subject, or None for a comment."""
    first_line = _first_line(new_text)
    candidates = [c for c in (_leading_keyword(first_line), _subject_keyword(subject)) if c]
    if not candidates:
        return None
    decisions = {c for c in candidates if c is not Command.BALANCE}
    if decisions:
        decisions |= _decisions_in(first_line)
        if len(decisions) > 1:
            return Command.AMBIGUOUS
        return decisions.pop()
    return Command.BALANCE
