"""Every outgoing template, in both languages, rendered from realistic contexts.

`CONTEXTS` doubles as the contract: the keys each template needs on top of
`BASE` (client, support, balance, now).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from mailflow.render import (
    Renderer,
    format_credits,
    format_date,
    format_yen,
    packaged_templates_dir,
)

CLIENT_TEMPLATES = (
    "ack", "quote", "approved", "rejected", "insufficient_credits", "ambiguous_reply",
    "not_authorised", "balance", "completed", "cancelled", "quote_expired",
    "credits_expiring", "digest", "unknown_sender", "already_answered", "invoice",
    "payment_received", "order_refused",
)
STAFF_TEMPLATES = ("new_request", "comment", "held", "failed", "bounce", "reminder", "answered",
                   "mailbox_login", "invoice_issued", "invoice_paid", "invoice_void")
NAMES = [f"client/{n}" for n in CLIENT_TEMPLATES] + [f"staff/{n}" for n in STAFF_TEMPLATES]
PARTIALS = ("_balance_footer.txt.j2", "_balance_footer.html.j2", "_greeting.txt.j2",
            "_signature.txt.j2", "_layout.html.j2", "_labels.j2", "_billing.j2")
HTML_ALTERNATIVES = ("client/ack", "client/quote", "client/balance", "client/digest")

HOSTILE = "<script>alert(1)</script>\r\nBcc: victim@example.net"
NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)  # 2026-04-01 08:30 in Tokyo

BALANCE = {
    "available": 7,
    "next_expiry": {"credits": 3, "expires_at": datetime(2026, 5, 10, 3, 0, tzinfo=UTC)},
    "never_expiring": 4,
    "price_yen": 8000,
    "lots": [
        {"kind": "plan", "remaining": 3, "expires_at": datetime(2026, 5, 10, 3, 0, tzinfo=UTC)},
        {"kind": "purchase", "remaining": 4, "expires_at": None},
    ],
}
REQUEST = {
    "number": 12, "tag": "[REQ-12]", "subject": "Replace the spring banner",
    "status": "quoted", "text": "Please swap the banner on the top page.",
    "requester": "hanako@client.example", "due": date(2026, 4, 10), "credits": 2,
}
QUOTE = {
    "credits": 2, "due": date(2026, 4, 10), "note": "Includes one round of changes.",
    "valid_until": date(2026, 4, 14), "token": "q7Hk2mZp",
}
BASE = {
    "client": {"name": "Sakura Foods", "lang": "en"},
    "support": {"address": "support@agency.example", "display_name": "Agency Support"},
    "balance": BALANCE,
    "now": NOW,
}
INVOICE = {
    "number": "INV-2026-0007", "credits": 5, "unit_price_yen": 8000, "subtotal_yen": 40000,
    "tax_yen": 4000, "total_yen": 44000, "rate": "10", "basis": "excl",
    "issued_on": date(2026, 4, 1), "due": date(2026, 5, 1), "paid_on": date(2026, 4, 3),
    "requester": "hanako@client.example", "status": "paid", "void_reason": None,
    "void_by": None, "actor": "hanako@client.example",
}
BILLING = {"issuer": "Example Co., Ltd.", "registration_number": "T9234567890123",
           "bank_account": "Example Bank, Head Office\nordinary 1234567",
           "payment_terms_days": 30}
ITEM = {"tag": "[REQ-12]", "subject": "Replace the spring banner", "status": "approved",
        "credits": 2, "due": date(2026, 4, 10)}

CONTEXTS: dict[str, dict] = {
    "client/ack": {
        "request": REQUEST,
        "catalog_groups": [
            {"credits": 1, "titles": ["Add or replace images or banners (up to 3)",
                                      "Upload and publish a news entry"]},
            {"credits": 2, "titles": ["Install and test a simple plugin"]},
        ],
        "similar": [{"title": "Add or replace images or banners (up to 3)", "credits": 1}],
    },
    "client/quote": {"request": REQUEST, "quote": QUOTE},
    "client/approved": {"request": REQUEST, "quote": QUOTE, "debited": 2},
    "client/rejected": {"request": REQUEST, "quote": QUOTE},
    "client/insufficient_credits": {
        "request": REQUEST, "quote": {**QUOTE, "credits": 9},
        "shortfall": {"credits": 2, "yen": 16000, "next_allotment": date(2026, 5, 1),
                      "plan_credits": 5},
    },
    "client/ambiguous_reply": {"request": REQUEST},
    "client/not_authorised": {"request": REQUEST, "quote": QUOTE, "reason": "not_requester"},
    "client/already_answered": {"request": REQUEST, "quote": QUOTE, "outcome": "approved",
                                "asked": "approved"},
    "client/balance": {
        "entries": [
            {"at": datetime(2026, 3, 20, 2, 0, tzinfo=UTC), "kind": "debit", "delta": -2,
             "note": None, "request_tag": "[REQ-11]"},
            {"at": datetime(2026, 3, 1, 0, 0, tzinfo=UTC), "kind": "plan", "delta": 5,
             "note": "March allotment", "request_tag": None},
        ],
    },
    "client/completed": {"request": REQUEST, "note": "The new banner is live."},
    "client/cancelled": {"request": REQUEST, "refunded": 2},
    "client/quote_expired": {"request": REQUEST, "quote": QUOTE},
    "client/credits_expiring": {
        "expiring": [{"credits": 3, "expires_at": datetime(2026, 5, 10, 3, 0, tzinfo=UTC)}],
    },
    "client/digest": {
        "period": {"start": date(2026, 3, 1), "end": date(2026, 3, 31)},
        "open": [{**ITEM, "tag": "[REQ-13]", "status": "quoted", "credits": None, "due": None}],
        "approved": [ITEM],
        "completed": [],
        "spent": 2,
    },
    "client/unknown_sender": {"client": None, "balance": None},
    "staff/new_request": {"request": REQUEST, "from_addr": "hanako@client.example",
                          "text": "Please swap the banner on the top page."},
    "staff/comment": {"request": REQUEST, "from_addr": "hanako@client.example",
                      "text": "Could you also fix the footer?"},
    "staff/held": {"from_addr": "stranger@elsewhere.example", "subject": "Hello",
                   "reason": "unknown sender", "kind": "unknown_sender", "balance": None,
                   "client": None},
    "staff/failed": {"from_addr": "hanako@client.example", "subject": "Banner",
                     "reason": "undecodable MIME", "folder": "Failed", "inbound_id": 17,
                     "balance": None, "client": None},
    "staff/bounce": {"original": {"to": "hanako@client.example", "subject": "[REQ-12] Quote",
                                  "message_id": "<abc@agency.example>"},
                     "reason": "550 mailbox unavailable", "balance": None, "client": None},
    "staff/reminder": {"items": [
        {"tag": "[REQ-12]", "client": "Sakura Foods", "subject": "Replace the spring banner",
         "due": date(2026, 3, 30), "overdue": True},
        {"tag": "[REQ-14]", "client": "Kaede Books", "subject": "New landing page",
         "due": date(2026, 4, 3), "overdue": False},
    ], "balance": None, "client": None},
    "staff/answered": {"request": REQUEST, "quote": QUOTE, "answer": "approved",
                       "by": "hanako@client.example"},
    "staff/mailbox_login": {"connections": "IMAP", "account": "support@agency.example",
                            "provider": "microsoft", "command": "mailflow mailbox login",
                            "reason": "mailbox.imap: the OAuth2 sign-in … (invalid_grant)",
                            "balance": None, "client": None},
    "client/invoice": {"invoice": {**INVOICE, "status": "issued", "paid_on": None},
                       "billing": BILLING},
    "client/payment_received": {"invoice": INVOICE, "billing": BILLING},
    "client/order_refused": {"order": {"text": "1.5", "problem": "not_whole",
                                       "max_credits": 100},
                             "price": {"unit_yen": 8000, "includes_tax": False}},
    "staff/invoice_issued": {"invoice": {**INVOICE, "status": "issued", "paid_on": None},
                             "billing": BILLING},
    "staff/invoice_paid": {"invoice": INVOICE, "billing": BILLING, "by": "Sato"},
    "staff/invoice_void": {"invoice": {**INVOICE, "status": "void", "paid_on": None,
                                       "void_reason": "ordered twice", "void_by": "Sato"},
                           "billing": BILLING},
}
WITHOUT_REQUEST = {"client/balance", "client/credits_expiring", "client/digest",
                   "client/unknown_sender", "staff/held", "staff/failed", "staff/bounce",
                   "staff/reminder", "staff/mailbox_login", "client/invoice",
                   "client/payment_received", "client/order_refused", "staff/invoice_issued",
                   "staff/invoice_paid", "staff/invoice_void"}
CASES = [pytest.param(name, lang, id=f"{lang}-{name}") for lang in ("en", "ja") for name in NAMES]


def context_for(name: str, **changes) -> dict:
    return {**BASE, **CONTEXTS[name], **changes}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(timezone="Asia/Tokyo")


def footer_of(text: str) -> str:
    """The part after the last signature delimiter: the balance footer."""
    assert "\n-- \n" in text, "no balance footer"
    return text.rsplit("\n-- \n", 1)[1]


def test_template_files_present_are_exactly_the_required_ones():
    root = packaged_templates_dir()
    for lang in ("en", "ja"):
        found = {p.relative_to(root / lang).as_posix() for p in (root / lang).rglob("*.j2")}
        expected = {f"{name}.txt.j2" for name in NAMES}
        expected |= {f"{name}.html.j2" for name in HTML_ALTERNATIVES}
        expected |= set(PARTIALS)
        assert found == expected, lang


def test_every_context_key_is_a_template():
    assert set(CONTEXTS) == set(NAMES)


@pytest.mark.parametrize(("name", "lang"), CASES)
def test_every_template_renders_with_one_line_subject_and_footer(renderer, name, lang):
    rendered = renderer.render(name, lang, context_for(name))

    assert rendered.subject and "\n" not in rendered.subject and "\r" not in rendered.subject
    if name not in WITHOUT_REQUEST:
        assert "[REQ-12]" in rendered.subject
    assert rendered.text.endswith("\n") and "\n\n\n" not in rendered.text
    if context_for(name)["balance"] is None:
        assert "\n-- \n" not in rendered.text
    else:
        footer = footer_of(rendered.text)
        assert format_credits(7, lang) in footer.splitlines()[0]
        assert format_date(date(2026, 5, 10), lang, renderer.zone) in footer
        assert format_credits(4, lang) in footer
    if lang == "ja":
        assert any("\u3040" <= ch <= "\u30ff" for ch in rendered.text), "not Japanese"
    assert (rendered.html is not None) == (name in HTML_ALTERNATIVES)


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_quote_asks_for_approve_or_reject_and_carries_the_token(renderer, lang):
    text = renderer.render("client/quote", lang, context_for("client/quote")).text

    assert "APPROVE" in text and "REJECT" in text
    if lang == "ja":
        assert "「承認」" in text and "「却下」" in text
    assert "Quote reference: q7Hk2mZp" in text
    assert format_date(date(2026, 4, 10), lang, renderer.zone) in text  # due
    assert format_date(date(2026, 4, 14), lang, renderer.zone) in text  # valid until
    assert format_credits(5, lang) in text  # 7 available - 2 quoted
    assert format_yen(16000, lang) in text


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_quote_tells_a_short_client_how_many_credits_are_missing(renderer, lang):
    ctx = context_for("client/quote", quote={**QUOTE, "credits": 10})
    text = renderer.render("client/quote", lang, ctx).text
    assert format_credits(3, lang) in text


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("reason", ["not_client", "not_requester", "no_quote_reference",
                                    "no_open_quote"])
def test_not_authorised_has_a_sentence_per_reason(renderer, lang, reason):
    texts = {
        r: renderer.render("client/not_authorised", lang,
                           context_for("client/not_authorised", reason=r)).text
        for r in ("not_client", "not_requester", "no_quote_reference", "no_open_quote")
    }
    others = [t for r, t in texts.items() if r != reason]
    assert all(texts[reason] != other for other in others)
    if reason == "not_client":  # possibly a stranger: no balance, no request subject
        assert "\n-- \n" not in texts[reason]
        assert REQUEST["subject"] not in texts[reason]


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_already_answered_says_what_actually_happened(renderer, lang):
    texts = {(outcome, asked): renderer.render("client/already_answered", lang, context_for(
        "client/already_answered", outcome=outcome, asked=asked))
        for outcome in ("approved", "rejected") for asked in ("approved", "rejected")}
    assert len({t.text for t in texts.values()}) == 4
    word = {"en": {"approved": "approved", "rejected": "rejected"},
            "ja": {"approved": "承認済み", "rejected": "却下済み"}}[lang]
    for (outcome, _asked), rendered in texts.items():
        assert word[outcome] in rendered.subject and word[outcome] in rendered.text


@pytest.mark.parametrize("name", HTML_ALTERNATIVES)
@pytest.mark.parametrize("lang", ["en", "ja"])
def test_html_alternative_escapes_client_supplied_text(renderer, name, lang):
    hostile_request = {**REQUEST, "subject": HOSTILE, "text": HOSTILE}
    ctx = context_for(name, request=hostile_request,
                      similar=[{"title": HOSTILE, "credits": 1}],
                      approved=[{**ITEM, "subject": HOSTILE}],
                      entries=[{"at": NOW, "kind": "debit", "delta": -1, "note": HOSTILE,
                                "request_tag": "[REQ-12]"}])
    html = renderer.render(name, lang, ctx).html

    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_hostile_subject_cannot_inject_a_header(renderer):
    ctx = context_for("client/ack", request={**REQUEST, "subject": HOSTILE})
    subject = renderer.render("client/ack", "en", ctx).subject
    assert subject == "[REQ-12] Received: <script>alert(1)</script> Bcc: victim@example.net"


def test_subject_keeps_japanese_full_width_space(renderer):
    ctx = context_for("client/ack", request={**REQUEST, "subject": "バナー\u3000差し替え"})
    assert renderer.render("client/ack", "ja", ctx).subject.endswith("バナー\u3000差し替え")


def test_text_part_is_not_escaped(renderer):
    ctx = context_for("staff/new_request", text="if a < b && c > d")
    assert "if a < b && c > d" in renderer.render("staff/new_request", "en", ctx).text


@pytest.mark.parametrize("missing", ["quote", "balance", "now", "support"])
def test_missing_context_key_raises(renderer, missing):
    ctx = context_for("client/quote")
    del ctx[missing]
    with pytest.raises(UndefinedError):
        renderer.render("client/quote", "en", ctx)


def test_missing_nested_key_raises(renderer):
    ctx = context_for("client/quote", quote={k: v for k, v in QUOTE.items() if k != "token"})
    with pytest.raises(UndefinedError):
        renderer.render("client/quote", "ja", ctx)


def test_attribute_objects_work_as_well_as_dicts(renderer):
    from types import SimpleNamespace

    ctx = context_for("client/approved", request=SimpleNamespace(**REQUEST),
                      quote=SimpleNamespace(**QUOTE))
    assert "[REQ-12]" in renderer.render("client/approved", "en", ctx).subject


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_templates_dir_overrides_one_template_and_falls_back_for_the_rest(tmp_path):
    write(tmp_path / "en/client/approved.txt.j2",
          "{% set subject %}{{ request.tag }} Yes!{% endset %}Custom approval.\n"
          "{% include '_balance_footer.txt.j2' %}")
    renderer = Renderer(tmp_path)

    approved = renderer.render("client/approved", "en", context_for("client/approved"))
    assert approved.subject == "[REQ-12] Yes!"
    assert approved.text.startswith("Custom approval.")
    assert format_credits(7, "en") in footer_of(approved.text)  # packaged partial

    rejected = renderer.render("client/rejected", "en", context_for("client/rejected"))
    assert rejected.subject.startswith("[REQ-12] Rejected")
    # The packaged Japanese template beats the English override for a ja client.
    ja = renderer.render("client/approved", "ja", context_for("client/approved"))
    assert "承認" in ja.subject


def test_overriding_the_text_drops_the_packaged_html(tmp_path):
    """Otherwise mail programs would show the old wording from the HTML part."""
    write(tmp_path / "en/client/quote.txt.j2",
          "{% set subject %}{{ request.tag }} Q{% endset %}Quote {{ quote.token }}\n")
    rendered = Renderer(tmp_path).render("client/quote", "en", context_for("client/quote"))
    assert rendered.html is None


def test_missing_japanese_template_falls_back_to_english(tmp_path):
    write(tmp_path / "en/client/special.txt.j2",
          "{% set subject %}Special {{ 8000|yen }}{% endset %}"
          "Due {{ quote.due|date }}\n{% include '_balance_footer.txt.j2' %}")
    rendered = Renderer(tmp_path).render("client/special", "ja", context_for("client/quote"))
    assert rendered.subject == "Special 8,000 yen"  # wholly English, filters too
    assert rendered.text.startswith("Due 2026-04-10")
    assert "Your balance" in footer_of(rendered.text)


def test_unknown_language_renders_english(renderer):
    rendered = renderer.render("client/approved", "fr", context_for("client/approved"))
    assert rendered.subject.startswith("[REQ-12] Approved")


def test_unknown_template_raises(renderer):
    from jinja2 import TemplateNotFound

    with pytest.raises(TemplateNotFound):
        renderer.render("client/nonexistent", "en", BASE)


@pytest.mark.parametrize(("amount", "lang", "expected"), [
    pytest.param(8000, "en", "8,000 yen", id="en-8000"),
    pytest.param(8000, "ja", "8,000円", id="ja-8000"),
    pytest.param(0, "ja", "0円", id="ja-zero"),
    pytest.param(1234567, "en", "1,234,567 yen", id="en-millions"),
])
def test_yen_filter(amount, lang, expected):
    assert format_yen(amount, lang) == expected


@pytest.mark.parametrize(("count", "lang", "expected"), [
    pytest.param(1, "en", "1 credit", id="en-one"),
    pytest.param(2, "en", "2 credits", id="en-two"),
    pytest.param(0, "en", "0 credits", id="en-zero"),
    pytest.param(-1, "en", "-1 credit", id="en-minus-one"),
    pytest.param(1, "ja", "1クレジット", id="ja-one"),
    pytest.param(12, "ja", "12クレジット", id="ja-twelve"),
])
def test_credits_filter(count, lang, expected):
    assert format_credits(count, lang) == expected


@pytest.mark.parametrize(("value", "lang", "expected"), [
    pytest.param(date(2026, 4, 1), "en", "2026-04-01", id="en-date"),
    pytest.param(date(2026, 4, 1), "ja", "2026年4月1日", id="ja-date"),
    pytest.param(datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "en", "2026-04-01",
                 id="en-utc-evening-is-tokyo-morning"),
    pytest.param(datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "ja", "2026年4月1日",
                 id="ja-utc-evening-is-tokyo-morning"),
    pytest.param(datetime(2026, 3, 31, 14, 0), "en", "2026-03-31", id="naive-is-utc"),
])
def test_date_filter(value, lang, expected, renderer):
    assert format_date(value, lang, renderer.zone) == expected


def test_filters_inside_templates_follow_the_language(tmp_path):
    body = "{% set subject %}x{% endset %}{{ 8000|yen }}|{{ 2|credits }}|{{ d|date }}|{{ 7|tag }}\n"
    write(tmp_path / "en/client/f.txt.j2", body)
    write(tmp_path / "ja/client/f.txt.j2", body)
    renderer = Renderer(tmp_path, subject_tag="#{id}")
    ctx = {"d": date(2026, 4, 1)}
    assert renderer.render("client/f", "en", ctx).text == "8,000 yen|2 credits|2026-04-01|#7\n"
    assert renderer.render("client/f", "ja", ctx).text == "8,000円|2クレジット|2026年4月1日|#7\n"


def test_templates_dir_that_does_not_exist_is_a_config_error(tmp_path):
    from mailflow.errors import ConfigError

    with pytest.raises(ConfigError, match="templates_dir"):
        Renderer(tmp_path / "nope")


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_held_notice_says_forged_when_dmarc_failed(renderer, lang):
    context = context_for("staff/held", kind="forged", reason="DMARC fail")
    rendered = renderer.render("staff/held", lang, context)
    assert ("forged" in rendered.subject) if lang == "en" else ("なりすまし" in rendered.subject)
    assert "unknown sender" not in rendered.subject


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_held_notice_says_oversized_for_mail_over_the_limit(renderer, lang):
    rendered = renderer.render("staff/held", lang, context_for(
        "staff/held", kind="oversize", reason="30.0 MB, over policy.max_message_mb (25)"))
    assert ("oversized" in rendered.subject) if lang == "en" else ("サイズ超過" in rendered.subject)
    assert "max_message_mb" in rendered.text
