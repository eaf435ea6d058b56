"""Clients and their contact addresses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlmodel import Session, select

from mailflow.core.states import OPEN
from mailflow.desk import Desk
from mailflow.errors import Conflict, MailflowError, NotFound
from mailflow.models import Client, Contact, Request
from mailflow.services import bounds

if TYPE_CHECKING:
    from mailflow.core.clientcsv import ClientRow, LineError


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


# --- after creation: show, edit, addresses, import ---------------------------------

def _lock_client(session: Session, client_id: int) -> Client:
    """The client's row, locked against a concurrent edit (PostgreSQL; SQLite has one writer)."""
    return session.exec(select(Client).where(Client.id == client_id).with_for_update()).one()


def _owner(session: Session, address: str) -> Client | None:
    return session.exec(select(Client).join(Contact, Contact.client_id == Client.id)
                        .where(Contact.email == address)).first()


def open_requests(session: Session, client_id: int) -> list[Request]:
    return list(session.exec(select(Request).where(Request.client_id == client_id,
                                                   Request.status.in_(list(OPEN)))
                             .order_by(Request.id)))


def edit_client(session: Session, client: Client, *, name: str | None = None,
                lang: str | None = None, plan: int | None = None,
                active: bool | None = None) -> dict[str, tuple[Any, Any]]:
    """Change the fields given (None: leave it; `plan` 0: no plan); returns
    `{field: (before, after)}` of what changed.  A new plan size counts from the
    next allotment; a deactivated client's mail is held (`services.inbound`) and
    the jobs pass it by (no allotment, digest or expiry warning)."""
    client = _lock_client(session, client.id)
    wanted: dict[str, Any] = {}
    if name is not None:
        name = name.strip()
        if not name:
            raise MailflowError("a client needs a name")
        if name.isdigit():
            raise MailflowError("a client name cannot be a number (numbers mean client ids)")
        other = session.exec(select(Client).where(func.lower(Client.name) == name.lower(),
                                                  Client.id != client.id)).first()
        if other is not None:
            raise Conflict(f"client {other.name!r} already exists")
        wanted["name"] = name
    if lang is not None:
        if lang not in ("en", "ja"):
            raise MailflowError(f"language {lang!r} is not supported (use en or ja)")
        wanted["lang"] = lang
    if plan is not None:
        if plan < 0:
            raise MailflowError("a plan is zero or more credits a month")
        wanted["plan_credits"] = plan or None
    if active is not None:
        wanted["active"] = active
    changes = {("plan" if key == "plan_credits" else key): (getattr(client, key), value)
               for key, value in wanted.items() if getattr(client, key) != value}
    for key, value in wanted.items():
        setattr(client, key, value)
    session.add(client)
    session.flush()
    return changes


def add_address(session: Session, desk: Desk, client: Client, address: str) -> bool:
    """Make `address` one of the client's contacts; False if it was one already.
    An address belongs to one client: another client's is refused, naming it,
    and the desk's own addresses are never a client's."""
    address = normalise_email(address)
    if (what := ours(desk, address)) is not None:
        raise MailflowError(f"{address} is {what}, not a client's address")
    client = _lock_client(session, client.id)
    owner = _owner(session, address)
    if owner is not None and owner.id != client.id:
        raise Conflict(f"address {address} belongs to client {owner.name} (id {owner.id})")
    if owner is not None:
        return False
    session.add(Contact(client_id=client.id, email=address))
    session.flush()
    session.info.pop("client_by_address", None)
    return True


def remove_address(session: Session, client: Client, address: str) -> None:
    """Remove one of the client's addresses; never its last one."""
    address = address.strip().lower()
    client = _lock_client(session, client.id)
    contacts = session.exec(select(Contact).where(Contact.client_id == client.id)).all()
    contact = next((c for c in contacts if c.email == address), None)
    if contact is None:
        owner = _owner(session, address)
        where = f", it belongs to {owner.name}" if owner else ""
        raise NotFound(f"{address} is not an address of {client.name}{where}")
    if len(contacts) == 1:
        raise MailflowError(f"{address} is the only address of {client.name}: add another"
                            " first (or deactivate the client: clients edit --deactivate)")
    session.delete(contact)
    session.flush()
    session.info.pop("client_by_address", None)


@dataclass
class ImportLine:
    """What importing one line of a client list did (or would do)."""

    line: int
    name: str
    action: str                      # created | updated | unchanged | error
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # addresses added
    error: str | None = None


def import_clients(session: Session, desk: Desk, rows: Sequence[ClientRow],
                   errors: Sequence[LineError] = ()) -> list[ImportLine]:
    """Create or update the clients of a list, by name (case-insensitive), each
    line in a savepoint; returns what each line did, in line order, with the
    lines in `errors` (from reading the file) among them.

    An import adds and never removes: addresses missing from a line stay, an
    empty plan or lang cell leaves the field.  The caller commits only when no
    line is in error (all or nothing) and not for a dry run."""
    done = [ImportLine(e.line, "", "error", error=e.error) for e in errors]
    for row in rows:
        try:
            with session.begin_nested():
                done.append(_import_row(session, desk, row))
        except MailflowError as error:
            session.info.pop("client_by_address", None)
            done.append(ImportLine(row.line, row.name, "error", error=f"{row.name}: {error}"))
    return sorted(done, key=lambda line: line.line)


def _import_row(session: Session, desk: Desk, row: ClientRow) -> ImportLine:
    client = session.exec(select(Client).where(func.lower(Client.name) == row.name.lower())
                          ).first()
    addresses = list(dict.fromkeys(normalise_email(e) for e in row.emails))
    for address in addresses:
        owner = _owner(session, address)
        if owner is not None and (client is None or owner.id != client.id):
            raise Conflict(f"address {address} belongs to client {owner.name} (id {owner.id})")
    if client is None:
        client = add_client(session, desk, name=row.name, emails=addresses, plan=row.plan,
                            lang=row.lang or "en")
        return ImportLine(row.line, client.name, "created", added=addresses,
                          changes={"plan": (None, client.plan_credits),
                                   "lang": (None, client.lang)})
    changes = edit_client(session, client, plan=row.plan, lang=row.lang)
    added = [address for address in addresses if add_address(session, desk, client, address)]
    action = "updated" if changes or added else "unchanged"
    return ImportLine(row.line, client.name, action, changes=changes, added=added)
