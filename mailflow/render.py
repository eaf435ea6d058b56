"""Outgoing mail, rendered from templates: pure, no database, no sending.

`Renderer.render("client/quote", "ja", context)` returns a `Rendered`
(subject, text, optional HTML) that the caller writes to the outbox.

Where templates come from
    ``<folder>/<lang>/<name>.txt.j2`` (and an optional ``.html.j2`` alternative).
    Folders are searched in order: the ``templates_dir`` override (when given),
    then the packaged ``templates/``.  An agency can therefore override one
    template and keep the rest.  Languages are ``en`` and ``ja``; any other
    language renders ``en``; a template missing in ``ja`` renders the ``en`` one
    (the whole message then is English, filters included, so it never mixes
    languages).  The HTML alternative is used only when it sits in the same
    folder and language as the text template that was chosen: an override of
    the text alone must not leave the old wording in the HTML part, which is
    what most mail programs show.  Partials (``_balance_footer``, ``_layout``…)
    are included by bare name and resolve to the message's language, falling
    back to ``en``.

Subjects
    Each text template starts with ``{% set subject %}…{% endset %}``.  The
    renderer folds it to one line (CR, LF, tabs and other control characters
    become spaces) so no client-supplied text can inject a header, and cuts
    it to ``MAX_SUBJECT_CHARS`` with "…" (a client's 10,000-character subject
    stays whole in the request; people read the first words), keeping the
    request tag whole.  Templates put ``request.tag`` in the subject
    themselves where there is a request.

Contexts
    Plain dicts (or any objects with attributes): Jinja resolves ``x.y`` on
    both.  Undefined names raise (``StrictUndefined``), so a forgotten key fails
    in tests instead of mailing a blank.  Keys every template needs: ``client``
    (None for an unknown sender), ``support``, ``balance`` (None: no footer) and
    ``now`` (an aware datetime; the renderer never reads the clock).  The
    per-template keys are listed in ``tests/test_render.py`` (``CONTEXTS``).
    The renderer adds ``lang`` (the language rendered) and ``audience``
    (``client`` or ``staff``, from the name).

Filters
    ``yen`` (8000 → ``8,000 yen`` / ``8,000円``), ``date`` (a date, or an aware
    datetime shown in the configured zone → ``Wed 1 Apr 2026`` /
    ``2026年4月1日（水）``; ``date(weekday=False)`` leaves the weekday out),
    ``last_day`` (an expiry instant → the last day it is usable: credits that
    expire at 2027-02-27 00:00 are "usable through Fri 26 Feb 2027"), ``month``
    (``Dec 2026`` / ``2026年12月``), ``credits`` (``1 credit``, ``2 credits`` /
    ``2クレジット``), ``tag`` (a request number → ``[REQ-12]`` with the
    configured format).  Prices with their tax basis: the ``price`` macro of
    ``_labels.j2``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateNotFound,
    Undefined,
)

from mailflow.errors import ConfigError

LANGUAGES = ("en", "ja")
DEFAULT_LANGUAGE = "en"
#: Longer subjects are cut with "…" (a mail program shows far fewer).
MAX_SUBJECT_CHARS = 200

# Line breaks and other control characters; a full-width space (U+3000) is text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029 ]+")
_BLANK_RUN = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class Rendered:
    """One outgoing message's content; headers other than Subject are the caller's."""

    subject: str
    text: str
    html: str | None


def packaged_templates_dir() -> Path:
    """The templates shipped with mailflow.

    An installed wheel carries them as ``mailflow/templates``; an editable
    install or a checkout has them at the repository's top level.
    """
    package = Path(__file__).resolve().parent
    inside = package / "templates"
    return inside if inside.is_dir() else package.parent / "templates"


# -- filters -----------------------------------------------------------------


def format_yen(amount: int, lang: str) -> str:
    """8000 → '8,000 yen' (en) or '8,000円' (ja)."""
    figure = f"{int(amount):,}"
    return f"{figure}円" if lang == "ja" else f"{figure} yen"


def format_size(size: int) -> str:
    """A file's size for people: 512 B, 3.4 KB, 1.2 MB."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1048576:.1f} MB"


