"""What to do with an inbound message: small named rules over facts (DESIGN §3).

The adapter gathers the facts (which request the message links to, whose
address sent it, whether it refers to the current quote); the rules here
decide, without I/O.  First rule that decides wins, in the order of §3.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from mailflow.core.authres import dmarc_verdict  # noqa: F401 (moved; old callers import it here)
from mailflow.core.decisions import Command
from mailflow.core.states import Status


class Verdict(StrEnum):
    OWN = "own"                          # our own message came back: ignore
    AUTOMATIC = "automatic"              # auto-reply, bulk, receipt, complaint: ignore
    BOUNCE = "bounce"                    # one of ours bounced: mark it, tell staff
    NEW_REQUEST = "new_request"
    BALANCE = "balance"
    BUY = "buy"                          # BUY n: an invoice, or a refusal saying why
    ASK_BUY = "ask_buy"                  # an unclear purchase: ask for BUY n alone
    APPROVE = "approve"
    REJECT = "reject"
    ASK_WHICH = "ask_which"              # both approve and reject: ask
    COMMENT = "comment"                  # linked, no command: store, forward to staff
    NOT_AUTHORISED = "not_authorised"    # a command that fails a check: explain
    FORGED = "forged"                    # fails the DMARC check: no answer, staff told
    DUPLICATE_ANSWER = "duplicate_answer"  # the same answer again: nothing more to do
    ALREADY_DECIDED = "already_decided"  # the other answer came first: say so
    QUOTE_EXPIRED = "quote_expired"
    UNKNOWN_SENDER = "unknown_sender"
    STAFF_MAIL = "staff_mail"            # a staff member on a request: to the client, commands
    STAFF_REFUSED = "staff_refused"      # staff commands or a notice's reply from a non-member
    LIST_HELD = "list_held"              # list or group mail on behalf of no client: held
    SPAM = "spam"                        # our spam filter's verdict (policy.spam_header): held


class Reason(StrEnum):
    NOT_CLIENT = "not_client"
    NOT_REQUESTER = "not_requester"
    NO_QUOTE_REFERENCE = "no_quote_reference"
    NO_OPEN_QUOTE = "no_open_quote"
    RELAYED = "relayed"                  # a list relayed it: the client's mail, not a decision


@dataclass(frozen=True)
class Facts:
    """What the adapter found out about one message."""

    own: bool = False
    automatic: str | None = None            # the reason, when no human wrote it
    bounce: bool = False
    command: Command | None = None          # AMBIGUOUS: mentions a decision, not a clear one
    buy_count: int | None = None            # BUY n: the count, when it is an integer
    buy_count_text: str | None = None       # BUY n: the count as the client wrote it
    buy_unclear: bool = False               # only a purchase, but not a clear order
    sender_client_id: int | None = None
    request_id: int | None = None           # the request the message links to
    request_client_id: int | None = None
    request_status: Status | None = None
    sender_may_answer: bool = False         # policy.approve_from allows this address
    refers_to_current_quote: bool = False
    refers_to_old_quote: bool = False       # it answers an earlier (void) quote
    quote_expired: bool = False
    dmarc_failed: bool = False
    require_quote_reference: bool = True
    staff_sender: bool = False              # the From is a staff.members address
    replies_to_staff_notice: bool = False   # it names one of our staff notices
    staff_commands: bool = False            # its new text has staff command lines
    list_mail: bool = False                 # list or group mail (DESIGN §3 rule 2)
    relayed: bool = False                   # ... whose From is the list, not the client
    spam: bool = False                      # policy.spam_header says spam


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: Reason | None = None


Rule = Callable[[Facts], Decision | None]

_ANSWERS = (Command.APPROVE, Command.REJECT)


def rule_own(f: Facts) -> Decision | None:
    return Decision(Verdict.OWN) if f.own else None


def rule_automatic(f: Facts) -> Decision | None:
    if f.bounce:
        return Decision(Verdict.BOUNCE)
    return Decision(Verdict.AUTOMATIC) if f.automatic else None


def rule_spam(f: Facts) -> Decision | None:
    """Our own spam filter's verdict: held for staff, never answered."""
    return Decision(Verdict.SPAM) if f.spam else None


def rule_list(f: Facts) -> Decision | None:
    """List and group mail on behalf of no client is held for staff (never
    answered: an answer would go to the list).  From a client it is a request
    or a comment like any other, answered at the client's own address."""
    if f.list_mail and f.sender_client_id is None:
        return Decision(Verdict.LIST_HELD)
    return None


def rule_relayed(f: Facts) -> Decision | None:
    """A decision relayed by a list (its From is the list's, the client's address
    only named by the relay) is no decision: nobody vouches that the client
    sent it.  It reaches staff as a comment."""
    if f.relayed and f.command in _ANSWERS:
        return Decision(Verdict.COMMENT, Reason.RELAYED)
    return None


def rule_forged(f: Facts) -> Decision | None:
    """A sender our own mail server says is forged (DMARC fail) is never acted on
    and never answered — not only for APPROVE/REJECT: a forged request would
    spend staff time and a forged BALANCE would leak a client's statement."""
    return Decision(Verdict.FORGED) if f.dmarc_failed else None


def rule_staff(f: Facts) -> Decision | None:
    """Staff by mail (§3 rule 8): a staff member writing on a request runs it;
    staff commands, or a reply to a staff notice, from anyone else do nothing
    and staff are told.  (A member's mail linked to no request is held as an
    unknown sender's: there is no request to act on.)"""
    if f.staff_sender:
        return Decision(Verdict.STAFF_MAIL) if f.request_id is not None else None
    if f.replies_to_staff_notice or f.staff_commands:
        return Decision(Verdict.STAFF_REFUSED)
    return None


