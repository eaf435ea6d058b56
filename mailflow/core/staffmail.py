"""Staff commands in a staff member's mail (DESIGN §3 rule 8), without I/O.

A staff member replying to a staff notice writes to the client; lines that are
staff commands act instead of being sent:

    QUOTE n [DUE YYYY-MM-DD | MM/DD | 12月10日] [note]
    COMPLETE [note]
    NOTE text                      (internal: never sent)
    ASSIGN name

A command line starts with its keyword in capitals (full-width letters too),
optionally followed by a colon: "Note that the banner…" in a sentence to the
client is text, "NOTE: called the client" is a command.  A command line that
is malformed is an error naming the exact problem, never text sent to the
client: the staff member meant a command.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class StaffAction(StrEnum):
    QUOTE = "QUOTE"
    COMPLETE = "COMPLETE"
    NOTE = "NOTE"
    ASSIGN = "ASSIGN"


@dataclass(frozen=True)
class StaffCommand:
    action: StaffAction
    credits: int | None = None   # QUOTE
    due: date | None = None      # QUOTE, when given
    text: str | None = None      # QUOTE/COMPLETE note, NOTE text, ASSIGN name
    line: str = ""


@dataclass(frozen=True)
class StaffCommandError:
    line: str
    problem: str


@dataclass(frozen=True)
class StaffMail:
    """A staff member's new text read: the commands, the errors, and the text
    for the client (everything that is not a command line)."""

    commands: tuple[StaffCommand, ...] = ()
    errors: tuple[StaffCommandError, ...] = ()
    message: str = ""

    @property
    def has_commands(self) -> bool:
        return bool(self.commands or self.errors)


_KEYWORD = re.compile(r"^\s*(QUOTE|COMPLETE|NOTE|ASSIGN)(?=$|[\s:])\s*:?\s*(.*)$")
_DATE_ISO = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")
_DATE_SHORT = re.compile(r"^(\d{1,2})/(\d{1,2})$")
_DATE_JA = re.compile(r"^(?:(\d{4})年)?(\d{1,2})月(\d{1,2})日(?:[(（][^)）]*[)）])?$")
DATE_FORMATS = "YYYY-MM-DD, MM/DD or 12月10日"
USAGE = {
    StaffAction.QUOTE: "QUOTE n [DUE YYYY-MM-DD] [note]",
    StaffAction.COMPLETE: "COMPLETE [note]",
    StaffAction.NOTE: "NOTE text",
    StaffAction.ASSIGN: "ASSIGN name",
}


class _Problem(ValueError):
    pass


def _normal(line: str) -> str:
    """Full-width letters, digits and spaces as ASCII (ＱＵＯＴＥ　３ → QUOTE 3)."""
    return unicodedata.normalize("NFKC", line)


def keyword_of(line: str) -> StaffAction | None:
    """The staff command a line starts with, if any."""
    match = _KEYWORD.match(_normal(line))
    return StaffAction(match.group(1)) if match else None


def parse_date(text: str, today: date) -> date:
    """A due date as staff write it: 2026-12-10 (or 2026/12/10), 12/10 and
    12月10日 (the next such day from today: December in November is this
    year, January in December the next), 2026年12月10日."""
    text = _normal(text).strip()
    if match := _DATE_ISO.match(text):
        year, month, day = (int(g) for g in match.groups())
    elif (match := _DATE_SHORT.match(text)) or (match := _DATE_JA.match(text)):
        groups = match.groups()
        year = int(groups[0]) if len(groups) == 3 and groups[0] else None
        month, day = int(groups[-2]), int(groups[-1])
        if year is None:
            year = today.year
            try:
                if date(year, month, day) < today:
                    year += 1
            except ValueError:
                pass  # reported below
    else:
        raise _Problem(f"{text!r} is not a date ({DATE_FORMATS})")
    try:
        return date(year, month, day)
    except ValueError:
        raise _Problem(f"{text!r} is not a date: no such day") from None


def _looks_like_date(token: str) -> bool:
    token = _normal(token)
    return bool(_DATE_ISO.match(token) or _DATE_SHORT.match(token) or _DATE_JA.match(token))


def _parse_quote(rest: str, today: date) -> tuple[int, date | None, str | None]:
    words = rest.split()
    if not words:
        raise _Problem(f"QUOTE needs the credits: {USAGE[StaffAction.QUOTE]}")
    count = words.pop(0)
    if not count.isdecimal() or not count.isascii():
        raise _Problem(f"{count!r} is not a whole number of credits: "
                       f"{USAGE[StaffAction.QUOTE]}")
    credits = int(count)
    if credits < 1:
        raise _Problem("QUOTE needs at least 1 credit")
    due = None
    if words and words[0].upper().rstrip(":") in ("DUE", "BY"):
        keyword = words.pop(0)
        if not words:
            raise _Problem(f"{keyword} needs a date ({DATE_FORMATS})")
        due = parse_date(words.pop(0), today)
    elif words and _looks_like_date(words[0]):
        due = parse_date(words.pop(0), today)
    note = " ".join(words) or None
    return credits, due, note


def parse_command(line: str, today: date) -> StaffCommand | StaffCommandError | None:
    """One line: a command, a malformed command (the exact problem), or None
    (not a command: text for the client)."""
    match = _KEYWORD.match(_normal(line))
    if match is None:
        return None
    action, rest = StaffAction(match.group(1)), match.group(2).strip()
    original = line.strip()
    try:
        if action is StaffAction.QUOTE:
            credits, due, note = _parse_quote(rest, today)
            return StaffCommand(action, credits=credits, due=due, text=note, line=original)
        if action in (StaffAction.NOTE, StaffAction.ASSIGN) and not rest:
            raise _Problem(f"{action.value} needs "
                           f"{'a text' if action is StaffAction.NOTE else 'a name'}: "
                           f"{USAGE[action]}")
        return StaffCommand(action, text=rest or None, line=original)
    except _Problem as problem:
        return StaffCommandError(original, str(problem))


def read_staff_mail(text: str, today: date) -> StaffMail:
    """Split a staff member's new text into commands and the text for the client."""
    commands: list[StaffCommand] = []
    errors: list[StaffCommandError] = []
    kept: list[str] = []
    for line in text.splitlines():
        found = parse_command(line, today)
        if found is None:
            kept.append(line.rstrip())
        elif isinstance(found, StaffCommandError):
            errors.append(found)
        else:
            commands.append(found)
    message = "\n".join(kept).strip("\n")
    message = re.sub(r"\n{3,}", "\n\n", message)
    return StaffMail(commands=tuple(commands), errors=tuple(errors),
                     message=message if message.strip() else "")


def command_lines(text: str) -> list[str]:
    """The lines of TEXT that are staff commands (well-formed or not): what a
    non-staff sender must not get acted on."""
    return [line.strip() for line in text.splitlines() if keyword_of(line) is not None]

