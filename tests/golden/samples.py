"""Fixed data for every template: the golden files (`tests/test_golden.py`),
`docs/mails.md` (`scripts/render_mails.py`) and the render tests read it.

Adding a template is one entry in `SAMPLES`: its name and what it receives on
top of `BASE` (client, support, balance, now).  A template may have variants
(`Sample(..., variant="short")`) for the branches worth reading.  Then run
`pytest tests/test_golden.py --update-golden` (or `UPDATE_GOLDEN=1`) and
`python scripts/render_mails.py`, and read the diff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)  # Wed 1 Apr 2026, 08:30 in Tokyo
TOKYO = ZoneInfo("Asia/Tokyo")


def tokyo_midnight(year: int, month: int, day: int) -> datetime:
    """00:00 of that day in Tokyo: an expiry instant (usable through the day before)."""
    return datetime(year, month, day, tzinfo=TOKYO)


PRICE = {"yen": 8000, "tax": "excl", "buy_by_mail": False}
BALANCE = {
    "available": 7,
    "next_expiry": {"credits": 3, "expires_at": tokyo_midnight(2026, 5, 11)},
    "never_expiring": 4,
    "price_yen": 8000,
    "price": PRICE,
    "lots": [
        {"kind": "plan", "remaining": 3, "expires_at": tokyo_midnight(2026, 5, 11),
         "credits": 5, "granted_at": datetime(2026, 2, 9, 15, 0, tzinfo=UTC)},
        {"kind": "purchase", "remaining": 4, "expires_at": None, "credits": 4,
         "granted_at": datetime(2026, 1, 5, 1, 0, tzinfo=UTC)},
    ],
}
LOW_BALANCE = {**BALANCE, "available": 1, "next_expiry": None, "never_expiring": 1,
               "lots": [BALANCE["lots"][1] | {"remaining": 1}]}
REQUEST = {
    "number": 12, "tag": "[REQ-12]", "subject": "Replace the spring banner",
    "status": "quoted", "text": "Please swap the banner on the top page.",
    "requester": "hanako@client.example", "due": date(2026, 4, 10), "credits": 2,
}
QUOTE = {
    "credits": 2, "due": date(2026, 4, 10), "note": "Includes one round of changes.",
    "valid_until": date(2026, 4, 9), "token": "q7hk2mzpa4nbd6xw3ryc5teuvi",
}
ATTACHMENTS = [
    {"name": "logo.png", "type": "image/png", "size": 48_213, "attached": True},
    {"name": "brief.pdf", "type": "application/pdf", "size": 31_457_280, "attached": False},
]
BASE = {
    "client": {"name": "Sakura Foods", "lang": "en"},
    "support": {"address": "support@agency.example", "display_name": "Agency Support"},
    "balance": BALANCE,
    "now": NOW,
}
NO_CLIENT = {"client": None, "balance": None}
CATALOG = [
    {"credits": 1, "titles": ["Add or replace images or banners (up to 3)",
                              "Upload and publish a news entry"]},
    {"credits": 2, "titles": ["Install and test a simple plugin"]},
]
SIMILAR = [{"title": "Add or replace images or banners (up to 3)", "credits": 1}]
TERMS = {"price": PRICE, "yen": 16000, "shortfall": None, "expiring": []}
SHORT_QUOTE = {**QUOTE, "credits": 9}
SHORTFALL = {"credits": 2, "yen": 16000, "yen_incl_tax": 17600, "buy_by_mail": True,
             "waiting_covers": True,
             "allotment": {"at": tokyo_midnight(2026, 4, 8), "credits": 5, "in_time": True}}
ALLOTMENT_LATE = {"at": tokyo_midnight(2026, 5, 1), "credits": 5, "in_time": False}
STATEMENT = [
    {"at": datetime(2026, 3, 20, 2, 0, tzinfo=UTC), "kind": "debit", "delta": -2,
     "request_tag": "[REQ-11]", "subject": "Add the March news entry"},
    {"at": datetime(2026, 3, 5, 5, 0, tzinfo=UTC), "kind": "refund", "delta": 1,
     "request_tag": "[REQ-9]", "subject": "Fix the contact form"},
    {"at": datetime(2026, 2, 28, 15, 0, tzinfo=UTC), "kind": "expiry", "delta": -2,
     "request_tag": None, "subject": None},
    {"at": datetime(2026, 2, 9, 15, 0, tzinfo=UTC), "kind": "plan", "delta": 5,
     "request_tag": None, "subject": None},
    {"at": datetime(2026, 1, 20, 1, 0, tzinfo=UTC), "kind": "grant", "delta": 1,
     "request_tag": None, "subject": None},
    {"at": datetime(2026, 1, 5, 1, 0, tzinfo=UTC), "kind": "purchase", "delta": 4,
     "request_tag": None, "subject": None},
]
#: A stand-in for a chart's PNG: golden files must not depend on Pillow's bytes.
CHART_IMAGE = "data:image/png;base64,iVBORw0KGgo="
DIGEST_BALANCE = {**BALANCE, "next_expiry": {"credits": 3,
                                               "expires_at": tokyo_midnight(2026, 4, 11)},
                  "lots": [BALANCE["lots"][0] | {"expires_at": tokyo_midnight(2026, 4, 11)},
                           BALANCE["lots"][1]]}
DIGEST = {
    "balance": DIGEST_BALANCE,
    "period": {"start": datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
               "end": datetime(2026, 4, 1, 0, 0, tzinfo=UTC)},
    "open": [
        {"tag": "[REQ-14]", "number": 14, "subject": "Set up the booking plugin",
         "status": "received", "credits": None, "due": None,
         "received": datetime(2026, 3, 30, 6, 0, tzinfo=UTC), "valid_until": None},
        {"tag": "[REQ-13]", "number": 13, "subject": "New landing page", "status": "quoted",
         "credits": 5, "due": date(2026, 4, 20), "received": datetime(2026, 3, 25, 1, 0,
                                                                         tzinfo=UTC),
         "valid_until": tokyo_midnight(2026, 4, 9)},
        {"tag": "[REQ-12]", "number": 12, "subject": "Replace the spring banner",
         "status": "approved", "credits": 2, "due": date(2026, 4, 10),
         "received": datetime(2026, 3, 18, 1, 0, tzinfo=UTC), "valid_until": None},
    ],
    "closed": [
        {"tag": "[REQ-11]", "number": 11, "subject": "Add the March news entry",
         "status": "completed", "credits": 1, "due": date(2026, 3, 24),
         "received": datetime(2026, 3, 10, 1, 0, tzinfo=UTC), "valid_until": None,
         "closed": datetime(2026, 3, 23, 8, 0, tzinfo=UTC)},
    ],
    "used": [{"tag": "[REQ-11]", "subject": "Add the March news entry", "credits": 1},
             {"tag": "[REQ-12]", "subject": "Replace the spring banner", "credits": 2}],
    "spent": 3,
    "expiring_soon": [{"credits": 3, "expires_at": tokyo_midnight(2026, 4, 11)}],
    "warning_days": 14,
    "unpaid": [{"number": "INV-2026-0007", "credits": 5, "total_yen": 44000,
                "issued_on": date(2026, 3, 27), "due": date(2026, 4, 26)}],
    "chart": {
        "expiry": [{"month": date(2026, 4, 1), "credits": 3}],
        "usage": [{"month": date(2025, 10 + i, 1) if i < 3 else date(2026, i - 2, 1),
                   "credits": n} for i, n in enumerate([0, 2, 1, 0, 4, 3])],
        "expiry_image": CHART_IMAGE, "usage_image": CHART_IMAGE,
    },
}
INVOICE = {
    "number": "INV-2026-0007", "credits": 5, "unit_price_yen": 8000, "subtotal_yen": 40000,
    "tax_yen": 4000, "total_yen": 44000, "rate": "10", "basis": "excl",
    "issued_on": date(2026, 4, 1), "due": date(2026, 5, 1), "paid_on": date(2026, 4, 3),
    "requester": "hanako@client.example", "status": "paid", "void_reason": None,
    "void_by": None, "actor": "hanako@client.example",
}
ISSUED = {**INVOICE, "status": "issued", "paid_on": None}
BILLING = {"issuer": "Example Co., Ltd.", "registration_number": "T9234567890123",
           "bank_account": "Example Bank, Head Office\nordinary 1234567",
           "payment_terms_days": 30}
ITEMS = [
    {"tag": "[REQ-12]", "client": "Sakura Foods", "subject": "Replace the spring banner",
     "due": date(2026, 3, 30), "overdue": True},
    {"tag": "[REQ-14]", "client": "Kaede Books", "subject": "New landing page",
     "due": date(2026, 4, 3), "overdue": False},
]


@dataclass(frozen=True)
class Sample:
    """One rendering of a template: `context` goes on top of `BASE`."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)
    variant: str = ""

    @property
    def name(self) -> str:
        return f"{self.template}--{self.variant}" if self.variant else self.template

    def full_context(self, **changes: Any) -> dict[str, Any]:
        return {**BASE, **self.context, **changes}