def rule_buy(f: Facts) -> Decision | None:
    """`BUY n` / 購入 from a client address, in new mail or in a reply to any
    request: an order for the sender's own client (an invoice, or a refusal
    that says why). It never answers a quote: a BUY in a reply to a quote
    approves nothing.  A purchase that is all the message says but is not a
    clear order (a question, a condition, two counts) is asked about.  An order
    relayed by a list is no order: nobody vouches that the client sent it."""
    if f.sender_client_id is None or f.relayed:
        return None
    if f.command is Command.BUY:
        return Decision(Verdict.BUY)
    return Decision(Verdict.ASK_BUY) if f.buy_unclear else None


def rule_unlinked(f: Facts) -> Decision | None:
    """Not linked to a request: a new request, a balance question, or a stranger.
    An unlinked APPROVE still becomes a request: nothing a client writes is lost."""
    if f.request_id is not None and f.sender_client_id == f.request_client_id:
        return None
    if f.request_id is not None and f.sender_client_id is not None and f.command in _ANSWERS:
        return Decision(Verdict.NOT_AUTHORISED, Reason.NOT_CLIENT)
    if f.sender_client_id is None:
        return Decision(Verdict.UNKNOWN_SENDER)
    if f.command is Command.BALANCE:
        return Decision(Verdict.BALANCE)
    return Decision(Verdict.NEW_REQUEST)


def rule_answer(f: Facts) -> Decision | None:
    """APPROVE / REJECT on a linked request: authorise, then act (§3 step 4)."""
    if f.command not in _ANSWERS:
        return None
    if not f.sender_may_answer:
        return Decision(Verdict.NOT_AUTHORISED, Reason.NOT_REQUESTER)
    if f.request_status is not Status.QUOTED:
        already = {Command.APPROVE: Status.APPROVED, Command.REJECT: Status.REJECTED}
        if f.request_status is already[f.command]:
            return Decision(Verdict.DUPLICATE_ANSWER)
        if f.request_status in already.values():
            return Decision(Verdict.ALREADY_DECIDED)
        return Decision(Verdict.NOT_AUTHORISED, Reason.NO_OPEN_QUOTE)
    # A reply to an earlier quote is no decision on the current one, whatever the policy.
    if f.refers_to_old_quote or (f.require_quote_reference and not f.refers_to_current_quote):
        return Decision(Verdict.NOT_AUTHORISED, Reason.NO_QUOTE_REFERENCE)
    if f.quote_expired:
        return Decision(Verdict.QUOTE_EXPIRED)
    return Decision(Verdict.APPROVE if f.command is Command.APPROVE else Verdict.REJECT)


def rule_linked_other(f: Facts) -> Decision | None:
    """An unclear decision on an open quote: ask, change nothing (§3 step 4).

    Without an open quote there is nothing to ask about: the reply is a
    comment."""
    if f.command is Command.AMBIGUOUS and f.request_status is Status.QUOTED \
            and not f.quote_expired:
        return Decision(Verdict.ASK_WHICH)
    if f.command is Command.BALANCE:
        return Decision(Verdict.BALANCE)
    return Decision(Verdict.COMMENT)


RULES: tuple[Rule, ...] = (rule_own, rule_automatic, rule_spam, rule_list, rule_forged,
                           rule_staff, rule_buy, rule_unlinked, rule_relayed, rule_answer,
                           rule_linked_other)


def decide(facts: Facts) -> Decision:
    for rule in RULES:
        decision = rule(facts)
        if decision is not None:
            return decision
    raise AssertionError("the last rule always decides")  # pragma: no cover


_TOKEN_LINE = re.compile(r"(?:Quote reference|見積番号|見積参照)\s*[:：]\s*([a-z2-7]{20,40})",
                         re.IGNORECASE)
_PLUS_TOKEN = re.compile(r"^[^@+]+\+([a-z2-7]{20,40})@", re.IGNORECASE)


def tokens_in(recipients: tuple[str, ...], text: str) -> list[str]:
    """Quote tokens a message carries: in a `support+TOKEN@` recipient, or in a
    (possibly quoted) 'Quote reference:' line of its text."""
    found = [m.group(1).lower() for r in recipients if (m := _PLUS_TOKEN.match(r))]
    found += [m.group(1).lower() for m in _TOKEN_LINE.finditer(text)]
    return list(dict.fromkeys(found))


_TAG_TEMPLATE_CACHE: dict[str, re.Pattern] = {}


def request_number_in(subject: str, tag_format: str) -> int | None:
    """The request number in a subject tag such as `[REQ-12]` (format from config)."""
    pattern = _TAG_TEMPLATE_CACHE.get(tag_format)
    if pattern is None:
        before, _, after = unicodedata.normalize("NFKC", tag_format).partition("{id}")
        pattern = re.compile(re.escape(before) + r"\s*(\d{1,12})\s*" + re.escape(after),
                             re.IGNORECASE)
        _TAG_TEMPLATE_CACHE[tag_format] = pattern
    # NFKC: full-width brackets, hyphens and digits (［ＲＥＱ－１２］) read as ASCII.
    match = pattern.search(unicodedata.normalize("NFKC", subject))
    return int(match.group(1)) if match else None
