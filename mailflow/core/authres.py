"""Read the DMARC verdict our own mail server wrote (RFC 8601 Authentication-Results).

Any sender can write `Authentication-Results` headers; only those whose
authserv-id is `policy.trusted_authserv_id` (compared without case) were written
by a server we trust, and a trusted server removes such headers arriving from
outside (RFC 8601 §5).  The rules, each for a forging trick seen in an attack run:

- every trusted header counts, wherever it sits among untrusted ones;
- a `dmarc=fail` in any trusted header wins over any `pass`;
- only a result counts: property values (`smtp.mailfrom=dmarc=pass@evil.example`)
  and comments (`(relay said dmarc=pass)`) never do — the `authres` package
  parses the RFC 8601 grammar, so they stay what they are;
- a header `authres` cannot parse is untrusted, unless its authserv-id is ours:
  then our server's verdict cannot be read, and precision comes first — the
  message is treated as failing (`UNREADABLE`): held for staff, never acted on.

`temperror`, `permerror` and `none` are not failures: the sender's domain has
no usable DMARC policy, which is common and says nothing about forgery.

Pure: the `authres` package (Apache-2.0) and the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import authres  # the PyPI package (absolute import), not this module
import authres.dmarc

__all__ = ["FAIL", "UNREADABLE", "dmarc_verdict", "forbids_action"]

FAIL = "fail"
#: A trusted header whose DMARC result cannot be read: treated as a failure.
UNREADABLE = "unreadable"

_PARSER = authres.FeatureContext(authres.dmarc)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_COMMENT = re.compile(r"\([^()]*\)")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _header_values(headers: str | Iterable[str] | Mapping[str, str] | None) -> list[str]:
    """One string per header.  Text may hold several headers, one per line
    (a line starting with white space continues the one before: folding)."""
    if not headers:
        return []
    if isinstance(headers, Mapping):  # a mapping holds only one value per name
        headers = headers.get("authentication-results") or ""
    if isinstance(headers, str):
        return _FOLD.sub(" ", headers).splitlines()
    return [_FOLD.sub(" ", value) for value in headers]


def _claimed_authserv_id(value: str) -> str:
    """The authserv-id a header claims, read without the full grammar: the first
    word once leading comments are dropped (for headers `authres` refuses)."""
    head = value.split(";", 1)[0]
    for _ in range(5):  # nested comments: a few rounds are plenty for a real id
        head = _COMMENT.sub(" ", head)
    words = head.replace("(", " ").split()
    return words[0].strip('"').lower() if words else ""


def _parse(value: str):
    """The parsed header, or None when it does not follow the grammar."""
    # A non-ASCII character (RFC 6532 values) is never part of the grammar's
    # structure: read it as a letter so an internationalised value parses.
    try:
        return _PARSER.parse_value(_NON_ASCII.sub("x", value))
    except Exception:  # authres raises its own SyntaxError family; anything else too
        return None


def dmarc_verdict(headers: str | Iterable[str] | Mapping[str, str] | None,
                  authserv_id: str) -> str | None:
    """The DMARC result our trusted server wrote: `fail` when any trusted header
    says so; else `unreadable` when a trusted header cannot be parsed; else the
    first trusted result (`pass`, `none`, `temperror`…); None when no trusted
    header carries a DMARC result.

    HEADERS: every Authentication-Results value of the message (a list, or text
    with one header per line)."""
    ours = authserv_id.strip().lower()
    if not ours:
        return None
    results: list[str] = []
    unreadable = False
    for value in _header_values(headers):
        parsed = _parse(value)
        if parsed is None:
            unreadable = unreadable or _claimed_authserv_id(value) == ours
        elif str(parsed.authserv_id).lower() == ours:
            results += [str(r.result).lower() for r in parsed.results
                        if str(r.method).lower() == "dmarc"]
    if FAIL in results:
        return FAIL
    if unreadable:
        return UNREADABLE
    return results[0] if results else None


def forbids_action(headers: str | Iterable[str] | Mapping[str, str] | None,
                   authserv_id: str | None) -> bool:
    """True when the trusted server's DMARC verdict is a failure, or cannot be read."""
    return bool(authserv_id) and dmarc_verdict(headers, authserv_id) in (FAIL, UNREADABLE)
