"""`mailflow poll --once` as a new user runs it: a config file pointing at the
mail servers and the database, every step a `python -m mailflow` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.mails import mail, reply

pytestmark = pytest.mark.dovecot

SUPPORT = "support@agency.example"


@pytest.fixture
def run(tmp_path, dovecot, smtp_server):
    """`mailflow ARGS...` in a subprocess; returns its output, asserts exit 0.

    SQLite only: every step is a fresh interpreter (about a second each), and the
    same use cases run on PostgreSQL in test_mail_flow / test_mail_rules."""
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'mailflow.db'}",
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support",
                    "imap": {"host": dovecot.host, "port": dovecot.port, "username": "support",
                             "password_env": "MAILFLOW_IMAP_PASSWORD"}},
        "smtp": {"host": smtp_server.host, "port": smtp_server.port, "timeout_seconds": 5},
        "staff": {"notify": ["staff@agency.example"]},
    }))
    env = {**os.environ, "MAILFLOW_CONFIG": str(config),
           "MAILFLOW_IMAP_PASSWORD": dovecot.password}

    def mailflow(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "mailflow", *args], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"mailflow {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    return mailflow


def sent_to(smtp_server, address: str):
    return [c.message() for c in smtp_server.messages if address in c.recipients]


def body_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_new_user_polls_a_request_through_to_approval(run, dovecot, smtp_server):
    run("db", "upgrade")
    run("clients", "add", "Acme", "--email", "a@acme.example")
    run("credits", "buy", "Acme", "5", "--no-invoice")  # a balance from before: no receipt

    # The first poll meets an empty inbox (and, by default, starts after it).
    report = json.loads(run("poll", "--once", "--json"))
    assert {"processed", "failed", "duplicates", "verdicts", "sent", "send_retrying",
            "send_failed"} <= report.keys()
    assert (report["processed"], report["failed"], report["sent"]) == (0, 0, 0)

    dovecot.append("support", "INBOX", mail(sender="Alice <a@acme.example>",
                                            subject="Replace the banner",
                                            body="Please replace the top banner."))
    assert "1 processed" in run("poll", "--once")
    (ack,) = sent_to(smtp_server, "a@acme.example")
    assert ack["Subject"].startswith("[REQ-1]")
    assert ack["Auto-Submitted"] == "auto-replied"
    assert "Your balance on" in body_of(ack) and "5 credits available" in body_of(ack)
    assert dovecot.list_messages("support", "INBOX") == []

    due = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    assert "[REQ-1] quoted 2 credits" in run("quote", "1", "--credits", "2", "--due", due)
    run("poll", "--once")
    quote = sent_to(smtp_server, "a@acme.example")[-1]
    assert quote["X-Mailflow-Template"] == "client/quote"
    assert "[REQ-1]" in quote["Subject"] and "APPROVE" in body_of(quote)

    dovecot.append("support", "INBOX", reply(
        sender="a@acme.example", original_subject=quote["Subject"],
        original_body=body_of(quote), original_id=quote["Message-ID"], answer="APPROVE"))
    report = json.loads(run("poll", "--once", "--json"))
    assert report["processed"] == 1 and report["verdicts"] == {"approve": 1}
    assert report["sent"] >= 1 and report["send_failed"] == 0

    shown = json.loads(run("show", "1", "--json"))
    assert (shown["id"], shown["status"], shown["credits"]) == (1, "approved", 2)
    assert {"client", "subject", "due", "messages"} <= shown.keys()
    confirmation = sent_to(smtp_server, "a@acme.example")[-1]
    assert confirmation["X-Mailflow-Template"] == "client/approved"
    assert "3 credits available" in body_of(confirmation)
