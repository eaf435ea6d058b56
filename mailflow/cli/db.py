"""`mailflow db upgrade`: the database schema."""

from __future__ import annotations

import click

from mailflow.cli.app import App, pass_app


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the schema, or migrate it to the newest version."""
    from mailflow.db import schema_revision, upgrade_schema

    upgrade_schema(app.settings.database_url)
    click.echo(f"database at revision {schema_revision(app.engine)}")
