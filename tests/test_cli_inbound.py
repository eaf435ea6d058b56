"""`mailflow inbound failed` lists the messages that could not be processed;
`mailflow inbound retry ID` runs one again, once (issue 9, point 9a).  The
failure is one an agency can cause and fix: a broken template in its
`templates_dir`.  (Through Dovecot: tests/integration/test_inbound_retry.py.)"""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from mailflow.cli import cli
from mailflow.config import load_settings
from mailflow.db import create_db_engine
from mailflow.desk import Desk
from mailflow.intake import receive
from tests.mails import mail


@pytest.fixture
def site(tmp_path, empty_db_url):
    broken = tmp_path / "templates" / "en" / "client" / "ack.txt.j2"
    broken.parent.mkdir(parents=True)
    broken.write_text("{{ no_such_name.here }}\n")
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": empty_db_url, "mailbox": {"address": "support@agency.example"},
        "staff": {"notify": ["staff@agency.example"]},
        "templates_dir": str(tmp_path / "templates")}))
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--config", str(config), *args])
        assert result.exit_code == code, (result.output, result.exception)
        return result

    run("db", "upgrade")
    run("clients", "add", "Acme", "--email", "a@acme.example")
    engine = create_db_engine(empty_db_url)
    outcome = receive(engine, Desk(load_settings(str(config))),
                      mail(sender="a@acme.example", subject="Replace the banner",
                           body="Please replace the top banner."))
    engine.dispose()
    assert outcome.failed
    return run, broken


def test_a_failed_message_is_listed_and_runs_again_once(site):
    run, broken = site
    (row,) = json.loads(run("inbound", "failed", "--json").stdout)
    assert (row["id"], row["from"], row["subject"]) == (1, "a@acme.example",
                                                        "Replace the banner")
    assert "no_such_name" in row["reason"]
    failed = run("inbound", "retry", "1", code=1).stderr  # not fixed yet: one line
    assert "failed again" in failed and "no_such_name" in failed and failed.count("\n") == 1
    broken.unlink()
    assert "inbound message 1: new_request [REQ-" in run("inbound", "retry", "1").stdout
    assert json.loads(run("inbound", "failed", "--json").stdout) == []
    again = run("inbound", "retry", "1", code=1)
    assert "only a failed message can be run again" in again.stderr
    assert json.loads(run("requests", "--json").stdout)[0]["subject"] == "Replace the banner"


def test_retry_of_a_message_that_does_not_exist_is_one_line(site):
    run, _ = site
    assert "inbound message 99 not found" in run("inbound", "retry", "99", code=1).stderr
