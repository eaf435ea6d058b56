"""`outbox` and `show` make what the loop guard held back visible, and `show ID
--raw N` gives a comment's original (issue 8 points 3 and 4).  Both databases."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from sqlmodel import select

from mailflow.cli import cli
from mailflow.config import settings_from_mapping
from mailflow.core.ledger import LotKind
from mailflow.db import create_db_engine, transaction, upgrade_schema
from mailflow.desk import Desk
from mailflow.models import Outbox
from mailflow.services import clients, credits
from mailflow.services.inbound import handle_message
from tests.inbound.test_answers import CLIENT, STAFF, SUPPORT, make_mail


def test_outbox_and_show_list_held_back_answers_and_the_original(tmp_path, empty_db_url,
                                                                 clock):
    upgrade_schema(empty_db_url)
    engine = create_db_engine(empty_db_url)
    policy = {"autoreply_limit_per_hour": 1}
    desk = Desk(settings_from_mapping({"mailbox": {"address": SUPPORT},
                                       "staff": {"notify": [STAFF]}, "policy": policy}),
                clock=clock)
    with transaction(engine) as session:
        client = clients.add_client(session, desk, name="Acme", emails=[CLIENT])
        credits.add_lot(session, desk, client=client, kind=LotKind.PURCHASE, credits=5)
    with transaction(engine) as session:
        first = handle_message(session, desk, make_mail(subject="Banner", body="Same text"))
    with transaction(engine) as session:
        ack_id = session.exec(select(Outbox.message_id).where(
            Outbox.template == "client/ack")).first()
    for body in ("Same text", "Blue, please.\n\nOn Thu, Support wrote:\n> Quoted words\n"):
        with transaction(engine) as session:
            handle_message(session, desk, make_mail(subject="Re: Banner", body=body,
                                                    in_reply_to=ack_id))
    engine.dispose()
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({"database_url": empty_db_url,
                                      "mailbox": {"address": SUPPORT}}))
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--config", str(config), *args], env={"COLUMNS": "250"})
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    assert "suppressed" in run("outbox")  # plain `outbox`, not only --all
    shown = run("show", str(first.request_id))
    assert "client/comment_received (suppressed)" in shown
    messages = json.loads(run("show", str(first.request_id), "--json"))["messages"]
    number = str(max(n for n, m in enumerate(messages, start=1) if m["direction"] == "in"))
    original = run("show", str(first.request_id), "--raw", number)
    assert "On Thu, Support wrote:" in original and "Blue, please." in original
    bad = runner.invoke(cli, ["--config", str(config), "show", str(first.request_id),
                              "--raw", "99"])
    assert bad.exit_code == 1 and "not 99" in bad.output
