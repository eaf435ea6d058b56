"""Every transition of the request state machine: allowed and refused."""

from __future__ import annotations

import itertools

import pytest

from mailflow.core.states import FINAL, TRANSITIONS, Action, Status, allowed, next_status
from mailflow.errors import InvalidTransition

ALLOWED = [
    (Status.RECEIVED, Action.QUOTE, Status.QUOTED),
    (Status.QUOTED, Action.QUOTE, Status.QUOTED),
    (Status.EXPIRED, Action.QUOTE, Status.QUOTED),
    (Status.REJECTED, Action.QUOTE, Status.QUOTED),
    (Status.QUOTED, Action.APPROVE, Status.APPROVED),
    (Status.QUOTED, Action.REJECT, Status.REJECTED),
    (Status.QUOTED, Action.EXPIRE, Status.EXPIRED),
    (Status.APPROVED, Action.COMPLETE, Status.COMPLETED),
    (Status.RECEIVED, Action.CANCEL, Status.CANCELLED),
    (Status.QUOTED, Action.CANCEL, Status.CANCELLED),
    (Status.EXPIRED, Action.CANCEL, Status.CANCELLED),
    (Status.APPROVED, Action.CANCEL, Status.CANCELLED),
    (Status.REJECTED, Action.CANCEL, Status.CANCELLED),
    (Status.APPROVED, Action.REDATE, Status.APPROVED),
]
REFUSED = [(s, a) for s, a in itertools.product(Status, Action)
           if (s, a) not in {(s2, a2) for s2, a2, _ in ALLOWED}]


@pytest.mark.parametrize(("status", "action", "after"), ALLOWED,
                         ids=[f"{s}-{a}" for s, a, _ in ALLOWED])
def test_allowed_transition(status, action, after):
    assert allowed(status, action)
    assert next_status(status, action) is after


@pytest.mark.parametrize(("status", "action"), REFUSED, ids=[f"{s}-{a}" for s, a in REFUSED])
def test_refused_transition_names_the_state(status, action):
    assert not allowed(status, action)
    with pytest.raises(InvalidTransition, match=f"request is {status.value}"):
        next_status(status, action)


def test_table_matches_the_listed_transitions():
    assert {(s, a): t for s, a, t in ALLOWED} == TRANSITIONS


def test_final_states_have_no_way_out():
    for status in FINAL:
        assert not any(allowed(status, action) for action in Action)
