"""The database adapter: engine, transactions, schema migrations.

Transactions begin and end at the edges (one CLI command, one inbound
message, one scheduled job) through `transaction()`.  On SQLite every write
transaction starts with BEGIN IMMEDIATE, so two writers queue instead of
failing half-way; on PostgreSQL the services lock a client's row before
touching its balance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from mailflow.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's default, which migrations/env.py keeps


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (psycopg2 is not a dependency)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_db_engine(url: str, **kwargs) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"database_url: cannot parse {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _make_sqlite_transactional(engine)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"database_url: unsupported database {parsed.get_backend_name()!r}"
                          " (use sqlite:/// or postgresql+psycopg://)")
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


#: How long a SQLite connection waits for another's write lock.
BUSY_TIMEOUT_MS = 30_000


def _make_sqlite_transactional(engine: Engine) -> None:
    """Let SQLAlchemy, not pysqlite, emit BEGIN — as BEGIN IMMEDIATE — and turn on WAL."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(session_or_engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) \
        else session_or_engine
    return bind.dialect.name == "postgresql"


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade_schema(url: str, revision: str = "head") -> None:
    """`mailflow db upgrade`: create the schema or migrate it to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def schema_revision(engine: Engine) -> str | None:
    """The schema's Alembic revision, None before `mailflow db upgrade`.  Read from
    Alembic's own table without importing Alembic, which would cost every command
    about 0.3 s of start-up."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(VERSION_TABLE):
            return None
        revisions = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")
                                       ).scalars().all()
    if len(revisions) > 1:
        raise ConfigError(f"the database is at several schema revisions at once "
                          f"({', '.join(revisions)}); `mailflow db upgrade` cannot choose")
    return revisions[0] if revisions else None
