"""A message that failed can be run again once its cause is fixed — by moving
it back to the inbox or with `mailflow inbound retry ID` — and then exactly
once (issue 9, point 9a).  Real Dovecot; SQLite and PostgreSQL.

The failure is a real one an agency can cause and fix: a broken template in
its `templates_dir` override (the acknowledgement refers to a name that does
not exist), repaired by removing the file."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from mailflow.adapters.imap import Mailbox
from mailflow.config import settings_from_mapping
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.errors import InvalidTransition
from mailflow.intake import retry
from mailflow.models import Inbound, InboundStatus, Outbox, Request
from mailflow.poller import Poller
from mailflow.services import clients
from tests.mails import mail

pytestmark = pytest.mark.dovecot

SUPPORT = "support@agency.example"
CLIENT = "a@acme.example"


@pytest.fixture
def site(engine, clock, tmp_path, dovecot, imap_settings):
    override = tmp_path / "templates"
    (override / "en" / "client").mkdir(parents=True)
    broken = override / "en" / "client" / "ack.txt.j2"
    broken.write_text("{{ no_such_name.here }}\n")

    def desk() -> Desk:  # a desk as after a restart: templates read afresh
        return Desk(settings_from_mapping({
            "mailbox": {"address": SUPPORT, "imap": {**imap_settings.model_dump(),
                                                     "start": "all"}},
            "staff": {"notify": ["staff@agency.example"]},
            "templates_dir": str(override)}), clock=clock)

    with transaction(engine) as session:
        clients.add_client(session, desk(), name="Acme", emails=[CLIENT])
    mailbox = Mailbox(imap_settings)
    yield engine, dovecot, desk, broken, mailbox
    mailbox.close()


def poll(engine, desk, mailbox):
    return Poller(engine, desk, mailbox).poll_once()


def move_back(dovecot, folder: str) -> None:
    """What staff do in their mail program: the message goes back to the inbox."""
    with dovecot.client("support") as client:
        client.select_folder(folder)
        client.move(client.search("ALL"), "INBOX")


def counts(engine) -> tuple[int, int, list[str]]:
    with transaction(engine) as session:
        return (session.exec(select(func.count()).select_from(Request)).one(),
                session.exec(select(func.count()).select_from(Inbound)).one(),
                [row.status for row in session.exec(select(Inbound))])


def staff_failed_notices(engine) -> list[str]:
    with transaction(engine) as session:
        return list(session.exec(select(Outbox.body_text).where(
            Outbox.template == "staff/failed").order_by(Outbox.id)))


def test_a_failed_message_moved_back_to_the_inbox_runs_again_once(site):
    engine, dovecot, desk, broken, mailbox = site
    dovecot.append("support", "INBOX", mail(sender=CLIENT, subject="Replace the banner",
                                            body="Please replace the top banner."))
    assert poll(engine, desk(), mailbox).failed == 1
    assert len(dovecot.list_messages("support", "Failed")) == 1
    assert counts(engine) == (0, 1, ["failed"])
    (notice,) = staff_failed_notices(engine)
    assert "mailflow inbound retry 1" in notice

    # Moved back before the cause is fixed: it runs again, fails again, staff hear again.
    move_back(dovecot, "Failed")
    report = poll(engine, desk(), mailbox)
    assert (report.failed, report.duplicates) == (1, 0)
    assert len(staff_failed_notices(engine)) == 2
    assert counts(engine) == (0, 1, ["failed"])

    broken.unlink()  # the cause is fixed
    move_back(dovecot, "Failed")
    report = poll(engine, desk(), mailbox)
    assert (report.processed, report.failed, report.duplicates) == (1, 0, 0)
    assert counts(engine) == (1, 1, ["processed"])  # the marker is reused: one row
    assert dovecot.list_messages("support", "Failed") == []
    assert len(dovecot.list_messages("support", "Processed")) == 1

    # Done now: moving it back once more changes nothing.
    move_back(dovecot, "Processed")
    assert poll(engine, desk(), mailbox).duplicates == 1
    assert counts(engine) == (1, 1, ["processed"])


def test_inbound_retry_runs_a_failed_message_once(site):
    engine, dovecot, desk, broken, mailbox = site
    dovecot.append("support", "INBOX", mail(sender=CLIENT, subject="Replace the banner",
                                            body="Please replace the top banner."))
    assert poll(engine, desk(), mailbox).failed == 1
    with transaction(engine) as session:
        inbound_id = session.exec(select(Inbound.id)).one()

    assert retry(engine, desk(), inbound_id).status is InboundStatus.FAILED  # not fixed yet
    broken.unlink()
    outcome = retry(engine, desk(), inbound_id)
    assert (outcome.status, outcome.verdict, outcome.duplicate) == \
        (InboundStatus.PROCESSED, "new_request", False)
    assert counts(engine) == (1, 1, ["processed"])
    with pytest.raises(InvalidTransition, match="only a failed message can be run again"):
        retry(engine, desk(), inbound_id)
    # The original is still in the failed folder; moved back, it is recognised as done.
    move_back(dovecot, "Failed")
    assert poll(engine, desk(), mailbox).duplicates == 1
    assert counts(engine) == (1, 1, ["processed"])
