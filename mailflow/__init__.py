"""mailflow: a prepaid-support desk over ordinary e-mail."""

__version__ = "0.1.0"
