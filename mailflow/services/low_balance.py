"""The low-balance notice (`client/low_balance`).

When a debit or an expiry leaves a client's available balance at
`policy.low_balance_credits` or below, its contacts get one message; the state
(`ClientMailState.low_balance_at`) stops a second one until the balance has
risen above the threshold again (a grant, purchase or refund clears it:
`services.credits.clear_low_balance`).  Runs in the caller's transaction.
"""

from __future__ import annotations

from sqlmodel import Session

from mailflow.desk import Desk
from mailflow.models import Client, ClientMailState, Outbox
from mailflow.services import credits as ledger
from mailflow.services.clients import client_emails
from mailflow.services.outbox import queue_message


def check_low_balance(session: Session, desk: Desk, client_id: int) -> Outbox | None:
    """After a debit or an expiry: the notice, if the balance is low and the
    client was not told yet; returns the queued message, if any."""
    available = ledger.balance(session, desk, client_id).available
    state = session.get(ClientMailState, client_id)
    if available > desk.settings.policy.low_balance_credits:
        ledger.clear_low_balance(session, desk, client_id)
        return None
    if state is not None and state.low_balance_at is not None:
        return None
    client = session.get(Client, client_id)
    emails = client_emails(session, client_id)
    if client is None or not client.active or not emails:
        return None
    allotment = ledger.next_allotment(session, desk, client)
    row = queue_message(session, desk, template="client/low_balance", to=emails, client=client,
                        context={"allotment": {"at": allotment.at, "credits": allotment.credits}
                                 if allotment else None})
    state = state or ClientMailState(client_id=client_id)
    state.low_balance_at = desk.now()
    session.add(state)
    session.flush()
    return row
