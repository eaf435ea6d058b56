"""An invoice as a one-page PDF: a Japanese qualified invoice (適格請求書).

Japanese text uses reportlab's built-in CID fonts (HeiseiMin-W3 for text,
HeiseiKakuGo-W5 for headings): standard Adobe-Japan1 fonts that every PDF
reader supplies, so nothing is downloaded or embedded.  Latin text and
figures use Helvetica; a line that mixes both is drawn run by run.

The page states what the qualified-invoice rules ask for: the issuer's name
and registration number, the date, the recipient, the item, the amount per tax
rate with the rate, and the tax per rate; plus the total, the due date and the
bank account.  `InvoiceDocument` holds everything printed, so rendering reads
no config and no database, and the same document renders the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from reportlab.lib.colors import Color, black
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from mailflow.core.billing import percent
from mailflow.render import format_yen

MINCHO = "HeiseiMin-W3"
GOTHIC = "HeiseiKakuGo-W5"
LATIN = "Helvetica"
LATIN_BOLD = "Helvetica-Bold"
GREY = Color(0.93, 0.93, 0.93)
RULE = Color(0.55, 0.55, 0.55)
WEEKDAYS_JA = "月火水木金土日"

_registered = False


def _register_fonts() -> None:
    global _registered
    if not _registered:
        pdfmetrics.registerFont(UnicodeCIDFont(MINCHO))
        pdfmetrics.registerFont(UnicodeCIDFont(GOTHIC))
        _registered = True


@dataclass(frozen=True)
class InvoiceDocument:
    """Everything an invoice page shows, in its final values."""

    lang: str
    number: str
    issued_on: date
    due: date
    recipient: str
    credits: int
    unit_price_yen: int
    tax_rate: Decimal
    price_includes_tax: bool
    subtotal_yen: int
    tax_yen: int
    total_yen: int
    issuer: str
    registration_number: str
    issuer_address: str
    bank_account: str
    paid_on: date | None = None

    @property
    def filename(self) -> str:
        return f"{self.number}.pdf"


def day(value: date, lang: str) -> str:
    """2026年12月3日（木） / 2026-12-03 (Thu)."""
    if lang == "ja":
        return f"{value.year}年{value.month}月{value.day}日（{WEEKDAYS_JA[value.weekday()]}）"
    return f"{value.isoformat()} ({value.strftime('%a')})"


# -- drawing mixed Latin / Japanese text ---------------------------------------------


def _runs(text: str, *, bold: bool) -> list[tuple[str, str]]:
    """Split TEXT into (font, run): ASCII in Helvetica, the rest in a CID font."""
    latin, cjk = (LATIN_BOLD, GOTHIC) if bold else (LATIN, MINCHO)
    runs: list[tuple[str, str]] = []
    for char in text:
        font = latin if char.isascii() else cjk
        if runs and runs[-1][0] == font:
            runs[-1] = (font, runs[-1][1] + char)
        else:
            runs.append((font, char))
    return runs


def _width(text: str, size: float, *, bold: bool = False) -> float:
    return sum(pdfmetrics.stringWidth(run, font, size) for font, run in _runs(text, bold=bold))


def _fit(text: str, size: float, width: float, *, bold: bool = False) -> float:
    """The largest size up to SIZE (at least 6 pt) at which TEXT fits in WIDTH."""
    while size > 6 and _width(text, size, bold=bold) > width:
        size -= 0.5
    return size


class _Page:
    def __init__(self, canvas: Canvas) -> None:
        self.c = canvas

    def text(self, x: float, y: float, text: str, size: float = 10, *, bold: bool = False,
             align: str = "left", max_width: float | None = None) -> float:
        """Draw TEXT with its baseline at y; returns the width drawn."""
        if max_width is not None:
            size = _fit(text, size, max_width, bold=bold)
        width = _width(text, size, bold=bold)
        if align == "right":
            x -= width
        elif align == "center":
            x -= width / 2
        line = self.c.beginText(x, y)  # one text object: readers copy it as one line
        for font, run in _runs(text, bold=bold):
            line.setFont(font, size)
            line.textOut(run)
        self.c.drawText(line)
        return width

    def rule(self, x1: float, y: float, x2: float, width: float = 0.6) -> None:
        self.c.setStrokeColor(RULE)
        self.c.setLineWidth(width)
        self.c.line(x1, y, x2, y)
        self.c.setStrokeColor(black)

    def box(self, x: float, y: float, w: float, h: float, *, fill=None) -> None:
        self.c.setStrokeColor(RULE)
        self.c.setLineWidth(0.6)
        if fill is not None:
            self.c.setFillColor(fill)
        self.c.rect(x, y, w, h, stroke=1, fill=1 if fill is not None else 0)
        self.c.setFillColor(black)
        self.c.setStrokeColor(black)


# -- the words of each language ---------------------------------------------------------

LABELS = {
    "ja": {
        "title": "請求書", "subtitle": "（適格請求書）", "to": "{name} 御中",
        "number": "請求書番号", "issued": "発行日", "transaction": "取引年月日",
        "registration": "登録番号", "amount_due": "ご請求金額（税込）",
        "due": "お支払期限", "item": "品目", "quantity": "数量", "unit": "単価（{basis}）",
        "amount": "金額（{basis}）", "item_name": "サポートクレジット",
        "quantity_value": "{n}クレジット", "excl": "税抜", "incl": "税込",
        "rate_excl": "{rate}%対象 小計（税抜）", "rate_incl": "{rate}%対象（税込）",
        "tax_excl": "消費税（{rate}%）", "tax_incl": "うち消費税（{rate}%）",
        "total": "合計（税込）", "bank": "お振込先",
        "terms": "お支払期限までに上記口座へお振り込みください。",
        "paid": "入金済み：{date}", "greeting": "下記のとおりご請求申し上げます。",
        "note": "ご購入いただいたクレジットは有効期限がありません。",
    },
    "en": {
        "title": "INVOICE", "subtitle": "Qualified invoice (適格請求書)", "to": "Bill to: {name}",
        "number": "Invoice no.", "issued": "Issue date", "transaction": "Transaction date",
        "registration": "Registration no.", "amount_due": "Amount due (incl. tax)",
        "due": "Payment due", "item": "Item", "quantity": "Quantity",
        "unit": "Unit price ({basis})", "amount": "Amount ({basis})",
        "item_name": "Support credits", "quantity_value": "{n} credits",
        "excl": "excl. tax", "incl": "incl. tax",
        "rate_excl": "Subtotal at {rate}% (excl. tax)", "rate_incl": "Total at {rate}% (incl. tax)",
        "tax_excl": "Consumption tax ({rate}%)", "tax_incl": "of which consumption tax ({rate}%)",
        "total": "Total (incl. tax)", "bank": "Bank account",
        "terms": "Please transfer the amount to the account above by the due date.",
        "paid": "Paid on {date}", "greeting": "We invoice you as follows.",
        "note": "Credits you buy never expire.",
    },
}


def render_invoice_pdf(doc: InvoiceDocument) -> bytes:
    """The invoice as the bytes of a one-page A4 PDF."""
    _register_fonts()
    lang = doc.lang if doc.lang in LABELS else "en"
    words = LABELS[lang]
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=True, pageCompression=1)
    canvas.setTitle(f"{doc.number} {doc.issuer}")
    canvas.setAuthor(doc.issuer)
    canvas.setSubject(words["title"])
    page = _Page(canvas)
    width, height = A4
    left, right = 50.0, width - 50.0

    def yen(amount: int) -> str:
        return format_yen(amount, lang)

    rate = percent(doc.tax_rate)
    basis = words["incl"] if doc.price_includes_tax else words["excl"]

    # Title
    y = height - 70
    page.text(width / 2, y, words["title"], 22, bold=True, align="center")
    page.text(width / 2, y - 18, words["subtitle"], 10, align="center")

    # Recipient (left) and invoice facts (right)
    y = height - 135
    to = words["to"].format(name=doc.recipient)
    drawn = page.text(left, y, to, 15, bold=True, max_width=270)
    page.rule(left, y - 5, left + max(drawn, 200), 1.0)
    facts = [(words["number"], doc.number), (words["issued"], day(doc.issued_on, lang)),
             (words["transaction"], day(doc.issued_on, lang))]
    fy = y + 10
    for label, value in facts:
        page.text(right - 170, fy, label, 9)
        page.text(right, fy, value, 9, align="right")
        fy -= 14

    # Issuer (right)
    iy = fy - 12
    page.text(right - 170, iy, doc.issuer, 11, bold=True, max_width=170)
    iy -= 15
    page.text(right - 170, iy, f"{words['registration']}  {doc.registration_number}", 9)
    for line in doc.issuer_address.splitlines():
        iy -= 13
        page.text(right - 170, iy, line.strip(), 8.5, max_width=170)

    # Greeting and the amount due
    y -= 38
    page.text(left, y, words["greeting"], 10)
    y -= 34
    page.box(left, y - 8, 280, 30)
    page.text(left + 10, y + 3, words["amount_due"], 10, bold=True)
    page.text(left + 270, y + 2, yen(doc.total_yen), 15, bold=True, align="right")
    y -= 26
    page.text(left, y, f"{words['due']}  {day(doc.due, lang)}", 10)
    if doc.paid_on is not None:
        y -= 18
        page.text(left, y, words["paid"].format(date=day(doc.paid_on, lang)), 11, bold=True)

    # The item table
    y = min(y, iy) - 40
    # Right edges of the quantity and unit price columns; the item is left-aligned,
    # the amount right-aligned at the table's edge.
    quantity_x, unit_x = left + 245, left + 370
    row_h = 22
    page.box(left, y - 6, right - left, row_h, fill=GREY)
    page.text(left + 8, y + 1, words["item"], 9.5, bold=True)
    page.text(quantity_x, y + 1, words["quantity"], 9.5, bold=True, align="right")
    page.text(unit_x, y + 1, words["unit"].format(basis=basis), 9.5, bold=True, align="right")
    page.text(right - 8, y + 1, words["amount"].format(basis=basis), 9.5, bold=True,
              align="right")
    y -= row_h
    page.box(left, y - 6, right - left, row_h)
    page.text(left + 8, y + 1, words["item_name"], 10)
    page.text(quantity_x, y + 1, words["quantity_value"].format(n=doc.credits), 10,
              align="right")
    page.text(unit_x, y + 1, yen(doc.unit_price_yen), 10, align="right")
    page.text(right - 8, y + 1, yen(doc.credits * doc.unit_price_yen), 10, align="right")

    # Amounts per tax rate, tax per rate, total
    y -= 36
    label_x = right - 230
    if doc.price_includes_tax:
        lines = [(words["rate_incl"].format(rate=rate), yen(doc.total_yen), False),
                 (words["tax_incl"].format(rate=rate), yen(doc.tax_yen), False)]
    else:
        lines = [(words["rate_excl"].format(rate=rate), yen(doc.subtotal_yen), False),
                 (words["tax_excl"].format(rate=rate), yen(doc.tax_yen), False)]
    lines.append((words["total"], yen(doc.total_yen), True))
    for label, value, strong in lines:
        page.text(label_x, y, label, 10, bold=strong)
        page.text(right - 8, y, value, 11 if strong else 10, bold=strong, align="right")
        page.rule(label_x, y - 6, right, 1.0 if strong else 0.4)
        y -= 20

    # Bank account and terms
    y -= 18
    page.text(left, y, words["bank"], 10, bold=True)
    for line in doc.bank_account.splitlines():
        y -= 14
        page.text(left + 12, y, line.strip(), 10, max_width=right - left - 12)
    y -= 22
    page.text(left, y, words["terms"], 9)
    y -= 14
    page.text(left, y, words["note"], 9)

    # Footer
    page.rule(left, 60, right, 0.4)
    page.text(left, 46, f"{doc.issuer}  {doc.registration_number}", 7.5, max_width=360)
    page.text(right, 46, doc.number, 7.5, align="right")

    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
