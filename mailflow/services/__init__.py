"""Use cases: each function does one thing the desk does, inside the caller's
transaction.  Services never commit; the edges (CLI command, inbound message,
scheduled job) do."""
