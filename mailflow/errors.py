"""The one exception family of mailflow.

`MailflowError` and its children are a user's or operator's mistake: the CLI
prints `str(error)` on one line and exits 1 (or 2 for `UsageError`), the mail
pipeline answers with a template.  Anything else is a bug or an outage: the
transaction rolls back and the message is kept aside.
"""


class MailflowError(Exception):
    """A domain error with a message fit for one line."""


class ConfigError(MailflowError):
    """The config file or one of its keys is wrong."""


class NotFound(MailflowError):
    """A client, request or message that does not exist."""


class InvalidTransition(MailflowError):
    """The request's state does not allow this action."""


class InsufficientCredits(MailflowError):
    """A debit larger than the available balance; nothing was taken."""

    def __init__(self, message: str, *, available: int, needed: int) -> None:
        super().__init__(message)
        self.available = available
        self.needed = needed

    @property
    def shortfall(self) -> int:
        return self.needed - self.available


class OutOfRange(MailflowError):
    """A number or date outside its sane range (a typo, or more than the
    database can hold): a usage error, exit 2 on the command line."""


class Conflict(MailflowError):
    """A value that must be unique already exists (an address, a client name)."""