def format_credits(count: int, lang: str) -> str:
    """1 → '1 credit', 2 → '2 credits' (en); '2クレジット' (ja)."""
    figure = f"{int(count):,}"
    if lang == "ja":
        return f"{figure}クレジット"
    return f"{figure} credit" if abs(int(count)) == 1 else f"{figure} credits"


_WEEKDAYS_JA = "月火水木金土日"
_WEEKDAYS_EN = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
              "Dec")


def _local_date(value: date | datetime, zone: ZoneInfo) -> date:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(zone).date()
    if not isinstance(value, date):
        raise TypeError(f"date filter needs a date or datetime, got {type(value).__name__}")
    return value


@lru_cache(maxsize=8192)  # a digest run formats the same few days thousands of times
def format_date(value: date | datetime, lang: str, zone: ZoneInfo, *,
                weekday: bool = True) -> str:
    """A calendar day as the client reads it: 'Thu 3 Dec 2026' or
    '2026年12月3日（木）' (`weekday=False`: '3 Dec 2026', '2026年12月3日').

    A datetime is shown in the agency's zone: 23:30 UTC on 31 March is already
    1 April in Tokyo.  A naive datetime is taken as UTC, how the database
    stores times.
    """
    day = _local_date(value, zone)
    if lang == "ja":
        text = f"{day.year}年{day.month}月{day.day}日"
        return f"{text}（{_WEEKDAYS_JA[day.weekday()]}）" if weekday else text
    text = f"{day.day} {_MONTHS_EN[day.month - 1]} {day.year}"
    return f"{_WEEKDAYS_EN[day.weekday()]} {text}" if weekday else text


def format_month(value: date | datetime, lang: str, zone: ZoneInfo) -> str:
    """'Dec 2026' or '2026年12月'."""
    day = _local_date(value, zone)
    return f"{day.year}年{day.month}月" if lang == "ja" else f"{_MONTHS_EN[day.month - 1]} {day.year}"


def last_usable_day(expires_at: datetime | None, zone: ZoneInfo) -> date | None:
    """The last day credits expiring at the instant `expires_at` can be used:
    a lot that expires at 2027-02-27 00:00 in Tokyo is usable through 26 February
    (DESIGN §3: the same convention as a quote's "valid until")."""
    if expires_at is None:
        return None
    aware = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    return (aware.astimezone(zone) - timedelta(microseconds=1)).date()


# -- loading -----------------------------------------------------------------


class _LanguageLoader(BaseLoader):
    """Resolves a bare partial name to ``<lang>/<name>``, else ``en/<name>``."""

    def __init__(self, inner: BaseLoader, lang: str) -> None:
        self.inner = inner
        self.order = tuple(dict.fromkeys((lang, DEFAULT_LANGUAGE)))

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        for lang in self.order:
            try:
                return self.inner.get_source(environment, f"{lang}/{template}")
            except TemplateNotFound:
                continue
        raise TemplateNotFound(template)


