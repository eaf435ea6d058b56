"""Does a correspondent look automatic?  The loop guard's question (DESIGN §3 rule 10).

The hourly cap on automatic answers (`policy.autoreply_limit_per_hour`) exists
to stop a loop with a responder we did not recognise; it must never silence a
person in an ordinary conversation.  So the cap applies only to a
correspondent that shows a sign of being a machine, each sign a small named
rule over what the last hour (or day) of its mail looked like:

- it sent mail recognised as automatic or list mail (a responder, a vacation
  subject, `Precedence: bulk`, `List-Id`);
- its subject has a vacation phrase anywhere ("Out of office next week?" is a
  person, but one who may have a responder on);
- it sent the same text again (responders repeat themselves word for word;
  a person's replies quote different mail);
- it answered one of our messages within seconds (no person reads and writes
  that fast; responders do).

Answers that follow a change the client asked for (the approval or rejection
confirmation) are never suppressed: they happen once per quote and cannot loop.

Pure: takes what the adapter found, returns a reason or None.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

#: Quicker than this after our mail to them, an answer is a machine's.
FAST_ANSWER = timedelta(seconds=20)
#: Answers that confirm a decision (once per quote) or answer an order (`BUY n`):
#: never capped.
NEVER_SUPPRESSED = frozenset({"client/approved", "client/rejected",
                              "client/invoice", "client/order_refused"})


@dataclass(frozen=True)
class Seen:
    """One message from the correspondent (the current one, or a recent one)."""

    digest: str | None = None          # of its whitespace-collapsed text
    automatic: bool = False            # recorded as automatic or list mail
    vacation_subject: bool = False
    written_at: datetime | None = None  # its Date header


@dataclass(frozen=True)
class Correspondent:
    """What the adapter found about one address."""

    current: Seen
    earlier: Sequence[Seen] = ()                # its mail of the last day, newest first
    our_last_mail_at: datetime | None = None    # our latest mail to it sent before `current`


Sign = Callable[[Correspondent], str | None]


def sign_automatic_mail(c: Correspondent) -> str | None:
    if c.current.automatic or any(seen.automatic for seen in c.earlier):
        return "sent automatic or list mail"
    return None


def sign_vacation_subject(c: Correspondent) -> str | None:
    if c.current.vacation_subject or any(seen.vacation_subject for seen in c.earlier):
        return "vacation subject"
    return None


def sign_same_text_again(c: Correspondent) -> str | None:
    digest = c.current.digest
    if digest and any(seen.digest == digest for seen in c.earlier):
        return "the same text again"
    return None


def sign_answers_within_seconds(c: Correspondent) -> str | None:
    written, ours = c.current.written_at, c.our_last_mail_at
    if written is not None and ours is not None and \
            timedelta(0) <= written - ours <= FAST_ANSWER:
        return f"answered within {int(FAST_ANSWER.total_seconds())} seconds of our mail"
    return None


SIGNS: tuple[Sign, ...] = (sign_automatic_mail, sign_vacation_subject, sign_same_text_again,
                           sign_answers_within_seconds)


def looks_automatic(correspondent: Correspondent) -> str | None:
    """The first sign that the correspondent is a machine, or None: a person."""
    for sign in SIGNS:
        found = sign(correspondent)
        if found is not None:
            return found
    return None


def may_suppress(template: str) -> bool:
    """Whether the cap may hold back an answer of this kind at all."""
    return template not in NEVER_SUPPRESSED


def text_digest(text: str) -> str | None:
    """A digest of TEXT with white space collapsed; None for an empty text
    (two empty mails prove nothing)."""
    collapsed = " ".join(text.split())
    return hashlib.sha256(collapsed.encode("utf-8", "surrogatepass")).hexdigest() \
        if collapsed else None
