"""The invoice PDF: text a program can read back, the same bytes for the same
invoice, and a page that renders (poppler's pdftoppm draws it to PNG)."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from PIL import Image
from pypdf import PdfReader

from mailflow.invoice_pdf import InvoiceDocument, day, render_invoice_pdf
from tests.requirements import unavailable

DOC = InvoiceDocument(
    lang="ja", number="INV-2026-0042", issued_on=date(2026, 12, 3), due=date(2027, 1, 2),
    recipient="株式会社さくらフーズ", credits=3, unit_price_yen=8000, tax_rate=Decimal("0.08"),
    price_includes_tax=False, subtotal_yen=24000, tax_yen=1920, total_yen=25920,
    issuer="株式会社エグザンプル", registration_number="T7000012050002",
    issuer_address="〒100-0000\n東京都千代田区エグザンプル町1-2-3",
    bank_account="エグザンプル銀行 本店営業部\n普通 1234567 カ）エグザンプル")


def text_of(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    return "".join(reader.pages[0].extract_text().split())


@pytest.mark.parametrize(("value", "lang", "shown"), [
    (date(2026, 12, 3), "ja", "2026年12月3日（木）"),
    (date(2027, 1, 2), "ja", "2027年1月2日（土）"),
    (date(2026, 12, 3), "en", "2026-12-03 (Thu)"),
], ids=["ja-thursday", "ja-saturday", "en"])
def test_day_shows_the_weekday(value, lang, shown):
    assert day(value, lang) == shown


def test_reduced_rate_invoice_reads_back_per_rate():
    text = text_of(render_invoice_pdf(DOC))
    for expected in ["株式会社さくらフーズ御中", "INV-2026-0042", "2026年12月3日（木）",
                     "登録番号T7000012050002", "8%対象小計（税抜）24,000円",
                     "消費税（8%）1,920円", "合計（税込）25,920円", "ご請求金額（税込）25,920円",
                     "お支払期限2027年1月2日（土）", "東京都千代田区エグザンプル町1-2-3",
                     "普通1234567カ）エグザンプル"]:
        assert expected in text, expected
    assert "入金済み" not in text


def test_a_paid_invoice_says_so():
    assert "入金済み：2026年12月5日（土）" in text_of(render_invoice_pdf(
        replace(DOC, paid_on=date(2026, 12, 5))))


def test_same_invoice_same_bytes():
    assert render_invoice_pdf(DOC) == render_invoice_pdf(DOC)


def test_a_very_long_name_is_shrunk_onto_the_page_not_cut():
    name = "株式会社" + "とても長い名前の会社" * 6
    text = text_of(render_invoice_pdf(replace(DOC, recipient=name)))
    assert f"{name}御中" in text


def test_page_renders_to_an_image_with_text_where_the_layout_puts_it(tmp_path):
    if shutil.which("pdftoppm") is None:
        unavailable("pdftoppm is not installed (poppler-utils; scripts/install-system-deps.sh)")
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(render_invoice_pdf(DOC))
    subprocess.run(["pdftoppm", "-r", "50", "-png", "-singlefile", str(pdf),
                    str(tmp_path / "page")], check=True, timeout=60, capture_output=True)
    image = Image.open(tmp_path / "page.png").convert("L")
    width, height = image.size
    assert abs(width - 413) <= 1 and abs(height - 585) <= 1  # A4 at 50 dpi

    def inked(box: tuple[float, float, float, float]) -> int:
        left, top, right, bottom = (int(v) for v in (box[0] * width, box[1] * height,
                                                     box[2] * width, box[3] * height))
        return sum(image.crop((left, top, right, bottom)).histogram()[:128])  # dark pixels

    assert inked((0.35, 0.04, 0.65, 0.10)) > 50  # the title 請求書
    assert inked((0.05, 0.13, 0.45, 0.17)) > 50  # the recipient 御中
    assert inked((0.05, 0.30, 0.95, 0.40)) > 100  # the item table
    assert inked((0.05, 0.75, 0.95, 0.90)) == 0  # the empty space above the footer
