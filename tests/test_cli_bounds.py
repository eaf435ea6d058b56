"""The admin command's numbers and dates have sane ranges (issue 9, point 7):
outside them, one line on stderr and exit 2 — never a traceback; our own
addresses are refused as client addresses (point 9b); `outbox` pages and says
so when there is more (point 9c).  Both databases."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
import yaml
from click.testing import CliRunner

from mailflow.cli import cli


@pytest.fixture
def run(tmp_path, empty_db_url):
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": empty_db_url, "timezone": "Asia/Tokyo",
        "mailbox": {"address": "support@agency.example"},
        "staff": {"notify": ["staff@agency.example"]}}))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--config", str(config), *args])
        assert result.exit_code == code, (result.output, result.exception)
        if code:
            assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
            assert "Traceback" not in result.output
        return result

    invoke("db", "upgrade")
    invoke("clients", "add", "Acme", "--email", "a@acme.example")
    invoke("request", "new", "Acme", "--subject", "Replace banner")
    return invoke


TODAY = date.today()
DUE = (TODAY + timedelta(days=7)).isoformat()


@pytest.mark.parametrize(("args", "says"), [
    pytest.param(["quote", "1", "--credits", "9223372036854775807", "--due", DUE],
                 "a quote must be a positive number of credits up to 100", id="quote-2^63-1"),
    pytest.param(["quote", "1", "--credits", str(10**20), "--due", DUE],
                 "credits.max_credits_per_quote", id="quote-10^20"),
    pytest.param(["quote", "1", "--credits", "101", "--due", DUE], "up to 100",
                 id="quote-over-maximum"),
    pytest.param(["quote", "1", "--credits", "1", "--due", "9999-12-31"],
                 "due date 9999-12-31 is out of range", id="quote-due-9999"),
    pytest.param(["credits", "grant", "Acme", str(2**63)], "credits.max_credits_per_grant",
                 id="grant-2^63"),
    pytest.param(["credits", "grant", "Acme", str(10**20)], "up to 10,000", id="grant-10^20"),
    pytest.param(["credits", "buy", "Acme", str(2**31)], "up to 10,000", id="buy-2^31"),
    pytest.param(["credits", "grant", "Acme", "1", "--expires-days", "1000000000"],
                 "--expires-days must be 1 to 3,652 days", id="expires-days-10^9"),
    pytest.param(["credits", "grant", "Acme", "1", "--on", "9999-12-31"],
                 "the grant date 9999-12-31 is out of range", id="grant-on-9999"),
    pytest.param(["credits", "grant", "Acme", "1", "--on", "0001-01-01"],
                 "the grant date 0001-01-01 is out of range", id="grant-on-0001"),
    pytest.param(["credits", "grant", "Acme", "1", "--on", "2099-01-01"],
                 "the grant date 2099-01-01 is out of range", id="grant-on-2099"),
    pytest.param(["credits", "buy", "Acme", "1", "--on", "2099-01-01"],
                 "the purchase date 2099-01-01 is out of range", id="buy-on-2099"),
    pytest.param(["clients", "add", "Big", "--email", "b@big.example", "--plan", str(2**63)],
                 "a monthly plan must be", id="plan-2^63"),
])
def test_out_of_range_is_one_line_and_exit_2(run, args, says):
    result = run(*args, code=2)
    assert says in result.stderr
    balance = json.loads(run("balance", "Acme", "--json").stdout)
    assert balance["available"] == 0 and balance["lots"] == []


@pytest.mark.parametrize("request_id", ["0", "99", str(2**63), str(10**20)])
def test_a_request_number_nobody_has_is_not_found(run, request_id):
    assert "not found" in run("show", request_id, code=1).stderr


def test_the_edges_of_the_ranges_work(run):
    run("credits", "grant", "Acme", "10000", "--on", (TODAY - timedelta(days=30)).isoformat(),
        "--expires-days", "3652")
    run("quote", "1", "--credits", "100", "--due", (TODAY + timedelta(days=3652)).isoformat())


@pytest.mark.parametrize("address", ["support@agency.example", "support+x1@agency.example",
                                     "staff@agency.example"])
def test_our_own_address_is_refused_as_a_clients(run, address):
    result = run("clients", "add", "Other", "--email", address, code=1)
    assert f"{address} is " in result.stderr and "not a client's address" in result.stderr
