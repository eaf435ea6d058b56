"""What every use case needs besides the session: settings, templates, a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from mailflow.config import Settings
from mailflow.errors import ConfigError

if TYPE_CHECKING:
    from mailflow.render import Renderer


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Desk:
    settings: Settings
    clock: Callable[[], datetime] = system_clock

    def __post_init__(self) -> None:
        # The renderer is built when the first mail is; a templates_dir that is no
        # folder must still stop the desk (and `serve`) at once, not that mail.
        templates_dir = self.settings.templates_dir
        if templates_dir is not None and not Path(templates_dir).is_dir():
            raise ConfigError(f"templates_dir: {templates_dir} is not a folder")

    @cached_property
    def renderer(self) -> Renderer:
        """Built on first use: commands that send no mail do without Jinja (about
        0.03 s of start-up warm, several times that cold)."""
        from mailflow.render import Renderer

        return Renderer(self.settings.templates_dir, timezone=self.settings.timezone,
                        subject_tag=self.settings.credits.subject_tag)

    @property
    def tz(self) -> ZoneInfo:
        return self.settings.tz

    def now(self) -> datetime:
        return self.clock()

    def today(self) -> date:
        return self.now().astimezone(self.tz).date()

    def tag(self, request_id: int) -> str:
        return self.settings.credits.subject_tag.format(id=request_id)
