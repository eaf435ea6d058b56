"""The IMAP adapter against a real, private Dovecot."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from mailflow.adapters.imap import (
    Backoff,
    Mailbox,
    MailboxError,
    retry_with_backoff,
)
from mailflow.config import ImapSettings
from mailflow.errors import ConfigError


def raw_mail(n: int, subject: str | None = None) -> bytes:
    subject = subject or f"Request {n}"
    return (
        f"From: Client <alice@client.example>\r\n"
        f"To: support@agency.example\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <m{n}@client.example>\r\n"
        f"Date: Thu, 26 Nov 2026 10:00:00 +0900\r\n"
        f"\r\n"
        f"Body of message {n}.\r\n"
    ).encode()


# -- pure helpers (no server) -------------------------------------------------------------


def test_backoff_grows_to_its_cap_and_never_below_base():
    backoff = Backoff(1.0, 8.0, jitter=0)
    assert [backoff.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_retry_with_backoff_is_bounded_and_reraises_last_error():
    calls, sleeps = [], []

    def always_fails():
        calls.append(1)
        raise MailboxError(f"down {len(calls)}")

    with pytest.raises(MailboxError, match="down 3"):
        retry_with_backoff(always_fails, attempts=3, base_delay=0.5, max_delay=1,
                           sleep=sleeps.append)
    assert len(calls) == 3
    assert len(sleeps) == 2 and all(0.5 <= s <= 1 for s in sleeps)


def test_retry_with_backoff_returns_first_success_and_ignores_other_errors():
    results = iter([MailboxError("x"), "ok"])

    def flaky():
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    assert retry_with_backoff(flaky, attempts=5, sleep=lambda _s: None) == "ok"
    with pytest.raises(ValueError):
        retry_with_backoff(lambda: int("x"), attempts=5, sleep=lambda _s: None)


def test_missing_password_env_is_a_config_error(monkeypatch):
    monkeypatch.delenv("MAILFLOW_TEST_NO_SUCH_VAR", raising=False)
    box = Mailbox(ImapSettings(password_env="MAILFLOW_TEST_NO_SUCH_VAR"))
    with pytest.raises(ConfigError, match="MAILFLOW_TEST_NO_SUCH_VAR"):
        box.connect()


def test_connection_refused_is_a_mailbox_error():
    from tests.servers.dovecot import free_port

    box = Mailbox(ImapSettings(port=free_port()), password="secret", timeout=2)
    with pytest.raises(MailboxError) as caught:
        box.connect()
    assert caught.value.connection_lost


# -- against Dovecot --------------------------------------------------------------------


@pytest.fixture
def mailbox(imap_settings):
    box = Mailbox(imap_settings, timeout=5)
    box.connect()
    yield box
    box.close()


@pytest.mark.dovecot
def test_wrong_password_is_a_mailbox_error(dovecot, imap_settings):
    with pytest.raises(MailboxError, match="login refused"):
        Mailbox(imap_settings, password="wrong", timeout=5).connect()


@pytest.mark.dovecot
def test_select_reports_uidvalidity_and_uidnext(dovecot, mailbox):
    empty = mailbox.select()
    assert empty.uidvalidity > 0 and empty.uidnext == 1 and empty.exists == 0
    uid = dovecot.append("support", "INBOX", raw_mail(1))
    again = mailbox.select()
    assert again.uidvalidity == empty.uidvalidity
    assert again.uidnext == uid + 1 and again.exists == 1


@pytest.mark.dovecot
def test_fetch_returns_appended_bytes_exactly_in_uid_order(dovecot, imap_settings):
    sent = [raw_mail(n) for n in range(5)]
    sent.append("Subject: 日本語\r\n\r\n本文です\r\n".encode())  # undeclared 8-bit
    uids = [dovecot.append("support", "INBOX", raw) for raw in sent]
    box = Mailbox(imap_settings.model_copy(update={"batch_size": 2}), timeout=5).connect()
    try:
        box.select()
        fetched = box.fetch(reversed(uids))
    finally:
        box.close()
    assert fetched == list(zip(uids, sent, strict=True))


@pytest.mark.dovecot
def test_fetch_does_not_mark_messages_seen(dovecot, mailbox):
    uid = dovecot.append("support", "INBOX", raw_mail(1))
    mailbox.select()
    mailbox.fetch([uid])
    assert b"\\Seen" not in mailbox.client.get_flags([uid])[uid]


@pytest.mark.dovecot
def test_search_after_uid_returns_only_newer_uids(dovecot, mailbox):
    uids = [dovecot.append("support", "INBOX", raw_mail(n)) for n in range(3)]
    mailbox.select()
    assert mailbox.search_uids(0) == uids
    assert mailbox.search_uids(uids[0]) == uids[1:]


@pytest.mark.dovecot
def test_search_after_last_uid_is_empty_despite_star_quirk(dovecot, mailbox):
    uids = [dovecot.append("support", "INBOX", raw_mail(n)) for n in range(2)]
    mailbox.select()
    # The raw server answer shows the quirk the adapter must hide.
    assert mailbox.client.search(["UID", f"{uids[-1] + 5}:*"]) == [uids[-1]]
    assert mailbox.search_uids(uids[-1]) == []
    assert mailbox.search_uids(uids[-1] + 5) == []


@pytest.mark.dovecot
def test_search_since_finds_by_internal_date(dovecot, mailbox):
    old = dt.datetime(2020, 1, 10, 12, 0)
    client = dovecot.client("support")
    try:
        client.append("INBOX", raw_mail(1), msg_time=old)
        client.append("INBOX", raw_mail(2), msg_time=dt.datetime(2024, 5, 1, 12, 0))
    finally:
        client.logout()
    mailbox.select()
    assert mailbox.search_since(dt.date(2021, 1, 1)) == [2]
    assert mailbox.search_since(dt.date(2019, 1, 1)) == [1, 2]


@pytest.mark.dovecot
def test_move_to_processed_creates_folder_and_keeps_bytes(dovecot, mailbox):
    uids = [dovecot.append("support", "INBOX", raw_mail(n)) for n in range(3)]
    mailbox.select()
    mailbox.move(uids[:2], "Processed")
    assert [raw for _uid, raw in dovecot.list_messages("support", "Processed")] == [
        raw_mail(0), raw_mail(1)]
    assert [uid for uid, _raw in dovecot.list_messages("support", "INBOX")] == [uids[2]]
    assert mailbox.search_uids(0) == [uids[2]]


@pytest.mark.dovecot
def test_move_without_move_capability_uses_copy_delete_expunge(dovecot, mailbox, monkeypatch):
    uids = [dovecot.append("support", "INBOX", raw_mail(n)) for n in range(2)]
    mailbox.select()
    real = mailbox.client.has_capability
    monkeypatch.setattr(mailbox.client, "has_capability",
                        lambda name: False if name.upper() == "MOVE" else real(name))
    mailbox.move([uids[0]], "Failed")
    assert [raw for _uid, raw in dovecot.list_messages("support", "Failed")] == [raw_mail(0)]
    assert [uid for uid, _raw in dovecot.list_messages("support", "INBOX")] == [uids[1]]


@pytest.mark.dovecot
def test_ensure_folders_creates_processed_and_failed_once(dovecot, mailbox):
    mailbox.ensure_folders()
    mailbox.ensure_folders()
    fresh = Mailbox(mailbox.settings, timeout=5).connect()  # folders exist already
    fresh.ensure_folders()
    fresh.close()
    assert {"INBOX", "Processed", "Failed"} <= set(dovecot.folders("support"))


@pytest.mark.dovecot
def test_idle_wait_wakes_when_another_connection_appends(dovecot, mailbox):
    mailbox.select()
    assert mailbox.has_idle
    timer = threading.Timer(0.5, dovecot.append, args=("support", "INBOX", raw_mail(1)))
    started = time.monotonic()
    timer.start()
    try:
        woke = mailbox.idle_wait(20)
    finally:
        timer.join()
    assert woke is True
    assert time.monotonic() - started < 10
    assert mailbox.search_uids(0) == [1]  # the connection is usable after IDLE


@pytest.mark.dovecot
def test_idle_wait_times_out_without_mail(mailbox):
    mailbox.select()
    started = time.monotonic()
    assert mailbox.idle_wait(0.3) is False
    assert time.monotonic() - started < 5


@pytest.mark.dovecot
def test_idle_wait_polls_when_idle_is_off(dovecot, imap_settings):
    box = Mailbox(imap_settings.model_copy(update={"idle": False}), timeout=5,
                  noop_interval=0.2).connect()
    try:
        box.select()
        assert not box.has_idle
        assert box.idle_wait(0.3) is False
        timer = threading.Timer(0.3, dovecot.append, args=("support", "INBOX", raw_mail(1)))
        timer.start()
        try:
            assert box.idle_wait(10) is True
        finally:
            timer.join()
    finally:
        box.close()


@pytest.mark.dovecot
def test_restart_during_idle_raises_connection_lost(dovecot, mailbox):
    mailbox.select()
    timer = threading.Timer(0.3, dovecot.restart)
    timer.start()
    try:
        with pytest.raises(MailboxError) as caught:
            mailbox.idle_wait(20)
    finally:
        timer.join()
    assert caught.value.connection_lost
    assert not mailbox.connected


@pytest.mark.dovecot
def test_reconnect_with_backoff_after_server_restart(dovecot, mailbox):
    dovecot.append("support", "INBOX", raw_mail(1))
    before = mailbox.select()
    dovecot.stop()
    with pytest.raises(MailboxError) as caught:
        mailbox.search_uids(0)
    assert caught.value.connection_lost

    attempts = []

    def reconnect():
        attempts.append(1)
        if len(attempts) == 2:
            dovecot.start()  # the server comes back while we back off
        return mailbox.reconnect()

    # The folder that was selected before the failure is selected again.
    after = retry_with_backoff(reconnect, attempts=5, base_delay=0.05, max_delay=0.2)
    assert len(attempts) == 2
    assert after.uidvalidity == before.uidvalidity
    assert mailbox.search_uids(0) == [1]
