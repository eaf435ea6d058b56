"""What every command module shares: the `App` (settings, engine and desk,
built on first use), `--json`, `emit_json`, `table`, the `DATE` type, and the
group class that turns errors into exit codes.

Exit codes: 0 success, 1 a domain error (one line), 2 a usage or configuration
error.  This module imports only click and the standard library at the top, so
`mailflow --help` stays fast; everything heavy is imported on first use.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, tzinfo
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

import click

from mailflow.errors import ConfigError, MailflowError, OutOfRange

if TYPE_CHECKING:
    from rich.console import Console

    from mailflow.config import Settings
    from mailflow.desk import Desk

DATE = click.DateTime(formats=["%Y-%m-%d"])


@cache
def console() -> Console:
    """The one rich console of the command line (rich is imported on first use)."""
    from rich.console import Console

    return Console()


class App:
    """Settings, engine and desk, built on first use so `--help` needs no config."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    @cached_property
    def settings(self) -> Settings:
        from mailflow.config import load_settings

        return load_settings(self.config_path)

    @cached_property
    def engine(self):
        from mailflow.db import create_db_engine

        return create_db_engine(self.settings.database_url)

    @cached_property
    def desk(self) -> Desk:
        from mailflow.desk import Desk

        return Desk(self.settings)

    def close(self) -> None:
        """Close the engine's connections, if the command opened any (SQLite then
        checkpoints its write-ahead log, as the last connection to close does)."""
        if "engine" in self.__dict__:
            self.engine.dispose()

    def session(self, *, check_schema: bool = True):
        from mailflow.db import schema_revision, transaction

        if check_schema and schema_revision(self.engine) is None:
            raise MailflowError("the database has no schema yet: run `mailflow db upgrade`")
        return transaction(self.engine)


pass_app = click.make_pass_decorator(App)


class UsageProblem(click.ClickException):
    exit_code = 2


def _database_error(error: Exception) -> bool:
    """Whether `error` is SQLAlchemy's OperationalError (if SQLAlchemy was never
    imported, no command touched the database and it cannot be)."""
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(error, exc.OperationalError)


class MailflowGroup(click.Group):
    """Turns domain errors into one line and exit 1, configuration errors and
    numbers or dates out of range into one line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, OutOfRange) as error:
            raise UsageProblem(str(error)) from None
        except MailflowError as error:
            raise click.ClickException(str(error)) from None
        except Exception as error:
            if not _database_error(error):
                raise
            detail = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise click.ClickException(f"database error: {detail}") from None


def _zone() -> tzinfo | None:
    """The agency's time zone, from the running command's settings (None
    outside a command, or before its settings could be read)."""
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(App) if ctx is not None else None
    if app is None:
        return None
    try:
        return app.settings.tz
    except ConfigError:
        return None


def _jsonable(value: Any) -> Any:
    """Dates as YYYY-MM-DD; instants in the agency's zone with their offset
    (`2027-02-27T00:00:00+09:00`), as DESIGN §3 asks of every timestamp shown."""
    if isinstance(value, datetime):
        zone = _zone()
        return (value.astimezone(zone) if zone is not None and value.tzinfo else value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return value


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_jsonable, ensure_ascii=False, indent=2))


def plural(count: int, noun: str) -> str:
    """`1 credit`, `2 credits`, `0 credits`: the CLI's counts read as English."""
    return f"{count} {noun}" if abs(count) == 1 else f"{count} {noun}s"


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a table.  Cells are plain text: a subject such as `[bold] :smile:`
    is a client's words, printed as written, never read as rich markup or emoji."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=Text(title), title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(Text("" if cell is None else str(_jsonable(cell))) for cell in row))
    console().print(grid)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def local_time(value: datetime | None, desk: Desk, *, none: str | None = None) -> str | None:
    """`value` in the desk's zone as YYYY-MM-DD HH:MM (`none` when there is no value)."""
    return value.astimezone(desk.tz).strftime("%Y-%m-%d %H:%M") if value else none
