"""The request state machine (DESIGN §2), as data.

```
 received --quote--> quoted --approve--> approved --complete--> completed
    |                  |  \\--reject----> rejected
    |                  |  \\--expire----> expired --quote--> quoted
    |                  \\--quote (re-quote; the old quote is void)--> quoted
    \\-- cancel (staff; any open state; refund if approved) --> cancelled
```
An expired quote can be re-quoted: the request is still wanted, only the
price lapsed.  Rejected, completed and cancelled are final.
"""

from __future__ import annotations

from enum import StrEnum

from mailflow.errors import InvalidTransition


class Status(StrEnum):
    RECEIVED = "received"
    QUOTED = "quoted"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Action(StrEnum):
    QUOTE = "quote"
    APPROVE = "approve"
    REJECT = "reject"
    EXPIRE = "expire"
    COMPLETE = "complete"
    CANCEL = "cancel"


TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (Status.RECEIVED, Action.QUOTE): Status.QUOTED,
    (Status.QUOTED, Action.QUOTE): Status.QUOTED,
    (Status.EXPIRED, Action.QUOTE): Status.QUOTED,
    (Status.QUOTED, Action.APPROVE): Status.APPROVED,
    (Status.QUOTED, Action.REJECT): Status.REJECTED,
    (Status.QUOTED, Action.EXPIRE): Status.EXPIRED,
    (Status.APPROVED, Action.COMPLETE): Status.COMPLETED,
    (Status.RECEIVED, Action.CANCEL): Status.CANCELLED,
    (Status.QUOTED, Action.CANCEL): Status.CANCELLED,
    (Status.EXPIRED, Action.CANCEL): Status.CANCELLED,
    (Status.APPROVED, Action.CANCEL): Status.CANCELLED,
}

FINAL = frozenset({Status.REJECTED, Status.COMPLETED, Status.CANCELLED})
OPEN = frozenset(Status) - FINAL

_WHY = {
    Action.QUOTE: "only a received, quoted or expired request can be quoted",
    Action.APPROVE: "only a quoted request can be approved",
    Action.REJECT: "only a quoted request can be rejected",
    Action.EXPIRE: "only a quoted request can expire",
    Action.COMPLETE: "only an approved request can be completed",
    Action.CANCEL: "a rejected, completed or cancelled request cannot be cancelled",
}


def next_status(status: Status, action: Action) -> Status:
    """The state after `action`, or `InvalidTransition` naming why not."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise InvalidTransition(f"request is {status.value}: {_WHY[action]}") from None


def allowed(status: Status, action: Action) -> bool:
    return (status, action) in TRANSITIONS
