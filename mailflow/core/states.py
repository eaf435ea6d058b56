"""The request state machine (DESIGN §2), as data.

```
 received --quote--> quoted --approve--> approved --complete--> completed
    |                  |  \\--reject----> rejected --quote--> quoted
    |                  |  \\--expire----> expired --quote--> quoted
    |                  \\--quote (re-quote; the old quote is void)--> quoted
    \\-- cancel (staff; any state but completed; refund if approved) --> cancelled
 approved --redate (staff; the client is told)--> approved
```
A rejected or expired request can be quoted again: the rejection mail invites
the client to say what should change, and an expired quote only lapsed.
Completed and cancelled are final.
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
    REDATE = "redate"


TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (Status.RECEIVED, Action.QUOTE): Status.QUOTED,
    (Status.QUOTED, Action.QUOTE): Status.QUOTED,
    (Status.EXPIRED, Action.QUOTE): Status.QUOTED,
    (Status.REJECTED, Action.QUOTE): Status.QUOTED,
    (Status.QUOTED, Action.APPROVE): Status.APPROVED,
    (Status.QUOTED, Action.REJECT): Status.REJECTED,
    (Status.QUOTED, Action.EXPIRE): Status.EXPIRED,
    (Status.APPROVED, Action.COMPLETE): Status.COMPLETED,
    (Status.RECEIVED, Action.CANCEL): Status.CANCELLED,
    (Status.QUOTED, Action.CANCEL): Status.CANCELLED,
    (Status.EXPIRED, Action.CANCEL): Status.CANCELLED,
    (Status.APPROVED, Action.CANCEL): Status.CANCELLED,
    (Status.REJECTED, Action.CANCEL): Status.CANCELLED,
    (Status.APPROVED, Action.REDATE): Status.APPROVED,
}

FINAL = frozenset({Status.COMPLETED, Status.CANCELLED})
OPEN = frozenset(Status) - FINAL
#: Requests someone is still working on or waiting for (a digest's "open requests").
ACTIVE = frozenset({Status.RECEIVED, Status.QUOTED, Status.APPROVED})

_WHY = {
    Action.QUOTE: "only a received, quoted, rejected or expired request can be quoted",
    Action.APPROVE: "only a quoted request can be approved",
    Action.REJECT: "only a quoted request can be rejected",
    Action.EXPIRE: "only a quoted request can expire",
    Action.COMPLETE: "only an approved request can be completed",
    Action.CANCEL: "a completed or cancelled request cannot be cancelled",
    Action.REDATE: "only an approved request's completion date can be moved",
}


def next_status(status: Status, action: Action) -> Status:
    """The state after `action`, or `InvalidTransition` naming why not."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise InvalidTransition(f"request is {status.value}: {_WHY[action]}") from None


def allowed(status: Status, action: Action) -> bool:
    return (status, action) in TRANSITIONS
