"""Staff commands in a staff member's mail: one line per case."""

from __future__ import annotations

from datetime import date

import pytest

from mailflow.core.staffmail import (
    StaffAction,
    StaffCommand,
    StaffCommandError,
    command_lines,
    parse_command,
    parse_date,
    read_staff_mail,
)

TODAY = date(2026, 11, 29)
Q, C, N, A = StaffAction.QUOTE, StaffAction.COMPLETE, StaffAction.NOTE, StaffAction.ASSIGN


def cmd(action, credits=None, due=None, text=None):
    return (action, credits, due, text)


COMMANDS = [
    ("QUOTE 3", cmd(Q, 3)),
    ("QUOTE 3 DUE 2026-12-10", cmd(Q, 3, date(2026, 12, 10))),
    ("QUOTE 3 DUE 2026/12/10", cmd(Q, 3, date(2026, 12, 10))),
    ("QUOTE 3 DUE 12/10", cmd(Q, 3, date(2026, 12, 10))),
    ("QUOTE 3 DUE 1/15", cmd(Q, 3, date(2027, 1, 15))),  # January: next year
    ("QUOTE 3 DUE 11/29", cmd(Q, 3, date(2026, 11, 29))),  # today is still this year
    ("QUOTE 3 DUE 12月10日", cmd(Q, 3, date(2026, 12, 10))),
    ("QUOTE 3 DUE 2027年1月5日", cmd(Q, 3, date(2027, 1, 5))),
    ("QUOTE 3 DUE 12月10日（木） 文言の修正を含みます", cmd(Q, 3, date(2026, 12, 10),
                                                   "文言の修正を含みます")),
    ("QUOTE 2 DUE 2026-12-10 Includes one round of changes.",
     cmd(Q, 2, date(2026, 12, 10), "Includes one round of changes.")),
    ("QUOTE 2 2026-12-10", cmd(Q, 2, date(2026, 12, 10))),  # DUE may be left out
    ("QUOTE 2 due 12/10", cmd(Q, 2, date(2026, 12, 10))),
    ("QUOTE 2 Includes the footer too", cmd(Q, 2, None, "Includes the footer too")),
    ("QUOTE: 4", cmd(Q, 4)),
    ("  QUOTE 4", cmd(Q, 4)),
    ("ＱＵＯＴＥ　３　ＤＵＥ　１２／１０", cmd(Q, 3, date(2026, 12, 10))),  # full width
    ("COMPLETE", cmd(C)),
    ("COMPLETE The new banner is live.", cmd(C, text="The new banner is live.")),
    ("COMPLETE: 本番サイトに反映しました。", cmd(C, text="本番サイトに反映しました。")),
    ("NOTE called the client, they want blue", cmd(N, text="called the client, they want blue")),
    ("NOTE: 電話で確認済み", cmd(N, text="電話で確認済み")),
    ("ASSIGN Tanaka", cmd(A, text="Tanaka")),
    ("ASSIGN: sato", cmd(A, text="sato")),
]


@pytest.mark.parametrize(("line", "expected"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_lines_parse(line, expected):
    found = parse_command(line, TODAY)
    assert isinstance(found, StaffCommand), found
    assert (found.action, found.credits, found.due, found.text) == expected


ERRORS = [
    ("QUOTE", "QUOTE needs the credits"),
    ("QUOTE two", "'two' is not a whole number of credits"),
    ("QUOTE 2.5", "'2.5' is not a whole number of credits"),
    ("QUOTE -1", "'-1' is not a whole number of credits"),
    ("QUOTE 0", "at least 1 credit"),
    ("QUOTE 3 DUE", "DUE needs a date"),
    ("QUOTE 3 DUE tomorrow", "'tomorrow' is not a date"),
    ("QUOTE 3 DUE 2026-02-30", "'2026-02-30' is not a date: no such day"),
    ("QUOTE 3 DUE 13/40", "'13/40' is not a date: no such day"),
    ("QUOTE 3 DUE 2月30日", "'2月30日' is not a date: no such day"),
    ("QUOTE 3 DUE 10.12.", "'10.12.' is not a date"),
    ("NOTE", "NOTE needs a text"),
    ("ASSIGN", "ASSIGN needs a name"),
    ("ASSIGN:", "ASSIGN needs a name"),
]


@pytest.mark.parametrize(("line", "problem"), ERRORS, ids=[e[0] for e in ERRORS])
def test_malformed_commands_name_the_exact_problem(line, problem):
    found = parse_command(line, TODAY)
    assert isinstance(found, StaffCommandError)
    assert problem in found.problem and found.line == line.strip()


TEXT = [
    "Hello, the banner is ready.",
    "Note that the banner is ready.",     # a sentence, not the keyword in capitals
    "Quote 3 credits is our price.",
    "Complete list attached.",
    "NOTES from the meeting",             # another word
    "QUOTED above",
    "ASSIGNMENT due",
    "見積りは3クレジットです。",
    "> QUOTE 3",                          # quoted (trimming removes these anyway)
    "",
]


@pytest.mark.parametrize("line", TEXT, ids=[t or "empty" for t in TEXT])
def test_ordinary_lines_are_text(line):
    assert parse_command(line, TODAY) is None


def test_a_mail_splits_into_commands_and_the_text_for_the_client():
    mail = read_staff_mail("Hello Hanako,\n\nQUOTE 3 DUE 12/10\n\nThe banner needs a new"
                           " photo.\nNOTE asked twice already\n\n\n\nSato\n", TODAY)
    assert [c.action for c in mail.commands] == [Q, N]
    assert mail.errors == ()
    assert mail.message == "Hello Hanako,\n\nThe banner needs a new photo.\n\nSato"


def test_a_mail_of_commands_only_has_no_text_for_the_client():
    mail = read_staff_mail("COMPLETE\n\n", TODAY)
    assert mail.message == "" and mail.has_commands


def test_errors_are_collected_with_the_commands():
    mail = read_staff_mail("QUOTE 3 DUE 2/30\nASSIGN Sato\nThanks", TODAY)
    assert [e.line for e in mail.errors] == ["QUOTE 3 DUE 2/30"]
    assert [c.action for c in mail.commands] == [A] and mail.message == "Thanks"


def test_command_lines_finds_what_a_stranger_must_not_run():
    assert command_lines("Hi\nCOMPLETE\nQUOTE x\nNote that\n") == ["COMPLETE", "QUOTE x"]


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-10", date(2026, 12, 10)),
    ("１２月１０日", date(2026, 12, 10)),
    ("11/28", date(2027, 11, 28)),  # yesterday's date: next year
    ("2/29", None),                 # 2027 has no 29 February
])
def test_parse_date(text, expected):
    if expected is None:
        with pytest.raises(ValueError, match="no such day"):
            parse_date(text, TODAY)
    else:
        assert parse_date(text, TODAY) == expected
