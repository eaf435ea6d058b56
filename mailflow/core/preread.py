"""What can be read off a message without the database: whether a machine
sent it, its new text (the reply trimmed of quotes and signature) and what
that text says (`decisions.read_reply`).

Pure and picklable, so a backlog's next commit group is read by the parse
worker while the current group commits (`intake_group.ParseAhead`), and the
main process only asks the database its questions.  Whoever reads it must
get exactly what `gather` would compute itself: `preread` is the one place
that computes it, and `matches` tells whether a given result is for these
settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailflow.core.autoreply import Automatic, classify_automatic
from mailflow.core.decisions import Reading, read_reply
from mailflow.core.message import InboundMessage
from mailflow.core.trim import trim_reply


@dataclass(frozen=True)
class Preread:
    """`automatic`: the rule that recognised a machine, or None for a person;
    `new_text`: the trimmed reply; `reading`: the command it states.
    `own_address`: the support address it was classified against."""

    own_address: str
    automatic: Automatic | None
    new_text: str
    reading: Reading

    def matches(self, own_address: str) -> bool:
        return self.own_address == own_address


def preread(msg: InboundMessage, own_address: str) -> Preread:
    new_text = trim_reply(msg.text)
    return Preread(own_address=own_address,
                   automatic=classify_automatic(msg, own_address=own_address),
                   new_text=new_text, reading=read_reply(new_text, msg.subject))
