"""policy.spam_header and policy.staff_notice_limit_per_hour: one-line errors."""

import pytest

from mailflow.config import settings_from_mapping
from mailflow.errors import ConfigError


@pytest.mark.parametrize(("value", "marker"), [
    ("X-Spam-Flag: YES", ("x-spam-flag", "yes")), ("X-Spam:yes", ("x-spam", "yes")),
    (None, None),
])
def test_spam_header(value, marker):
    assert settings_from_mapping({"policy": {"spam_header": value}}).policy.spam_marker == marker


@pytest.mark.parametrize("value", ["X-Spam-Flag", "X Spam: yes", ": yes", "X-Spam:"])
def test_spam_header_must_be_name_and_value(value):
    with pytest.raises(ConfigError, match="policy.spam_header"):
        settings_from_mapping({"policy": {"spam_header": value}})


@pytest.mark.parametrize(("value", "ok"), [(None, True), (1, True), (0, False), (-3, False)])
def test_staff_notice_limit(value, ok):
    mapping = {"policy": {"staff_notice_limit_per_hour": value}}
    if ok:
        assert settings_from_mapping(mapping).policy.staff_notice_limit_per_hour == value
    else:
        with pytest.raises(ConfigError, match="staff_notice_limit_per_hour"):
            settings_from_mapping(mapping)


def test_migration_0010_adds_the_digest_column(empty_db_url):
    """inbound.digest comes with 0010_inbound, chained on 0008_mails."""
    import sqlalchemy as sa

    from mailflow.db import create_db_engine, upgrade_schema

    upgrade_schema(empty_db_url, "0008_mails")
    engine = create_db_engine(empty_db_url)
    with engine.connect() as connection:
        assert "digest" not in {c["name"] for c in sa.inspect(connection).get_columns("inbound")}
    upgrade_schema(empty_db_url)
    with engine.connect() as connection:
        assert "digest" in {c["name"] for c in sa.inspect(connection).get_columns("inbound")}
    engine.dispose()


def test_migration_0013_keeps_text_digests_and_look_back_indexes(empty_db_url):
    """0013_lookback adds inbound.text_digest and the look-back indexes, and
    goes back down to 0012 cleanly."""
    import sqlalchemy as sa
    from alembic import command

    from mailflow.db import alembic_config, create_db_engine, upgrade_schema

    def shape():
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            return ({c["name"] for c in inspector.get_columns("inbound")},
                    {i["name"] for i in inspector.get_indexes("inbound")},
                    {i["name"] for i in inspector.get_indexes("outbox")})

    upgrade_schema(empty_db_url, "0012_outbox_template")
    engine = create_db_engine(empty_db_url)
    columns, inbound_ix, outbox_ix = shape()
    assert "text_digest" not in columns and "ix_inbound_from_addr" in inbound_ix
    upgrade_schema(empty_db_url)
    columns, inbound_ix, outbox_ix = shape()
    assert "text_digest" in columns
    assert "ix_inbound_from_received" in inbound_ix and "ix_inbound_from_addr" not in inbound_ix
    assert "ix_outbox_to_sent" in outbox_ix
    command.downgrade(alembic_config(empty_db_url), "0012_outbox_template")
    columns, inbound_ix, outbox_ix = shape()
    assert "text_digest" not in columns and "ix_outbox_to_sent" not in outbox_ix
    engine.dispose()