def _strict(format_value: Callable[..., str]) -> Callable[..., str]:
    """Make a filter fail on a missing value, as printing it would, instead of formatting it."""

    def apply(value: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        return format_value(value, *args, **kwargs)

    return apply


def _one_line(subject: str) -> str:
    return _CONTROL.sub(" ", subject).strip()


def shorten(text: str, limit: int, *, keep: re.Pattern | None = None) -> str:
    """TEXT cut to at most LIMIT characters, ending in "…"; the first match of
    KEEP (the request tag) stays whole, moved to the end if the cut would split it."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rstrip() + "…"
    tag = keep.search(text) if keep is not None else None
    if tag is not None and tag.end() > limit - 1:
        room = min(tag.start(), max(0, limit - len(tag.group()) - 2))
        cut = text[:room].rstrip() + "… " + tag.group()
    return cut


def _tidy_text(text: str) -> str:
    """At most one blank line in a row (left by optional blocks), one final newline."""
    return _BLANK_RUN.sub("\n\n", text).strip("\n") + "\n"


class Renderer:
    """Renders named templates in a language; holds one Jinja environment per language and kind."""

    def __init__(
        self,
        templates_dir: str | Path | None = None,
        *,
        timezone: str = "Asia/Tokyo",
        subject_tag: str = "[REQ-{id}]",
    ) -> None:
        folders = [packaged_templates_dir()]
        if templates_dir is not None:
            override = Path(templates_dir)
            if not override.is_dir():
                raise ConfigError(f"templates_dir: {override} is not a folder")
            folders.insert(0, override)
        self.folders: tuple[Path, ...] = tuple(folders)
        self.zone = ZoneInfo(timezone)
        self.subject_tag = subject_tag
        before, _, after = subject_tag.partition("{id}")
        self._tag = re.compile(re.escape(before) + r"\d+" + re.escape(after))
        self._envs: dict[tuple[str, bool], Environment] = {}
        self._found: dict[tuple[str, str], tuple[int, str] | None] = {}
        self._html: dict[tuple[int, str], bool] = {}

    def render(self, name: str, lang: str, context: Mapping[str, Any]) -> Rendered:
        """Render ``name`` (``client/quote``, ``staff/new_request``…) for a reader of ``lang``."""
        if (name, lang) not in self._found:  # templates do not change under a running process
            self._found[(name, lang)] = self._locate(name, lang)
        found = self._found[(name, lang)]
        if found is None:
            raise TemplateNotFound(f"{name}.txt.j2")
        index, used_lang = found
        audience = "staff" if name.startswith("staff/") else "client"
        variables = {**context, "lang": used_lang, "audience": audience}

        text_template = self._env(used_lang, html=False).get_template(
            f"@{index}/{used_lang}/{name}.txt.j2"
        )
        module = text_template.make_module(variables)
        if not hasattr(module, "subject"):
            raise ValueError(f"template {text_template.filename} does not set a subject")
        subject = shorten(_one_line(str(module.subject)), MAX_SUBJECT_CHARS, keep=self._tag)
        text = _tidy_text(str(module))

        html = None
        html_path = f"{used_lang}/{name}.html.j2"
        if (index, html_path) not in self._html:
            self._html[(index, html_path)] = (self.folders[index] / html_path).is_file()
        if self._html[(index, html_path)]:
            html = self._env(used_lang, html=True).get_template(f"@{index}/{html_path}").render(
                variables
            )
        return Rendered(subject=subject, text=text, html=html)

    def _locate(self, name: str, lang: str) -> tuple[int, str] | None:
        """(folder index, language) of the text template to use; language beats folder."""
        wanted = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        for candidate in dict.fromkeys((wanted, DEFAULT_LANGUAGE)):
            for index, folder in enumerate(self.folders):
                if (folder / candidate / f"{name}.txt.j2").is_file():
                    return index, candidate
        return None

    def _env(self, lang: str, *, html: bool) -> Environment:
        key = (lang, html)
        if key not in self._envs:
            self._envs[key] = self._make_env(lang, html=html)
        return self._envs[key]

    def _make_env(self, lang: str, *, html: bool) -> Environment:
        """Top-level templates load by ``@<folder index>/<lang>/<name>`` (pinned to the
        folder `_locate` chose); bare partial names go through the language fallback."""
        by_folder = {f"@{i}": FileSystemLoader(folder) for i, folder in enumerate(self.folders)}
        anywhere = ChoiceLoader(list(by_folder.values()))
        env = Environment(
            loader=ChoiceLoader([PrefixLoader(by_folder), _LanguageLoader(anywhere, lang)]),
            undefined=StrictUndefined,
            autoescape=html,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates do not change under a running process
        )
        zone = self.zone
        tag_format = self.subject_tag
        env.filters["yen"] = _strict(lambda amount: format_yen(amount, lang))
        env.filters["credits"] = _strict(lambda count: format_credits(count, lang))
        env.filters["date"] = _strict(
            lambda value, weekday=True: format_date(value, lang, zone, weekday=weekday))
        env.filters["last_day"] = _strict(
            lambda value, weekday=True: format_date(last_usable_day(value, zone), lang, zone,
                                                    weekday=weekday))
        env.filters["month"] = _strict(lambda value: format_month(value, lang, zone))
        env.filters["filesize"] = _strict(format_size)
        env.filters["tag"] = _strict(lambda number: tag_format.format(id=number))
        return env
