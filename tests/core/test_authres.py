"""The DMARC verdict our trusted server wrote, from every Authentication-Results
header of a message (RFC 8601, parsed by `authres`), one line per case."""

from __future__ import annotations

import pytest

from mailflow.core.authres import FAIL, UNREADABLE, dmarc_verdict, forbids_action
from mailflow.core.message import parse_message

OURS = "mx.agency.example"

CASES = [
    # (id, every Authentication-Results value, topmost first; expected verdict)
    ("ours-fail", [f"{OURS}; dmarc=fail (p=reject dis=none) header.from=acme.example"], FAIL),
    ("ours-pass", [f"{OURS}; spf=pass smtp.mailfrom=acme.example; dmarc=pass"
                   " header.from=acme.example"], "pass"),
    ("ours-none", [f"{OURS}; dmarc=none header.from=acme.example"], "none"),
    ("ours-temperror", [f"{OURS}; dmarc=temperror header.from=acme.example"], "temperror"),
    ("ours-no-dmarc-result", [f"{OURS}; spf=pass smtp.mailfrom=acme.example"], None),
    ("ours-nothing-checked", [f"{OURS}; none"], None),
    ("no-headers", [], None),
    ("foreign-only", ["mx.attacker.example; dmarc=fail"], None),
    ("foreign-id-containing-ours", [f"evil.{OURS}; dmarc=fail"], None),
    ("authserv-id-case", ["MX.Agency.EXAMPLE; dmarc=fail header.from=acme.example"], FAIL),
    ("with-version", [f"{OURS} 1; dmarc=fail header.from=acme.example"], FAIL),
    ("result-case", [f"{OURS}; DMARC=FAIL header.from=acme.example"], FAIL),
    ("folded", [f"{OURS};\r\n\tspf=pass smtp.mailfrom=acme.example;\r\n"
                "\tdmarc=fail (p=reject) header.from=acme.example"], FAIL),
    # (a) an untrusted hop's header above ours must not hide our fail
    ("untrusted-above-trusted-fail", ["relay.acme.example; dmarc=pass header.from=acme.example",
                                      f"{OURS}; dmarc=fail header.from=acme.example"], FAIL),
    ("untrusted-fail-below-trusted-pass", [f"{OURS}; dmarc=pass header.from=acme.example",
                                           "evil.example; dmarc=fail"], "pass"),
    # (b) a property value is not a result
    ("property-value-says-pass", [f"{OURS}; spf=pass smtp.mailfrom=dmarc=pass@evil.example;"
                                  " dmarc=fail header.from=acme.example"], FAIL),
    ("header-from-says-pass", [f"{OURS}; dmarc=fail header.from=dmarc=pass"], FAIL),
    ("only-a-property-mentions-dmarc", [f"{OURS}; spf=pass smtp.mailfrom=dmarc=fail@x.example"],
     None),
    # (c) a comment is not a result
    ("comment-says-pass-before-fail", [f"{OURS}; spf=pass (relay said dmarc=pass)"
                                       " smtp.mailfrom=acme.example; dmarc=fail"], FAIL),
    ("comment-after-authserv-id", [f"{OURS} (relay said dmarc=pass); dmarc=fail"], FAIL),
    ("comment-says-fail", [f"{OURS}; dmarc=pass (not dmarc=fail) header.from=acme.example"],
     "pass"),
    # a fail in any trusted header wins
    ("two-trusted-fail-wins", [f"{OURS}; dmarc=pass header.from=acme.example",
                               f"{OURS}; dmarc=fail header.from=acme.example"], FAIL),
    ("two-results-one-header", [f"{OURS}; dmarc=pass; dmarc=fail"], FAIL),
    # what authres cannot parse
    ("untrusted-unparsable", ["evil.example (unclosed; dmarc=fail", f"{OURS}; dmarc=pass"],
     "pass"),
    ("trusted-unparsable", [f"{OURS}; dmarc=pass (unclosed comment"], UNREADABLE),
    ("trusted-unparsable-after-comment", [f"(note) {OURS}; spf=pass ==="], UNREADABLE),
    ("trusted-unparsable-beside-fail", [f"{OURS}; ===", f"{OURS}; dmarc=fail"], FAIL),
    ("microsoft-without-authserv-id", ["spf=pass (sender IP is 192.0.2.1) smtp.mailfrom="
                                       "acme.example; dmarc=fail action=none"], None),
    ("utf8-property-value", [f"{OURS}; dmarc=fail header.from=例え.jp"], FAIL),
]


@pytest.mark.parametrize(("values", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_dmarc_verdict(values, expected):
    assert dmarc_verdict(values, OURS) == expected


@pytest.mark.parametrize(("values", "forbids"), [
    ([f"{OURS}; dmarc=fail"], True),
    ([f"{OURS}; dmarc=pass (broken"], True),
    ([f"{OURS}; dmarc=pass"], False),
    ([f"{OURS}; dmarc=permerror"], False),
    (["evil.example; dmarc=fail"], False),
], ids=["fail", "unreadable", "pass", "permerror", "untrusted-fail"])
def test_forbids_action(values, forbids):
    assert forbids_action(values, OURS) is forbids
    assert forbids_action(values, None) is False  # no trusted server configured


def test_text_with_one_header_per_line_is_read_like_a_list():
    text = f"relay.example; dmarc=pass\n{OURS};\n\tdmarc=fail header.from=acme.example"
    assert dmarc_verdict(text, OURS) == FAIL


def test_a_parsed_message_keeps_every_header_not_only_the_first():
    raw = (b"Authentication-Results: relay.acme.example; dmarc=pass\r\n"
           b"Authentication-Results: mx.agency.example;\r\n"
           b"\tspf=pass smtp.mailfrom=acme.example;\r\n"
           b"\tdmarc=fail (p=reject) header.from=acme.example\r\n"
           b"From: a@acme.example\r\nSubject: APPROVE\r\n\r\nAPPROVE\r\n")
    msg = parse_message(raw)
    assert len(msg.authentication_results) == 2
    assert dmarc_verdict(msg.authentication_results, OURS) == FAIL