SAMPLES: list[Sample] = [
    # -- client ------------------------------------------------------------------------
    Sample("client/ack", {"request": REQUEST, "catalog_groups": CATALOG, "similar": SIMILAR,
                          "first_request": None}, "first"),
    Sample("client/ack", {"request": REQUEST, "catalog_groups": [], "similar": [],
                          "first_request": "[REQ-3]"}),
    Sample("client/quote", {"request": REQUEST, "quote": QUOTE, **TERMS}),
    Sample("client/quote", {"request": REQUEST, "quote": QUOTE, **TERMS,
                            "expiring": [{"credits": 2,
                                          "expires_at": tokyo_midnight(2026, 4, 6)}]},
           "expiring"),
    Sample("client/quote", {"request": REQUEST, "quote": SHORT_QUOTE, **TERMS,
                            "yen": 72000, "shortfall": SHORTFALL}, "short"),
    Sample("client/quote", {"request": REQUEST, "quote": SHORT_QUOTE, **TERMS, "yen": 72000,
                            "shortfall": {**SHORTFALL, "waiting_covers": False,
                                          "allotment": ALLOTMENT_LATE}}, "short-late"),
    Sample("client/quote", {"request": REQUEST, "quote": SHORT_QUOTE, **TERMS, "yen": 72000,
                            "price": {**PRICE, "buy_by_mail": True},
                            "shortfall": {**SHORTFALL, "buy_by_mail": True,
                                          "waiting_covers": False, "allotment": None}},
           "short-buy"),
    Sample("client/approved", {"request": REQUEST, "quote": QUOTE, "debited": 2}),
    Sample("client/rejected", {"request": REQUEST, "quote": QUOTE}),
    Sample("client/insufficient_credits", {"request": REQUEST, "quote": SHORT_QUOTE, **TERMS,
                                           "yen": 72000, "shortfall": SHORTFALL}),
    Sample("client/insufficient_credits", {
        "request": REQUEST, "quote": SHORT_QUOTE, **TERMS, "yen": 72000,
        "shortfall": {**SHORTFALL, "waiting_covers": False,
                      "allotment": {**SHORTFALL["allotment"], "credits": 1}}}, "not-enough"),
    Sample("client/ambiguous_reply", {"request": REQUEST, "quote": QUOTE}),
    Sample("client/ambiguous_reply", {"request": REQUEST, "quote": QUOTE, "both": True},
           "both"),
    *[Sample("client/not_authorised", {"request": REQUEST, "quote": QUOTE, "reason": reason},
             reason.replace("_", "-"))
      for reason in ("not_requester", "no_quote_reference", "no_open_quote")],
    Sample("client/not_authorised", {"request": REQUEST, "quote": None, "reason": "not_client",
                                     **NO_CLIENT}, "not-client"),
    Sample("client/balance", {"entries": STATEMENT}),
    Sample("client/completed", {"request": REQUEST, "note": "The new banner is live."}),
    Sample("client/cancelled", {"request": REQUEST, "refund": None}),
    Sample("client/cancelled", {"request": REQUEST, "refund": {
        "credits": 4, "usable": 1, "written_off": 3,
        "expired": [{"credits": 3, "expires_at": tokyo_midnight(2026, 4, 1)}]}},
           "refund-expired"),
    Sample("client/redated", {"request": REQUEST, "before": date(2026, 4, 10),
                              "due": date(2026, 4, 17),
                              "note": "The plugin vendor's update arrives a week late."}),
    Sample("client/low_balance", {"balance": LOW_BALANCE, "allotment": {
        "at": tokyo_midnight(2026, 5, 1), "credits": 5}}),
    Sample("client/quote_expired", {"request": REQUEST, "quote": QUOTE}),
    Sample("client/credits_expiring", {"expiring": [
        {"credits": 3, "expires_at": tokyo_midnight(2026, 4, 11)}]}),
    Sample("client/digest", DIGEST),
    Sample("client/unknown_sender", NO_CLIENT),
    Sample("client/already_answered", {"request": REQUEST, "quote": QUOTE,
                                       "outcome": "approved", "asked": "approved"}),
    Sample("client/already_answered", {"request": REQUEST, "quote": QUOTE,
                                       "outcome": "rejected", "asked": "approved"},
           "other-answer"),
    Sample("client/comment_received", {"request": REQUEST, "quote": QUOTE}),
    Sample("client/comment_received", {"request": {**REQUEST, "status": "approved"},
                                       "quote": None}, "no-open-quote"),
    Sample("client/comment_received", {"request": REQUEST, "quote": QUOTE, "relayed": True},
           "relayed"),
    Sample("client/invoice", {"invoice": ISSUED, "billing": BILLING}),
    Sample("client/payment_received", {"invoice": INVOICE, "billing": BILLING}),
    *[Sample("client/order_refused", {"order": {"text": text, "problem": problem,
                                                "max_credits": 100},
                                      "price": {"unit_yen": 8000, "includes_tax": False,
                                                "unit_yen_incl_tax": 8800}},
             problem.replace("_", "-"))
      for text, problem in (("1.5", "not_whole"), ("0", "not_positive"),
                            ("500", "over_limit"))],
    Sample("client/reply", {"request": REQUEST, "files": [],
                            "text": "The new banner is on the staging site:\n"
                                    "https://staging.client.example/\n\n"
                                    "Does it look right?\n\nSato"}),
    Sample("client/reply", {"request": REQUEST, "files": ["mockup.png", "notes.pdf"],
                            "text": "Two mock-ups are attached; which one do you prefer?"},
           "files"),
    Sample("client/order_unclear", {"order": {"text": "5", "credits": 5}, "price": {
        "unit_yen": 8000, "includes_tax": False, "unit_yen_incl_tax": 8800}}),
    Sample("client/order_unclear", {"order": {"text": None, "credits": None}, "price": {
        "unit_yen": 8000, "includes_tax": False, "unit_yen_incl_tax": 8800}}, "no-count"),
    # -- staff -------------------------------------------------------------------------
    Sample("staff/new_request", {"request": REQUEST, "from_addr": "hanako@client.example",
                                 "text": "Please swap the banner on the top page."}),
    Sample("staff/new_request", {"request": REQUEST, "from_addr": "hanako@client.example",
                                 "text": "Please swap the banner on the top page.",
                                 "attachments": ATTACHMENTS}, "attachments"),
    Sample("staff/comment", {"request": REQUEST, "from_addr": "hanako@client.example",
                             "text": "Could you also fix the footer?"}),
    Sample("staff/command_result", {"request": REQUEST, "problem": None, "done": [
        {"what": "quoted", "credits": 2, "due": date(2026, 4, 10)}, {"what": "note"},
        {"what": "assigned", "owner": "Tanaka"},
        {"what": "sent", "to": "hanako@client.example", "cc": "taro@client.example",
         "files": 1}]}),
    Sample("staff/command_result", {"request": REQUEST, "problem": None,
                                    "done": [{"what": "completed"}]}, "completed"),
    Sample("staff/command_result", {"request": REQUEST, "done": [],
                                    "problem": "'QUOTE 2 DUE 4/31': '4/31' is not a date:"
                                               " no such day"}, "error"),
    Sample("staff/comment", {"request": REQUEST, "from_addr": "hanako@client.example",
                             "text": "Here is the new logo.",
                             "attachments": ATTACHMENTS[:1]}, "attachments"),
    *[Sample("staff/held", {"from_addr": "stranger@elsewhere.example", "subject": "Hello",
                            "reason": reason, "kind": kind, **NO_CLIENT}, variant)
      for kind, reason, variant in (
          ("unknown_sender", "unknown sender", ""),
          ("forged", "DMARC check failed: the sender address is forged", "forged"),
          ("staff_command", "staff command 'COMPLETE' from stranger@elsewhere.example, not"
           " in staff.members: nothing done", "staff_command"),
          ("oversize", "30.0 MB, over policy.max_message_mb (25)", "oversize"),
          ("list", "list or group mail on behalf of no client", "list"),
          ("spam", "our spam filter's verdict (X-Spam-Flag: YES)", "spam"))],
    Sample("staff/answers_suppressed", {
        "request": REQUEST, "address": "hanako@client.example",
        "reason": "loop guard: 5 automatic answers in the last hour to a correspondent that "
                  "looks automatic (the same text again)",
        "held": {"id": 41, "subject": "[REQ-12] We received your message: Replace the spring "
                                      "banner", "template": "client/comment_received"}}),
    Sample("staff/notices_held", {"kind": "staff/held", "limit": 30, "first": {
        "id": 733, "subject": "Held: mail from unknown sender x@elsewhere.example"},
        **NO_CLIENT}),
    Sample("staff/held", {"from_addr": "hanako@client.example", "subject": "Banner",
                          "reason": "client deactivated", "kind": "inactive_client",
                          "client_id": 3}, "inactive-client"),
    Sample("staff/failed", {"from_addr": "hanako@client.example", "subject": "Banner",
                            "reason": "undecodable MIME", "folder": "Failed",
                            "inbound_id": 17, **NO_CLIENT}),
    Sample("staff/bounce", {"original": {"to": "hanako@client.example",
                                         "subject": "[REQ-12] Quote",
                                         "message_id": "abc@agency.example"},
                            "reason": "550 mailbox unavailable", **NO_CLIENT}),
    Sample("staff/reminder", {"items": ITEMS, **NO_CLIENT}),
    Sample("staff/answered", {"request": REQUEST, "quote": QUOTE, "answer": "approved",
                              "by": "hanako@client.example"}),
    Sample("staff/answered", {"request": REQUEST, "quote": QUOTE, "answer": "rejected",
                              "by": "hanako@client.example"}, "rejected"),
    Sample("staff/mailbox_login", {"connections": "IMAP", "account": "support@agency.example",
                                   "provider": "microsoft", "command": "mailflow mailbox login",
                                   "reason": "mailbox.imap: the OAuth2 sign-in was refused "
                                             "(invalid_grant)", **NO_CLIENT}),
    Sample("staff/invoice_issued", {"invoice": ISSUED, "billing": BILLING}),
    Sample("staff/invoice_issued", {"invoice": ISSUED, "billing": BILLING, "note":
                                    "BUY 5\nAlso, could you update the footer?"}, "note"),
    Sample("staff/invoice_paid", {"invoice": INVOICE, "billing": BILLING, "by": "Sato"}),
    Sample("staff/invoice_void", {"invoice": {**ISSUED, "status": "void",
                                              "void_reason": "ordered twice",
                                              "void_by": "Sato"}, "billing": BILLING}),
]

LANGUAGES = ("en", "ja")
TEMPLATES = list(dict.fromkeys(sample.template for sample in SAMPLES))
#: The first sample of each template: what it receives (the render tests' contract).
CONTEXTS = {name: next(s.context for s in SAMPLES if s.template == name) for name in TEMPLATES}
