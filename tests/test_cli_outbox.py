"""`outbox` never stops silently (issue 9, point 9c): a page of at most --limit
rows (200 by default) from --offset, and a line saying which rows of how many
when there are more.  Both databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml
from click.testing import CliRunner

from mailflow.cli import cli
from mailflow.db import create_db_engine, transaction, upgrade_schema
from mailflow.models import Outbox, OutboxStatus

ROWS = 250


@pytest.fixture
def run(tmp_path, empty_db_url):
    upgrade_schema(empty_db_url)
    engine = create_db_engine(empty_db_url)
    with transaction(engine) as session:  # 250 sent, 3 pending
        for n in range(ROWS + 3):
            session.add(Outbox(message_id=f"<m{n}@agency.example>", template="client/ack",
                               to_addrs=f"c{n}@client.example", subject=f"Mail {n}",
                               body_text=f"Body {n}", created_at=datetime.now(UTC),
                               status=OutboxStatus.SENT if n < ROWS else OutboxStatus.PENDING))
    engine.dispose()
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({"database_url": empty_db_url}))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--config", str(config), "outbox", *args])
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return invoke


def subjects(result) -> list[str]:
    return [row["subject"] for row in json.loads(result.stdout)]


def test_all_says_how_many_it_shows_of_how_many(run):
    result = run("--all", "--json")
    assert subjects(result) == [f"Mail {n}" for n in range(200)]
    assert "showing 1–200 of 253" in result.stderr and "--offset 200" in result.stderr
    table = run("--all")
    assert "showing 1–200 of 253" in table.stdout


def test_the_next_page_and_the_last(run):
    assert subjects(run("--all", "--json", "--offset", "200", "--limit", "50")) == \
        [f"Mail {n}" for n in range(200, 250)]
    last = run("--all", "--json", "--offset", "250")
    assert subjects(last) == ["Mail 250", "Mail 251", "Mail 252"]
    assert "showing 251–253 of 253" in last.stderr


def test_everything_on_one_page_says_nothing_more(run):
    result = run()  # pending and failed only: the 3 pending
    assert "Mail 250" in result.stdout and "Mail 252" in result.stdout
    assert "Mail 249" not in result.stdout and "showing" not in result.output


@pytest.mark.parametrize("args", [["--limit", "0"], ["--limit", "100001"],
                                  ["--offset", "-1"]])
def test_a_limit_or_offset_out_of_range_is_a_usage_error(run, args):
    run("--all", *args, code=2)
