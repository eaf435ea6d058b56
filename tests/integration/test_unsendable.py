"""One unsendable recipient never stalls the rest (issue 9, point 8), as staff
meet it: `clients add Kanji --email info@例え.jp`, `request new Kanji`, then
`poll --once` fetching three client requests and a stranger `jörg@…` (policy
`unknown_sender: reply`) from Dovecot, sending to an aiosmtpd server that
offers SMTPUTF8 or does not."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from sqlmodel import select

from mailflow.cli import cli
from mailflow.db import create_db_engine, transaction
from mailflow.models import Contact, Outbox
from tests.mails import mail
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.dovecot

SUPPORT = "support@agency.example"
STAFF = "staff@agency.example"
CLIENTS = {"Acme": "a@acme.example", "Beta": "b@beta.example", "Gamma": "c@gamma.example"}


@pytest.mark.parametrize("smtputf8", [True, False], ids=["smtputf8", "no-smtputf8"])
def test_an_idn_client_and_a_utf8_stranger_never_stall_the_outbox(db_url, tmp_path, dovecot,
                                                                  monkeypatch, smtputf8):
    with SmtpServer(smtputf8=smtputf8) as smtp:
        config = tmp_path / "mailflow.yaml"
        config.write_text(yaml.safe_dump({
            "database_url": db_url,
            "mailbox": {"address": SUPPORT, "display_name": "Agency Support",
                        "imap": {"host": dovecot.host, "port": dovecot.port,
                                 "username": "support", "start": "all",
                                 "password_env": "MAILFLOW_IMAP_PASSWORD"}},
            "smtp": {"host": smtp.host, "port": smtp.port, "timeout_seconds": 5},
            "staff": {"notify": [STAFF]},
            "policy": {"unknown_sender": "reply"}}, allow_unicode=True))
        monkeypatch.setenv("MAILFLOW_IMAP_PASSWORD", dovecot.password)
        runner = CliRunner()

        def mailflow(*args: str) -> str:
            done = runner.invoke(cli, ["--config", str(config), *args])
            assert done.exit_code == 0, f"mailflow {' '.join(args)}: {done.output}"
            return done.output

        for name, address in CLIENTS.items():
            mailflow("clients", "add", name, "--email", address)
        mailflow("clients", "add", "Kanji", "--email", "info@例え.jp")
        mailflow("request", "new", "Kanji", "--subject", "バナー差し替え")
        for address in CLIENTS.values():
            dovecot.append("support", "INBOX", mail(sender=address, subject="Banner",
                                                    body="Please replace the banner."))
        dovecot.append("support", "INBOX", mail(sender="Jörg <jörg@evil.example>",
                                                subject="Hallo", body="Wer seid ihr?"))
        report = json.loads(mailflow("poll", "--once", "--json"))

        engine = create_db_engine(db_url)
        try:
            with transaction(engine) as session:
                stored = session.exec(select(Contact.email)).all()
                rows = {(r.template, r.to_addrs): r for r in session.exec(select(Outbox))}
        finally:
            engine.dispose()
        assert "info@例え.jp" in stored  # kept as given
        assert not [r for r in rows.values() if r.status in ("pending", "sending")]
        kanji_ack = rows[("client/ack", "info@例え.jp")]
        assert kanji_ack.status == "sent"
        assert ("info@xn--r8jz45g.jp",) in [c.recipients for c in smtp.messages]
        stranger = rows[("client/unknown_sender", "jörg@evil.example")]
        client_acks = [rows[("client/ack", a)] for a in CLIENTS.values()]
        assert {r.status for r in client_acks} == {"sent"}
        if smtputf8:
            assert stranger.status == "sent" and report["send_failed"] == 0
        else:
            assert stranger.status == "failed" and "SMTPUTF8" in stranger.last_error
            assert report["send_failed"] == 1
            notices = [r for (template, _), r in rows.items() if template == "staff/bounce"]
            assert [(n.to_addrs, n.status) for n in notices] == [(STAFF, "sent")]
            assert "jörg@evil.example" in notices[0].body_text
