"""The command line's side of issue 10: `redate`, counts that read as English,
and JSON timestamps in the agency's zone with their offset."""

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
    config.write_text(yaml.safe_dump({"database_url": empty_db_url, "timezone": "Asia/Tokyo"}))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    invoke("db", "upgrade")
    return invoke


def test_one_credit_reads_as_one_credit_and_redate_tells_the_client(run):
    today = date.today()
    run("clients", "add", "Acme", "--email", "a@acme.example")
    assert "bought 1 credit (" in run("credits", "buy", "Acme", "1").output
    assert "Acme: 1 credit available" in run("balance", "Acme").output
    run("request", "new", "Acme", "--subject", "Banner")
    due = today + timedelta(days=7)
    assert f"[REQ-1] quoted 1 credit, due {due}" in run("quote", "1", "--credits", "1",
                                                        "--due", due.isoformat()).output
    assert run("redate", "1", "--due", due.isoformat(), code=1).stderr.strip() == \
        "Error: request is quoted: only an approved request's completion date can be moved"
    assert "[REQ-1] approved: 1 credit taken, 0 left" in run("approve", "1").output
    later = today + timedelta(days=14)
    assert run("redate", "1", "--due", later.isoformat(), "--note", "Vendor delay.").output \
        == f"[REQ-1] now due {later} (was {due})\n"
    (redated,) = [m for m in json.loads(run("outbox", "--json").stdout)
                  if m["template"] == "client/redated"]
    assert "Vendor delay." in redated["body"]
    assert "1 credit refunded" in run("cancel", "1", "--refund").output
    assert "1 credits" not in json.dumps(json.loads(run("outbox", "--json").stdout))


def test_json_timestamps_are_in_the_agency_zone_with_offset(run):
    run("clients", "add", "Acme", "--email", "a@acme.example")
    run("credits", "grant", "Acme", "5", "--on", "2026-11-29")
    run("request", "new", "Acme", "--subject", "Banner")
    balance = json.loads(run("balance", "Acme", "--json").stdout)
    (lot,) = balance["lots"]
    assert lot["granted_at"] == "2026-11-29T00:00:00+09:00"
    assert lot["expires_at"] == "2027-02-27T00:00:00+09:00"
    assert lot["usable_through"] == "2027-02-26"
    for row in (json.loads(run("requests", "--json").stdout)[0],
                json.loads(run("show", "1", "--json").stdout),
                json.loads(run("outbox", "--json").stdout)[0]):
        assert row["created_at"].endswith("+09:00"), row["created_at"]
    shown = json.loads(run("show", "1", "--json").stdout)
    assert all(m["at"].endswith("+09:00") for m in shown["messages"])
