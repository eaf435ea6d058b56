"""The kinds table (tests/inbound/kinds.py) through the pure classifier."""

import pytest

from mailflow.core.autoreply import (
    AutomaticKind,
    classify_automatic,
    list_senders,
    vacation_subject,
)
from mailflow.core.message import parse_message
from tests.inbound.kinds import CASES, OWN, build


def kind_of(raw: bytes) -> str:
    found = classify_automatic(parse_message(raw), own_address=OWN)
    return "person" if found is None else found.kind.value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kind(case):
    assert kind_of(case.raw) == case.expected


def test_table_is_broad():
    kinds = [c.expected for c in CASES]
    assert len(CASES) >= 120
    assert {k: kinds.count(k) for k in set(kinds)}["auto_reply"] >= 60


@pytest.mark.parametrize(("headers", "sender", "expected"), [
    ("X-Original-From: tanaka@acme.example\n", "'Tanaka' via Web <web@googlegroups.com>",
     ["web@googlegroups.com", "tanaka@acme.example"]),
    ("X-Original-From: =?UTF-8?B?55Sw5Lit?= <Tanaka@Acme.example>\n", "web@lists.example",
     ["web@lists.example", "tanaka@acme.example"]),
    ("Reply-To: tanaka@acme.example\nList-Id: <web.lists.example>\n",
     "Tanaka via Web <web@lists.example>", ["web@lists.example", "tanaka@acme.example"]),
    ("List-Id: <web.lists.example>\n", "tanaka@acme.example", ["tanaka@acme.example"]),
])
def test_list_senders(headers, sender, expected):
    msg = parse_message(build(headers=headers, sender=sender))
    assert list_senders(msg) == expected


@pytest.mark.parametrize(("subject", "expected"), [
    ("Out of office next week?", True), ("Re: [REQ-1] 来週は不在です", True),
    ("自動返信: Re: x", True), ("Re: [REQ-1] Banner", False), ("バナーの差し替え", False),
])
def test_vacation_subject_is_a_sign(subject, expected):
    assert vacation_subject(subject) is expected


def test_list_kind_is_not_never_a_person():
    from mailflow.core.autoreply import NEVER_A_PERSON
    assert AutomaticKind.LIST not in NEVER_A_PERSON
