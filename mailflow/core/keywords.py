"""The old name of the decision reader, kept for callers that only need a command.

The reader itself is :mod:`mailflow.core.decisions` (sentence by sentence,
small named rules); :func:`detect_command` is its reading reduced to the
command, with :attr:`Command.AMBIGUOUS` when the client must be asked.
"""

from __future__ import annotations

from mailflow.core.decisions import Command, read_reply, strip_subject

__all__ = ["Command", "detect_command", "strip_subject"]


def detect_command(new_text: str, subject: str) -> Command | None:
    """The command in a reply's new text or subject, or None for a comment."""
    return read_reply(new_text, subject).command
