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
