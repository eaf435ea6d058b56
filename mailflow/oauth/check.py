"""`mailflow mailbox check`, and telling staff that a sign-in is needed.

`check_mailbox()` logs in to IMAP and SMTP the way `serve` does (password or
XOAUTH2, refreshing a token when due) and says, one line each, what works.

`tell_staff_login_needed()` queues one staff notice per refused sign-in (an
outbox row; the sender delivers it) unless the SMTP connection is the one that
lost its sign-in, since it could not carry the notice.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from mailflow.adapters.imap import Mailbox, MailboxError
from mailflow.adapters.smtp_out import SendError, SmtpConnection
from mailflow.config import ImapSettings, Settings, SmtpSettings
from mailflow.db import transaction
from mailflow.desk import Desk
from mailflow.errors import MailflowError
from mailflow.oauth.login import NAMES
from mailflow.oauth.tokens import LOGIN_COMMAND, LoginNeeded, TokenSource


@dataclass(frozen=True)
class Check:
    name: str  # IMAP, SMTP
    ok: bool
    line: str


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _how(section: ImapSettings | SmtpSettings) -> str:
    if section.auth == "oauth2":
        return f"OAuth2 {section.oauth2.provider}"
    return "password" if section.username else "no login"


def check_imap(settings: Settings, *, timeout: float = 15.0) -> Check:
    imap = settings.mailbox.imap
    where = f"IMAP {imap.host}:{imap.port} as {imap.username} ({_how(imap)})"
    mailbox = Mailbox(imap, timeout=timeout)
    try:
        mailbox.connect()
        state = mailbox.select()
    except (MailboxError, MailflowError) as error:
        return Check("IMAP", False, f"{where}: {_one_line(error)}")
    finally:
        mailbox.close()
    return Check("IMAP", True, f"{where}: logged in; {imap.folder} holds "
                               f"{state.exists} message{'' if state.exists == 1 else 's'}")


def check_smtp(settings: Settings) -> Check:
    smtp = settings.smtp
    who = f" as {smtp.username}" if smtp.username else ""
    where = f"SMTP {smtp.host}:{smtp.port}{who} ({_how(smtp)})"
    connection = SmtpConnection(smtp)
    try:
        connection.open()
    except (SendError, MailflowError) as error:
        return Check("SMTP", False, f"{where}: {_one_line(error)}")
    finally:
        connection.close()
    done = "logged in" if smtp.username else "connected (smtp.username is null: no login)"
    return Check("SMTP", True, f"{where}: {done}")


def check_mailbox(settings: Settings) -> list[Check]:
    """IMAP, then SMTP: log in to each and say what works."""
    return [check_imap(settings), check_smtp(settings)]


def tell_staff_login_needed(engine: Engine, desk: Desk, error: LoginNeeded) -> bool:
    """Queue the staff notice for ERROR once; True when a notice was queued."""
    settings = desk.settings
    sections = {"mailbox.imap": settings.mailbox.imap, "smtp": settings.smtp}
    broken = [where for where, section in sections.items() if section.auth == "oauth2"
              and TokenSource.for_section(section, where).key == error.key]
    if not error.revoked or not broken or "smtp" in broken:
        return False
    tokens = TokenSource.for_section(sections[broken[0]], broken[0])
    if not tokens.claim_staff_notice():
        return False  # told already (by this process or another)
    from mailflow.services.outbox import notify_staff

    with transaction(engine) as session:
        notify_staff(session, desk, template="staff/mailbox_login", context={
            "connections": " and ".join(NAMES[w] for w in broken),
            "account": tokens.username, "provider": tokens.provider.name,
            "reason": str(error), "command": LOGIN_COMMAND})
    return True
