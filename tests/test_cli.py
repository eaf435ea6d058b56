"""The command line end to end on a fresh database, as a new user would use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta

import pytest
import yaml
from click.testing import CliRunner

from mailflow.cli import cli


@pytest.fixture
def run(tmp_path, empty_db_url):
    """Run `mailflow ARGS` against a config pointing at a fresh, empty database."""
    db_url = empty_db_url
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({"database_url": db_url, "timezone": "Asia/Tokyo"}))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return invoke


def as_json(result):
    return json.loads(result.stdout)


def test_new_user_walkthrough(run):
    """The issue's 'done means' walkthrough, step by step."""
    today = date.today()
    run("db", "upgrade")
    run("clients", "add", "Acme", "--email", "a@acme.example")
    run("credits", "grant", "Acme", "5", "--on", (today - timedelta(days=100)).isoformat())
    run("credits", "buy", "Acme", "3")
    assert as_json(run("balance", "Acme", "--json"))["available"] == 3
    run("request", "new", "Acme", "--subject", "Replace banner")
    run("quote", "1", "--credits", "4", "--due", (today + timedelta(days=7)).isoformat())
    short = run("approve", "1", code=1)
    assert short.stderr.strip().count("\n") == 0
    assert "short by 1 credit" in short.stderr and "8,000 yen" in short.stderr
    run("credits", "buy", "Acme", "1")
    run("approve", "1")
    assert as_json(run("balance", "Acme", "--json"))["available"] == 0
    shown = as_json(run("show", "1", "--json"))
    assert shown["status"] == "approved" and shown["credits"] == 4
    assert {"id", "status", "client", "subject", "credits", "due", "messages"} <= shown.keys()
    mails = as_json(run("outbox", "--json"))
    receipts = [m for m in mails if m["template"] == "client/payment_received"]
    assert len(receipts) == 2  # one per `credits buy`, each with its paid invoice
    # Approval left 0 credits (policy.low_balance_credits: 2): one low-balance notice.
    assert [m["template"] for m in mails if m["to"] == "a@acme.example"][-1] \
        == "client/low_balance"
    client_mail = [m for m in mails if m["to"] == "a@acme.example" and m["request"]]
    assert [m["subject"].split()[1] for m in client_mail] == ["Received:", "Quote:", "Approved:"]
    balances = [int(m["body"].rsplit(" credits available", 1)[0].rsplit(" ", 1)[-1])
                for m in client_mail]
    assert balances == [3, 3, 0]  # each as it stood after its change
    for row in mails:
        assert {"id", "to", "subject", "status", "attempts", "body"} <= row.keys()


def test_listings_json_keys(run):
    run("db", "upgrade")
    run("clients", "add", "Beta", "--email", "x@beta.example", "--plan", "5", "--lang", "ja")
    run("credits", "grant", "x@beta.example", "5", "--never-expires")
    (client,) = as_json(run("clients", "list", "--json"))
    assert client == {"id": 1, "name": "Beta", "emails": ["x@beta.example"], "plan": 5,
                      "lang": "ja", "available": 5, "active": True}
    run("request", "new", "1", "--subject", "バナー差し替え", "--text", "よろしく")
    (row,) = as_json(run("requests", "--json", "--status", "received", "--client", "Beta"))
    assert row["subject"] == "バナー差し替え" and row["status"] == "received"
    assert as_json(run("requests", "--json", "--status", "approved")) == []
    balance = as_json(run("balance", "Beta", "--json"))
    assert {"kind", "credits", "remaining", "granted_at", "expires_at"} <= \
        balance["lots"][0].keys()
    assert balance["lots"][0]["expires_at"] is None


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["show", "99"], 1, "request 99 not found", id="unknown-request"),
        pytest.param(["balance", "Nobody"], 1, "client 'Nobody' not found", id="unknown-client"),
        pytest.param(["approve", "1"], 1, "request is received", id="approve-unquoted"),
        pytest.param(["quote", "1", "--due", "2099-01-01"], 2, "--credits", id="quote-no-amount"),
        pytest.param(["quote", "1", "--credits", "2", "--due", "tomorrow"], 2, "--due",
                     id="bad-date"),
        pytest.param(["quote", "1", "--task", "nope", "--due", "2099-01-01"], 1,
                     "no catalog task 'nope'", id="unknown-task"),
        pytest.param(["cancel", "1", "--refund"], 1, "nothing to refund", id="refund-unapproved"),
        pytest.param(["clients", "add", "Acme", "--email", "a@acme.example"], 1,
                     "already exists", id="duplicate-client"),
        pytest.param(["clients", "add", "Other", "--email", "A@acme.example"], 1,
                     "already belongs", id="address-taken"),
        pytest.param(["credits", "grant", "Acme", "-3"], 2, "N", id="negative-credits"),
        pytest.param(["frobnicate"], 2, "No such command", id="unknown-command"),
    ],
)
def test_errors_are_one_line_with_exit_code(run, args, code, message):
    run("db", "upgrade")
    run("clients", "add", "Acme", "--email", "a@acme.example")
    run("request", "new", "Acme", "--subject", "Something")
    result = run(*args, code=code)
    assert message in result.stderr
    if code == 1:
        assert result.stderr.strip().count("\n") == 0


def test_commands_before_db_upgrade_say_what_to_do(run):
    result = run("clients", "list", code=1)
    assert "mailflow db upgrade" in result.stderr


def test_bad_config_key_is_one_line_naming_it(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("smtp:\n  prot: 25\n")
    result = CliRunner().invoke(cli, ["--config", str(config), "clients", "list"])
    assert result.exit_code == 2
    assert "smtp.prot: unknown key" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_console_script_and_module_both_run(tmp_path):
    env = {**os.environ, "MAILFLOW_CONFIG": str(tmp_path / "none.yaml")}
    for command in ([sys.executable, "-m", "mailflow", "--help"],
                    [os.path.join(os.path.dirname(sys.executable), "mailflow"), "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "prepaid-support desk" in done.stdout
