"""`mailflow invoices | paid | invoice void | report | credits buy` on a fresh
database, SQLite and PostgreSQL: exit codes, one-line errors, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest
import yaml
from click.testing import CliRunner

from mailflow.cli import cli
from mailflow.config import load_settings
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.services import billing
from mailflow.services.clients import find_client


@pytest.fixture
def config(tmp_path, empty_db_url):
    path = tmp_path / "mailflow.yaml"
    path.write_text(yaml.safe_dump({"database_url": empty_db_url, "timezone": "Asia/Tokyo",
                                    "staff": {"notify": ["staff@agency.example"]}}))
    return path


@pytest.fixture
def run(config):
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    invoke("db", "upgrade")
    invoke("clients", "add", "さくらフーズ", "--email", "hanako@sakura.example", "--lang", "ja")
    return invoke


@pytest.fixture
def order(config):
    """A client's BUY n, as the inbound mail will place it (the mail wiring comes later)."""
    settings = load_settings(config)

    def place(credits: int, message_id: str) -> str:
        engine = create_db_engine(settings.database_url)
        try:
            with transaction(engine) as session:
                client = find_client(session, "hanako@sakura.example")
                return billing.issue_invoice(session, Desk(settings), client=client,
                                             credits=credits, requester="hanako@sakura.example",
                                             source_message_id=message_id).number
        finally:
            engine.dispose()

    return place


def as_json(result):
    return json.loads(result.stdout)


def one_line_error(result, text: str) -> None:
    assert result.stderr.strip().count("\n") == 0 and text in result.stderr, result.stderr


def test_credits_buy_issues_a_paid_invoice_and_mails_the_receipt(run):
    bought = as_json(run("credits", "buy", "さくらフーズ", "3", "--json"))
    year = date.today().year
    assert bought["number"] == f"INV-{year}-0001" and bought["status"] == "paid"
    assert (bought["subtotal_yen"], bought["tax_yen"], bought["total_yen"]) == (24000, 2400,
                                                                               26400)
    assert bought["available"] == 3
    assert bought["issued_at"].endswith("+09:00") and bought["paid_at"].endswith("+09:00")
    text = run("credits", "buy", "さくらフーズ", "1").stdout
    assert f"invoice INV-{year}-0002 paid, 8,800 yen incl. tax; available now 4" in text
    mails = as_json(run("outbox", "--json"))
    assert [m["template"] for m in mails] == ["client/payment_received", "staff/invoice_paid"] * 2


def test_credits_buy_no_invoice_only_adds_the_lot(run):
    out = as_json(run("credits", "buy", "さくらフーズ", "5", "--no-invoice", "--note", "old",
                      "--json"))
    assert out["available"] == 5 and out["price_yen"] == 40000
    assert as_json(run("invoices", "--json")) == []
    assert as_json(run("outbox", "--json")) == []
    usage = run("credits", "buy", "さくらフーズ", "1", "--note", "x", code=2)
    assert "--note goes with --no-invoice" in usage.stderr


def test_invoices_listing_filters_and_json_keys(run, order):
    year = date.today().year
    order(2, "a@x")
    order(1, "b@x")
    run("credits", "buy", "さくらフーズ", "4")
    rows = as_json(run("invoices", "--json"))
    assert [r["number"] for r in rows] == [f"INV-{year}-000{n}" for n in (1, 2, 3)]
    assert {"number", "client", "credits", "subtotal_yen", "tax_yen", "total_yen", "status",
            "issued_at", "paid_at"} <= rows[0].keys()
    assert rows[0]["client"] == "さくらフーズ" and rows[0]["paid_at"] is None
    assert [r["number"] for r in as_json(run("invoices", "--status", "paid", "--json"))] == [
        f"INV-{year}-0003"]
    assert len(as_json(run("invoices", "--client", "hanako@sakura.example", "--json"))) == 3
    assert "INV-" in run("invoices").stdout
    one_line_error(run("invoices", "--client", "nobody", code=1), "client 'nobody' not found")
    run("invoices", "--status", "open", code=2)


def test_paid_adds_credits_once_and_twice_is_exit_1(run, order):
    number = order(5, "buy@x")
    out = run("paid", number.lower()).stdout
    assert f"{number} paid on" in out and "available now 5" in out
    one_line_error(run("paid", number, code=1), "already paid")
    assert as_json(run("balance", "さくらフーズ", "--json"))["available"] == 5
    one_line_error(run("paid", "INV-2020-0999", code=1), "not found")


def test_paid_on_a_date_and_in_the_future(run, order):
    number = order(1, "buy@x")
    one_line_error(run("paid", number, "--on", "2999-01-01", code=1), "in the future")
    paid = as_json(run("paid", number, "--on", date.today().isoformat(), "--json"))
    assert paid["paid_at"] == f"{date.today().isoformat()}T00:00:00+09:00"


def test_void_needs_a_reason_and_a_void_invoice_cannot_be_paid(run, order):
    number = order(1, "buy@x")
    run("invoice", "void", number, code=2)  # --reason is required
    assert "is void: ordered twice" in run("invoice", "void", number, "--reason",
                                           "ordered twice").stdout
    one_line_error(run("paid", number, code=1), "is void (ordered twice)")
    one_line_error(run("invoice", "void", number, "--reason", "again", code=1), "is void")
    assert as_json(run("invoices", "--status", "void", "--json"))[0]["number"] == number
    templates = [m["template"] for m in as_json(run("outbox", "--json"))]
    assert templates == ["client/invoice", "staff/invoice_issued", "staff/invoice_void"]


def test_report_as_table_json_and_excel_csv(run, config):
    run("credits", "buy", "さくらフーズ", "2")
    month = date.today().strftime("%Y-%m")
    data = as_json(run("report", "--month", month, "--json"))
    assert data["month"] == month
    (row,) = data["clients"]
    assert (row["client"], row["bought"], row["paid_yen"], row["paid_tax_yen"]) == (
        "さくらフーズ", 2, 17600, 1600)
    assert data["totals"]["client"] == "total" and data["totals"]["paid_yen"] == 17600
    assert "さくらフーズ" in run("report", "--month", month).stdout

    raw = run("report", "--month", month, "--csv").stdout_bytes
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs for UTF-8
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [r["client"] for r in rows] == ["さくらフーズ", "total"]
    assert rows[0]["bought"] == "2" and rows[1]["paid_yen"] == "17600"


@pytest.mark.parametrize("month", ["2026-13", "November", "2026/11"])
def test_report_month_is_checked_as_usage(run, month):
    result = run("report", "--month", month, code=2)
    assert "is not YYYY-MM" in result.stderr


def test_report_json_and_csv_together_is_usage(run):
    run("report", "--month", "2026-11", "--json", "--csv", code=2)
