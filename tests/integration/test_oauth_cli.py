"""`mailflow mailbox login|check` and `poll --once` on an OAuth2 mailbox, as
the commands people run (real processes, real servers on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.oauth_world import USER, generic, sign_in
from tests.integration.procs import env_for, mailflow, write_config

pytestmark = pytest.mark.dovecot


@pytest.fixture
def config(tmp_path, token_server, oauth_dovecot, oauth_smtp_server):
    oauth2 = generic(token_server, tmp_path / "tokens.json")
    path = write_config(tmp_path / "mailflow.yaml", db_url=f"sqlite:///{tmp_path / 'm.db'}",
                        imap_port=oauth_dovecot.port, smtp_port=oauth_smtp_server.port,
                        mailbox__imap__auth="oauth2", mailbox__imap__oauth2=oauth2,
                        smtp__auth="oauth2", smtp__username=USER)
    return path, oauth2


def test_mailbox_check_says_what_works_and_exits_1_when_a_log_in_fails(
        config, token_server, oauth_dovecot, oauth_smtp_server):
    path, oauth2 = config
    env = env_for(path, "unused")
    sign_in(token_server, oauth2)

    done = mailflow("mailbox", "check", env=env)
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"ok     IMAP 127.0.0.1:{oauth_dovecot.port} as {USER} "
                               "(OAuth2 generic): logged in")
    assert lines[1].startswith(f"ok     SMTP 127.0.0.1:{oauth_smtp_server.port}")

    token_server.revoke_user(USER)
    token_server.expire_access(USER)
    done = mailflow("mailbox", "check", "--json", env=env, check=False)
    assert done.returncode == 1
    rows = json.loads(done.stdout)
    assert [(row["name"], row["ok"]) for row in rows] == [("IMAP", False), ("SMTP", False)]
    assert rows[0]["detail"].endswith("run `mailflow mailbox login` again")


def test_mailbox_login_prints_the_code_and_stores_the_sign_in(config, token_server):
    path, _oauth2 = config
    process = subprocess.Popen([sys.executable, "-m", "mailflow", "mailbox", "login"],
                               env=env_for(path, "unused"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        shown = []
        for line in process.stdout:  # what the person reads, line by line
            shown.append(line)
            if "enter the code" in line:
                token_server.approve_device(line.rsplit("code ", 1)[1].split()[0])
                break
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"signed in: IMAP and SMTP as {USER} (generic)" in out
    assert mailflow("mailbox", "check", env=env_for(path, "unused")).returncode == 0


@pytest.mark.slow
def test_poll_once_with_a_refused_sign_in_is_one_line_exit_1_and_one_staff_mail(
        tmp_path, token_server, oauth_dovecot, smtp_server):
    oauth2 = generic(token_server, tmp_path / "tokens.json")
    path = write_config(tmp_path / "mailflow.yaml", db_url=f"sqlite:///{tmp_path / 'm.db'}",
                        imap_port=oauth_dovecot.port, smtp_port=smtp_server.port,
                        mailbox__imap__auth="oauth2", mailbox__imap__oauth2=oauth2)
    env = env_for(path, "unused")
    mailflow("db", "upgrade", env=env)
    sign_in(token_server, oauth2)
    token_server.revoke_user(USER)
    token_server.expire_access(USER)

    for _ in range(2):  # cron runs it again: the same line, no second mail
        done = mailflow("poll", "--once", env=env, check=False)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f"Error: mailbox.imap: the OAuth2 sign-in for {USER} (generic) has expired or was "
            "revoked (invalid_grant: Token has been expired or revoked.): run "
            "`mailflow mailbox login` again"]
    assert [c.recipients for c in smtp_server.messages] == [("staff@agency.example",)]
