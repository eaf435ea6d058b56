"""The sandbox mail world (`mailflow dev`): pymap IMAP and delivering aiosmtpd SMTP
on loopback, and the `dev` command run as a real process."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy

import imapclient
import pytest

pytest.importorskip("pymap")

from mailflow.sandbox import PASSWORD_ENV, MailWorld, sandbox_settings
from tests.mails import mail

CLIENT = "client@sandbox.example"
SUPPORT = "support@sandbox.example"


@pytest.fixture
def world():
    w = MailWorld(imap_port=0, smtp_port=0)
    w.add_account(CLIENT)
    with w:
        yield w


def inbox(world: MailWorld, username: str) -> list[bytes]:
    client = imapclient.IMAPClient(world.host, port=world.imap_port, ssl=False, timeout=10)
    try:
        client.login(username, world.password)
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        return [fetched[uid][b"BODY[]"] for uid in uids]
    finally:
        client.logout()


def test_smtp_delivers_into_each_known_recipients_imap_inbox(world):
    raw = mail(sender=CLIENT, to=SUPPORT, subject="Replace the banner", body="Please.")
    with smtplib.SMTP(world.host, world.smtp_port, timeout=10) as smtp:
        smtp.sendmail(CLIENT, ["support+token123@sandbox.example", CLIENT], raw)
    (to_support,) = inbox(world, "support")
    message = message_from_bytes(to_support, policy=policy.default)
    assert message["Subject"] == "Replace the banner"
    assert message["Return-Path"] == f"<{CLIENT}>"
    assert message["Delivered-To"] == SUPPORT
    assert len(inbox(world, "client")) == 1
    assert inbox(world, "staff") == []


def test_unknown_recipient_is_refused_and_nothing_delivered(world):
    raw = mail(sender=CLIENT, to="nobody@sandbox.example", subject="x", body="x")
    with smtplib.SMTP(world.host, world.smtp_port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail(CLIENT, ["nobody@sandbox.example", "a@elsewhere.example"], raw)
    assert {code for code, _ in refused.value.recipients.values()} == {550}
    assert inbox(world, "support") == []


def test_imap_login_with_a_wrong_password_is_refused(world):
    client = imapclient.IMAPClient(world.host, port=world.imap_port, ssl=False, timeout=10)
    with pytest.raises(imapclient.exceptions.LoginError):
        client.login("support", "wrong")
    client.shutdown()


def test_the_world_binds_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        MailWorld(host="0.0.0.0")


def test_sandbox_settings_point_mailflow_at_the_world(world):
    settings = sandbox_settings(world, "sqlite:///x.db")
    imap = settings.mailbox.imap
    assert (imap.host, imap.port, imap.username, imap.start) == \
        ("127.0.0.1", world.imap_port, "support", "all")
    assert imap.password == os.environ[PASSWORD_ENV] == world.password
    assert (settings.smtp.port, settings.smtp.tls) == (world.smtp_port, False)
    assert settings.mailbox.address == SUPPORT
    assert settings.staff.notify == ["staff@sandbox.example"]


# -- `mailflow dev` as a process ----------------------------------------------------------

def dev_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailflow", "dev", "--imap-port", "0", "--smtp-port", "0",
            *args]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    env["COLUMNS"] = "100"
    return env


def test_dev_demo_plays_a_request_to_completion(tmp_path):
    done = subprocess.run(dev_command("--demo"), cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for subject in ("Received:", "Quote:", "Re: [REQ-1] Quote:", "Approved:", "Completed:"):
        assert f"[REQ-1] {subject}" in out or subject in out, subject
    assert "│ APPROVE" in out
    assert "[REQ-1] Please replace the banner on the top page: completed" in out
    assert "Balance of Demo Co: 6 credits available" in out
    assert not (tmp_path / ".sandbox").exists()  # a fresh temporary database


class Output:
    """Collects a process's stdout on a thread, so reads never block the test."""

    def __init__(self, stream) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.text += line

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not printed within {timeout}s:\n{self.text}")


def wait_for_mail(host: str, port: int, username: str, timeout: float) -> list[bytes]:
    deadline = time.monotonic() + timeout
    client = imapclient.IMAPClient(host, port=port, ssl=False, timeout=10)
    try:
        client.login(username, "sandbox")
        client.select_folder("INBOX", readonly=True)
        while True:
            client.noop()
            uids = client.search(["ALL"])
            if uids:
                fetched = client.fetch(uids, ["BODY.PEEK[]"])
                return [fetched[uid][b"BODY[]"] for uid in uids]
            if time.monotonic() > deadline:
                raise AssertionError(f"no mail for {username} within {timeout}s")
            time.sleep(0.2)
    finally:
        client.logout()


def banner_commands(banner: str) -> list[str]:
    """The staff commands `mailflow dev` prints to try in another terminal."""
    lines = [line.strip().strip("│").strip() for line in banner.splitlines()]
    start = next(n for n, line in enumerate(lines) if line.endswith("another terminal:"))
    end = next(n for n, line in enumerate(lines) if line.startswith("and reply APPROVE"))
    return lines[start + 1:end]


def run_banner_commands(banner: str, *, cwd) -> subprocess.CompletedProcess:
    """The banner's staff commands in a new shell, in a directory of its own."""
    commands = banner_commands(banner)
    assert commands[-2:][0] == "mailflow requests", commands
    cwd.mkdir()
    return subprocess.run(["bash", "-c", "set -e\n" + "\n".join(commands)], cwd=cwd,
                          env=clean_env(), capture_output=True, text=True, timeout=60)


def test_dev_turns_mail_into_a_request_and_stops_on_sigterm(tmp_path):
    process = subprocess.Popen(dev_command(), cwd=tmp_path, env=clean_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = Output(process.stdout)
        imap_port = int(output.wait_for(r"IMAP 127\.0\.0\.1 port (\d+)", 30).group(1))
        smtp_port = int(output.wait_for(r"SMTP 127\.0\.0\.1 port (\d+)", 5).group(1))
        config = (tmp_path / ".sandbox" / "mailflow.yaml").resolve()
        for instruction in ("no SSL/TLS", "client   sandbox", "support  sandbox",
                            f"export MAILFLOW_CONFIG={config}"):
            assert instruction in output.text
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.sendmail(CLIENT, [SUPPORT], mail(sender=CLIENT, to=SUPPORT,
                                                  subject="New landing page", body="Please."))
        (ack,) = wait_for_mail("127.0.0.1", imap_port, "client", timeout=20)
        message = message_from_bytes(ack, policy=policy.default)
        assert message["Subject"].startswith("[REQ-1]")
        assert message["X-Mailflow-Template"] == "client/ack"
        staff = run_banner_commands(output.text, cwd=tmp_path / "elsewhere")
        assert staff.returncode == 0, staff.stdout + staff.stderr
        assert "[REQ-1]" in staff.stdout and "New landing page" in staff.stdout
        assert "[REQ-1] quoted 1 credit," in staff.stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, output.text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert (tmp_path / ".sandbox" / "mailflow.db").exists()
    assert "sandbox stopped" in output.text
