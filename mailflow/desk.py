"""What every use case needs besides the session: settings, templates, a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from mailflow.config import Settings
from mailflow.render import Renderer


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Desk:
    settings: Settings
    clock: Callable[[], datetime] = system_clock
    renderer: Renderer = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.renderer is None:
            self.renderer = Renderer(self.settings.templates_dir,
                                     timezone=self.settings.timezone,
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
