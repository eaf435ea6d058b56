"""Shared fixtures: databases (SQLite and PostgreSQL), a controllable clock, a desk.

Every database test runs twice, on SQLite and on PostgreSQL.  Each test gets a
fresh database copied from a template migrated once per session.  In CI
(`CI=true`) a PostgreSQL server that cannot be reached is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from mailflow.config import Settings, settings_from_mapping
from mailflow.db import create_db_engine, upgrade_schema
from mailflow.desk import Desk
from tests.requirements import unavailable

try:  # the mail-server fixtures (Dovecot, aiosmtpd)
    from tests.servers.fixtures import *  # noqa: F403
except ImportError:  # pragma: no cover - only while that module is being written
    pass


def pytest_collection_modifyitems(items):
    """Long tests first: with `pytest -n auto` each worker starts on one of them
    instead of the last of them running alone at the end (order is otherwise kept)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="Rewrite tests/golden/ from the templates (or UPDATE_GOLDEN=1).")


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden") or os.environ.get("UPDATE_GOLDEN"))


PG_ADMIN = os.environ.get("MAILFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_admin_connection() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)


def pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_schema(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template():
    """A migrated template database, or the reason PostgreSQL cannot be used."""
    name = f"mailflow_tpl_{uuid.uuid4().hex[:10]}"
    try:
        with pg_admin_connection() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        yield None, f"PostgreSQL not reachable at {PG_ADMIN}: {str(error).strip()[:200]}"
        return
    upgrade_schema(pg_url(name))
    yield name, None
    with pg_admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_pg_database(template: str) -> str:
    """A copy of TEMPLATE whose commits do not wait for the disk (a test database
    outlives no crash; every transaction is still atomic and isolated)."""
    name = f"mailflow_t_{uuid.uuid4().hex[:12]}"
    with pg_admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    return name


def drop_pg_database(name: str) -> None:
    with pg_admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_pg_database(name: str) -> bool:
    """Empty every table of database NAME (the schema and `alembic_version` stay,
    identities restart at 1): as good as a fresh copy of the template, in a few
    milliseconds instead of the second or two of CREATE/DROP DATABASE.  Whatever
    a test left connected is disconnected first.  False if it could not be done
    (the caller then makes a fresh copy)."""
    try:
        with pg_admin_connection() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        with psycopg.connect(pg_url(name).replace("+psycopg", ""), autocommit=True,
                             connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '5s'")
            tables = [row[0] for row in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'")]
            if tables:
                conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def pg_reusable(pg_template):
    """One migrated database for this test session, emptied before each test."""
    template, _reason = pg_template
    if template is None:
        yield None
        return
    name = make_pg_database(template)
    yield name
    drop_pg_database(name)


@pytest.fixture
def pg_db_url(pg_template, pg_reusable):
    """A migrated PostgreSQL database with no rows (for tests about PostgreSQL only)."""
    template, reason = pg_template
    if template is None:
        unavailable(reason)
    if reset_pg_database(pg_reusable):
        yield pg_url(pg_reusable)
        return
    name = make_pg_database(template)  # something held on: a fresh copy instead
    yield pg_url(name)
    drop_pg_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, migrated database URL: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "mailflow.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    return request.getfixturevalue("pg_db_url")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request, tmp_path):
    """A database with no schema at all: what a new user starts from."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    try:
        with pg_admin_connection() as conn:
            name = f"mailflow_e_{uuid.uuid4().hex[:12]}"
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN}: {str(error).strip()[:200]}")
    yield pg_url(name)
    drop_pg_database(name)


@pytest.fixture
def engine(db_url):
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta) -> None:
        self.current += timedelta(**delta)

    def set(self, value: datetime) -> None:
        self.current = value


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 26, 1, 0, tzinfo=UTC))  # 10:00 in Tokyo


@pytest.fixture
def settings() -> Settings:
    return settings_from_mapping({"mailbox": {"address": "support@agency.example"},
                                  "staff": {"notify": ["staff@agency.example"]}})


@pytest.fixture
def desk(settings, clock) -> Desk:
    return Desk(settings, clock=clock)
