"""Reading a client list (`mailflow clients import FILE.csv`): bytes in, rows
and per-line errors out, no I/O.

The file has a header row naming its columns — `name` and `emails` required,
`plan` and `lang` optional, in any order, case-insensitive — and one client a
line.  `emails` holds one or more addresses separated by `;`, `,` or spaces.
An empty `plan` or `lang` cell (or a missing column) leaves that field as it
is; `plan` 0 means no plan.  Encodings: UTF-8 with or without a byte-order
mark, else CP932 (Shift_JIS as Excel in Japan saves it), or the one named.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass

COLUMNS = ("name", "emails", "plan", "lang")
REQUIRED = ("name", "emails")
ALIASES = {"email": "emails", "addresses": "emails", "language": "lang"}
LANGS = ("en", "ja")
DETECTED = ("utf-8-sig", "cp932")  # tried in this order when no encoding is named

_SEPARATORS = re.compile(r"[;,\s]+")


@dataclass(frozen=True)
class ClientRow:
    """One line of the file.  `plan`/`lang` None: leave as it is (new client:
    no plan, English); `plan` 0: no plan."""

    line: int
    name: str
    emails: tuple[str, ...]
    plan: int | None
    lang: str | None


@dataclass(frozen=True)
class LineError:
    line: int
    error: str


class UndecodableFile(ValueError):
    """The bytes are not text in the encoding named (or any detected one)."""


def decode(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """The file's text and the encoding it was read in: the one named, else the
    first of UTF-8 (a byte-order mark is dropped) and CP932 that reads every byte."""
    if encoding is not None:
        name = codecs.lookup(encoding).name  # LookupError: no such encoding
        if name == "utf-8":
            name = "utf-8-sig"  # Excel's "CSV UTF-8" starts with a byte-order mark
        try:
            return data.decode(name), name
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise UndecodableFile(f"not {encoding} text (line {line}: {error.reason})") from None
    for name in DETECTED:
        try:
            return data.decode(name), name
        except UnicodeDecodeError:
            continue
    raise UndecodableFile("neither UTF-8 nor Shift_JIS (CP932) text: name the encoding"
                          " with --encoding")


def split_emails(cell: str) -> tuple[str, ...]:
    """Addresses of one cell, in order, each once: `a@x.example; b@x.example`."""
    return tuple(dict.fromkeys(part for part in _SEPARATORS.split(cell.strip()) if part))


def _header(cells: list[str]) -> tuple[list[str], str | None]:
    names = [ALIASES.get(c.strip().lower(), c.strip().lower()) for c in cells]
    unknown = [c.strip() for c, n in zip(cells, names, strict=True) if n not in COLUMNS]
    if unknown:
        return names, (f"unknown column{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}"
                       f" (columns: {', '.join(COLUMNS)})")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return names, f"column {twice[0]!r} appears twice"
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        return names, (f"the header row needs the column{'s' * (len(missing) > 1)}"
                       f" {' and '.join(missing)} (columns: {', '.join(COLUMNS)})")
    return names, None


def _plan(cell: str) -> int | None:
    cell = cell.strip()
    if not cell:
        return None
    if cell.lower() in ("none", "-"):
        return 0
    plan = int(cell)  # ValueError: not a number; full-width digits are numbers too
    if plan < 0:
        raise ValueError
    return plan


def _row(line: int, values: dict[str, str]) -> ClientRow | str:
    """The row, or what is wrong with it."""
    name = values.get("name", "").strip()
    if not name:
        return "no name"
    emails = split_emails(values.get("emails", ""))
    if not emails:
        return f"{name}: no e-mail address"
    try:
        plan = _plan(values.get("plan", ""))
    except ValueError:
        return f"{name}: plan {values['plan'].strip()!r} is not a number of credits (0 = no plan)"
    lang = values.get("lang", "").strip().lower() or None
    if lang is not None and lang not in LANGS:
        return f"{name}: language {values['lang'].strip()!r} is not supported (use en or ja)"
    return ClientRow(line, name, emails, plan, lang)


def read_rows(text: str) -> tuple[list[ClientRow], list[LineError]]:
    """The clients of a CSV text with the line each starts on, and the lines in
    error.  A name or an address on two lines is an error on the second (the
    import would otherwise depend on the order of the lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[ClientRow] = []
    errors: list[LineError] = []
    columns: list[str] | None = None
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    line = 1
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if columns is None:
                columns, problem = _header(cells)
                if problem:
                    return [], [LineError(start, problem)]
                continue
            if len(cells) > len(columns):
                errors.append(LineError(start, f"{len(cells)} cells, the header has"
                                               f" {len(columns)}"))
                continue
            row = _row(start, dict(zip(columns, cells, strict=False)))
            if isinstance(row, str):
                errors.append(LineError(start, row))
                continue
            problem = _repeated(row, names, addresses)
            if problem:
                errors.append(LineError(start, problem))
                continue
            rows.append(row)
    except csv.Error as error:
        errors.append(LineError(line, f"not readable as CSV: {error}"))
    if columns is None:
        return [], [LineError(1, f"no header row (columns: {', '.join(COLUMNS)})")]
    return rows, errors


def _repeated(row: ClientRow, names: dict[str, int], addresses: dict[str, int]) -> str | None:
    key = row.name.casefold()
    if key in names:
        return f"{row.name}: the same client is on line {names[key]}"
    for address in row.emails:
        if address.lower() in addresses:
            return f"{row.name}: {address} is also on line {addresses[address.lower()]}"
    names[key] = row.line
    addresses.update((address.lower(), row.line) for address in row.emails)
    return None
