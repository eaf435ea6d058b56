"""Every outgoing template, in both languages, rendered from realistic contexts.

The contexts are `tests/golden/samples.py` (`CONTEXTS`: the first sample of
each template), which doubles as the contract: the keys each template needs
on top of `BASE` (client, support, balance, now).
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
    last_usable_day,
    packaged_templates_dir,
)
from tests.golden.samples import BASE, CONTEXTS, DIGEST, NOW, QUOTE, REQUEST, TEMPLATES

NAMES = TEMPLATES
PARTIALS = ("_balance_footer.txt.j2", "_balance_footer.html.j2", "_greeting.txt.j2",
            "_signature.txt.j2", "_layout.html.j2", "_labels.j2", "_shortfall.txt.j2",
            "_billing.j2", "_staff_reply.txt.j2")
HTML_ALTERNATIVES = ("client/ack", "client/quote", "client/balance", "client/digest")

HOSTILE = "<script>alert(1)</script>\r\nBcc: victim@example.net"
ITEM = DIGEST["open"][2]
WITHOUT_REQUEST = {"client/balance", "client/credits_expiring", "client/digest",
                   "client/unknown_sender", "client/low_balance", "staff/held", "staff/failed",
                   "staff/bounce", "staff/reminder", "staff/mailbox_login", "client/invoice",
                   "client/payment_received", "client/order_refused", "client/order_unclear",
                   "staff/invoice_issued", "staff/invoice_paid", "staff/invoice_void",
                   "staff/answers_suppressed", "staff/notices_held"}
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
        balance = context_for(name)["balance"]
        assert format_credits(balance["available"], lang) in footer.splitlines()[0]
        if balance["next_expiry"]:  # the last usable day, not the expiry instant's
            day = last_usable_day(balance["next_expiry"]["expires_at"], renderer.zone)
            assert format_date(day, lang, renderer.zone) in footer
        assert format_credits(balance["never_expiring"], lang) in footer
    if lang == "ja":
        assert any("\u3040" <= ch <= "\u30ff" for ch in rendered.text), "not Japanese"
    assert (rendered.html is not None) == (name in HTML_ALTERNATIVES)


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_quote_asks_for_approve_or_reject_and_carries_the_token(renderer, lang):
    text = renderer.render("client/quote", lang, context_for("client/quote")).text

    assert "APPROVE" in text and "REJECT" in text
    if lang == "ja":
        assert "「承認」" in text and "「却下」" in text
    token = QUOTE["token"]
    # The token line stays parseable (core/classify.py tokens_in) in both languages.
    assert (f"見積番号：{token}" if lang == "ja" else f"Quote reference: {token}") in text
    assert "Quote reference" not in text or lang == "en"
    assert format_date(date(2026, 4, 10), lang, renderer.zone) in text  # due
    valid_until = format_date(QUOTE["valid_until"], lang, renderer.zone)
    assert text.count(valid_until) == 1  # said once
    assert format_credits(5, lang) in text  # 7 available - 2 quoted
    assert format_yen(16000, lang) + ("（税抜）" if lang == "ja" else " plus tax") in text
    assert "相当" not in text


def test_tokens_in_reads_the_token_line_of_both_languages(renderer):
    from mailflow.core.classify import tokens_in

    for lang in ("en", "ja"):
        text = renderer.render("client/quote", lang, context_for("client/quote")).text
        quoted = "\n".join("> " + line for line in text.splitlines())
        assert tokens_in((), quoted) == [QUOTE["token"]], lang


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
                      open=[{**ITEM, "subject": HOSTILE}],
                      entries=[{"at": NOW, "kind": "debit", "delta": -1, "subject": HOSTILE,
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
    assert rejected.subject.startswith("[REQ-12] Quote declined")
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
    assert rendered.text.startswith("Due Fri 10 Apr 2026")
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
    pytest.param(date(2026, 4, 1), "en", "Wed 1 Apr 2026", id="en-date"),
    pytest.param(date(2026, 4, 1), "ja", "2026年4月1日（水）", id="ja-date"),
    pytest.param(date(2026, 12, 3), "ja", "2026年12月3日（木）", id="ja-thursday"),
    pytest.param(datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "en", "Wed 1 Apr 2026",
                 id="en-utc-evening-is-tokyo-morning"),
    pytest.param(datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "ja", "2026年4月1日（水）",
                 id="ja-utc-evening-is-tokyo-morning"),
    pytest.param(datetime(2026, 3, 31, 14, 0), "en", "Tue 31 Mar 2026", id="naive-is-utc"),
])
def test_date_filter(value, lang, expected, renderer):
    assert format_date(value, lang, renderer.zone) == expected


def test_filters_inside_templates_follow_the_language(tmp_path):
    body = "{% set subject %}x{% endset %}{{ 8000|yen }}|{{ 2|credits }}|{{ d|date }}|{{ 7|tag }}\n"
    write(tmp_path / "en/client/f.txt.j2", body)
    write(tmp_path / "ja/client/f.txt.j2", body)
    renderer = Renderer(tmp_path, subject_tag="#{id}")
    ctx = {"d": date(2026, 4, 1)}
    assert renderer.render("client/f", "en", ctx).text == "8,000 yen|2 credits|Wed 1 Apr 2026|#7\n"
    assert renderer.render("client/f", "ja", ctx).text == "8,000円|2クレジット|2026年4月1日（水）|#7\n"


@pytest.mark.parametrize(("expires_at", "lang", "expected"), [
    pytest.param(datetime(2027, 2, 26, 15, 0, tzinfo=UTC), "en", "Fri 26 Feb 2027",
                 id="en-midnight-tokyo-is-the-day-before"),
    pytest.param(datetime(2027, 2, 26, 15, 0, tzinfo=UTC), "ja", "2027年2月26日（金）",
                 id="ja-midnight-tokyo-is-the-day-before"),
    pytest.param(datetime(2027, 2, 27, 3, 0, tzinfo=UTC), "en", "Sat 27 Feb 2027",
                 id="noon-expiry-is-usable-that-morning"),
])
def test_last_day_filter_shows_the_last_usable_day(tmp_path, expires_at, lang, expected):
    write(tmp_path / f"{lang}/client/f.txt.j2",
          "{% set subject %}x{% endset %}{{ at|last_day }}|{{ at|date(weekday=False) }}\n")
    text = Renderer(tmp_path).render("client/f", lang, {"at": expires_at}).text
    assert text.split("|")[0] == expected


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
