"""Clients and their contact addresses."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from mailflow.desk import Desk
from mailflow.errors import Conflict, MailflowError, NotFound
from mailflow.models import Client, Contact
from mailflow.services import bounds


def normalise_email(address: str) -> str:
    address = address.strip().lower()
    local, at, domain = address.partition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        raise MailflowError(f"{address!r} is not an e-mail address")
    return address


def ours(desk: Desk, address: str) -> str | None:
    """What ADDRESS is if it is one of the desk's own — the support mailbox (any
    +tag variant too) or a staff address — else None.  Such an address can never
    be a client's: its mail would be taken for the client's, and our own notices
    would come back as requests."""
    local, _, domain = address.lower().partition("@")
    local = local.split("+", 1)[0]
    staff = getattr(desk.settings.staff, "members", ())  # staff members, where configured
    candidates = [(desk.settings.mailbox.address, "the support mailbox")]
    candidates += [(addr, "a staff address (staff.notify)") for addr in desk.settings.staff.notify]
    candidates += [(addr, f"staff member {member.name}'s address")
                   for member in staff for addr in member.emails]
    for candidate, what in candidates:
        c_local, _, c_domain = candidate.lower().partition("@")
        if (local, domain) == (c_local.split("+", 1)[0], c_domain):
            return what
    return None


def add_client(session: Session, desk: Desk, *, name: str, emails: list[str],
               plan: int | None = None, lang: str = "en") -> Client:
    name = name.strip()
    if not name:
        raise MailflowError("a client needs a name")
    if not emails:
        raise MailflowError("a client needs at least one --email")
    if plan is not None and plan < 0:
        raise MailflowError("--plan must be zero or more credits a month")
    if plan:
        bounds.check_credits(plan, maximum=desk.settings.credits.max_credits_per_grant,
                             what="a monthly plan", key="max_credits_per_grant")
    if lang not in ("en", "ja"):
        raise MailflowError(f"language {lang!r} is not supported (use en or ja)")
    if session.exec(select(Client).where(func.lower(Client.name) == name.lower())).first():
        raise Conflict(f"client {name!r} already exists")
    addresses = list(dict.fromkeys(normalise_email(e) for e in emails))
    for address in addresses:
        if (what := ours(desk, address)) is not None:
            raise MailflowError(f"{address} is {what}, not a client's address")
    taken = session.exec(select(Contact).where(Contact.email.in_(addresses))).first()
    if taken:
        raise Conflict(f"address {taken.email} already belongs to another client")
    if name.isdigit():
        raise MailflowError("a client name cannot be a number (numbers mean client ids)")
    client = Client(name=name, lang=lang, plan_credits=plan or None, created_at=desk.now())
    session.add(client)
    session.flush()
    for address in addresses:
        session.add(Contact(client_id=client.id, email=address))
    session.flush()
    session.info.pop("client_by_address", None)
    return client


def find_client(session: Session, ref: str) -> Client:
    """A client by id, by any of its addresses, or by name (case-insensitive)."""
    ref = ref.strip()
    client = None
    if ref.isdigit():
        client = session.get(Client, int(ref)) if bounds.is_row_id(int(ref)) else None
    elif "@" in ref:
        contact = session.exec(select(Contact).where(Contact.email == ref.lower())).first()
        client = session.get(Client, contact.client_id) if contact else None
    else:
        client = session.exec(select(Client).where(func.lower(Client.name) == ref.lower())).first()
    if client is None:
        raise NotFound(f"client {ref!r} not found")
    return client


def client_by_address(session: Session, address: str | None) -> Client | None:
    """The client an address belongs to (one query, remembered for the transaction)."""
    if not address:
        return None
    address = address.lower()
    known = session.info.setdefault("client_by_address", {})
    if address not in known:
        known[address] = session.exec(select(Client).join(Contact, Contact.client_id == Client.id)
                                      .where(Contact.email == address)).first()
    return known[address]


def client_emails(session: Session, client_id: int) -> list[str]:
    return list(session.exec(select(Contact.email).where(Contact.client_id == client_id)
                             .order_by(Contact.id)))


def list_clients(session: Session) -> list[Client]:
    return list(session.exec(select(Client).order_by(Client.id)))
