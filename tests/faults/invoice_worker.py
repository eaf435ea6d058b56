"""One process issuing invoices, for the concurrency tests of invoice numbers.

    python -m tests.faults.invoice_worker DB_URL REQUESTER COUNT GO_FILE

Waits for GO_FILE to exist (so two workers start together), then issues COUNT
invoices for the client of REQUESTER, one transaction each, and prints the
numbers it got, one a line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mailflow.config import settings_from_mapping
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.services import billing
from mailflow.services.clients import find_client


def main(url: str, requester: str, count: int, go: Path) -> None:
    engine = create_db_engine(url)
    desk = Desk(settings_from_mapping({"staff": {"notify": ["staff@agency.example"]}}))
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    for n in range(count):
        with transaction(engine) as session:
            client = find_client(session, requester)
            invoice = billing.issue_invoice(session, desk, client=client, credits=1,
                                            requester=requester,
                                            source_message_id=f"buy.{n}.{requester}")
            print(invoice.number, flush=True)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
