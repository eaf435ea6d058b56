"""Measure the pure mail core against the shared real-mail corpus.

Run: ``.venv/bin/python benchmarks/corpus_report.py`` (corpus from
``$MAILFLOW_CORPUS``, default ``../shared/corpus`` beside the repo).

Prints: messages parsed / total and failures, parse throughput, detection
rate of automatic mail per sisimai category (and that the ``not/`` controls
are left alone), and reply-trimming agreement per corpus folder.

How trimming is compared (``agrees``): line endings normalised, every line
stripped of surrounding whitespace and blank lines dropped, then the lists of
lines must be equal. Blank lines are ignored because the references differ
among themselves on how many blank lines survive where a quote was removed;
the words are what matters for command detection. For talon's HTML replies
all whitespace is ignored, as the corpus index prescribes.

The functions here are also used by ``tests/corpus/test_corpus.py`` so that
the test and this report measure the same thing.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mailflow.core.autoreply import classify_automatic  # noqa: E402
from mailflow.core.message import html_to_text, parse_message  # noqa: E402
from mailflow.core.trim import trim_reply  # noqa: E402

OWN_ADDRESS = "support@example.com"
#: sisimai file-name prefix → what the message is.
SISIMAI_CATEGORIES = {
    "lhost": "bounce",
    "rhost": "bounce",
    "rfc3464": "bounce",
    "arf": "complaint",
    "rfc3834": "auto-reply",
}


def corpus_root() -> Path | None:
    """``$MAILFLOW_CORPUS`` or ``../shared/corpus`` from the repo root, if it exists."""
    configured = os.environ.get("MAILFLOW_CORPUS")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "corpus"
    return path if (path / "manifest.tsv").is_file() else None


def manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.tsv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def full_messages(root: Path) -> list[Path]:
    return [root / row["path"] for row in manifest(root) if row["kind"] == "full_message"]


# --------------------------------------------------------------------------
# Trimming cases.


@dataclass(frozen=True)
class TrimCase:
    folder: str
    name: str
    source: str
    expected: str
    compare: str = "lines"  # "lines" or "no-whitespace"


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _body_only_cases(root: Path) -> Iterator[TrimCase]:
    """Body files whose expected output the manifest names (``expected_for``)."""
    preferred: dict[str, Path] = {}
    for row in manifest(root):
        if row["kind"] != "expected" or not row.get("expected_for"):
            continue
        path = row["path"]
        if "/trimmed/" in path or "/reference_output/" in path:
            preferred[row["expected_for"]] = root / path
    for source, expected in sorted(preferred.items()):
        folder = source.split("/", 1)[0]
        yield TrimCase(folder, Path(source).name, _read_text(root / source), _read_text(expected))


def _talon_cases(root: Path) -> Iterator[TrimCase]:
    """talon: whole replies (.eml) and HTML-only replies with derived expectations."""
    base = root / "mailgun-talon" / "fixtures"
    for eml in sorted((base / "standard_replies").glob("*.eml")):
        for suffix in ("_reply_text", "_reply_text.DERIVED"):
            expected = eml.with_name(eml.stem + suffix)
            if expected.is_file():
                text = parse_message(eml.read_bytes()).text
                yield TrimCase("mailgun-talon", eml.name, text, _read_text(expected))
    for html in sorted((base / "html_replies").glob("*.html")):
        expected = html.with_name(html.stem + ".expected_plain_reply.DERIVED.txt")
        if expected.is_file():
            text = html_to_text(_read_text(html))
            yield TrimCase(
                "mailgun-talon/html", html.name, text, _read_text(expected), "no-whitespace"
            )


def trim_cases(root: Path) -> list[TrimCase]:
    return [*_body_only_cases(root), *_talon_cases(root)]


def _lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [line.strip() for line in text.split("\n") if line.strip()]


def agrees(case: TrimCase, got: str) -> bool:
    """Does ``got`` match the expectation (see the module docstring for how)?"""
    if case.compare == "no-whitespace":
        return re.sub(r"\s+", "", got) == re.sub(r"\s+", "", case.expected)
    return _lines(got) == _lines(case.expected)


def trim_agreement(
    cases: list[TrimCase], trimmer: Callable[[str], str] = trim_reply
) -> dict[str, tuple[int, int, list[str]]]:
    """folder → (agreeing, total, names that disagree)."""
    result: dict[str, tuple[int, int, list[str]]] = {}
    for case in cases:
        ok, total, bad = result.get(case.folder, (0, 0, []))
        if agrees(case, trimmer(case.source)):
            ok += 1
        else:
            bad = [*bad, case.name]
        result[case.folder] = (ok, total + 1, bad)
    return result


# --------------------------------------------------------------------------
# Automatic-mail cases.


#: In sisimai's not/ folder because sisimai's parser failed on it (its issue
#: 368), yet it is a real bounce: null Return-Path, Auto-Submitted, postmaster.
NOT_FOLDER_BOUNCES = frozenset({"rb-issue-368-bug.eml"})


def sisimai_category(path: Path) -> str | None:
    """bounce / complaint / auto-reply from the file name; "control" for human not/ mail."""
    if path.parent.name == "not":
        return "bounce" if path.name in NOT_FOLDER_BOUNCES else "control"
    return SISIMAI_CATEGORIES.get(path.name.split("-", 1)[0])


def sisimai_messages(root: Path) -> list[tuple[Path, str]]:
    found = []
    for path in full_messages(root):
        if "sisimai-set-of-emails" in path.parts:
            category = sisimai_category(path)
            if category:
                found.append((path, category))
    return found


def detection(root: Path) -> dict[str, tuple[int, int, list[str]]]:
    """category → (detected as automatic, total, misses). Controls: not bounce."""
    result: dict[str, tuple[int, int, list[str]]] = {}
    for path, category in sisimai_messages(root):
        found = classify_automatic(parse_message(path.read_bytes()), own_address=OWN_ADDRESS)
        if category == "control":
            good = found is None
        else:
            good = found is not None
        ok, total, bad = result.get(category, (0, 0, []))
        result[category] = (ok + good, total + 1, bad if good else [*bad, path.name])
    return result


# --------------------------------------------------------------------------
# The report.


def _parse_all(root: Path) -> tuple[int, int, list[str], float]:
    """(parsed, total, failures, messages per second)."""
    paths = full_messages(root)
    blobs = [p.read_bytes() for p in paths]
    failures = []
    start = time.perf_counter()
    for path, raw in zip(paths, blobs, strict=True):
        try:
            parse_message(raw)
        except Exception as exc:  # the report must survive a parser bug
            failures.append(f"{path.name}: {exc!r}")
    elapsed = time.perf_counter() - start
    return len(paths) - len(failures), len(paths), failures, len(paths) / elapsed


def _percent(ok: int, total: int) -> str:
    return f"{ok}/{total} ({100 * ok / total:.1f}%)" if total else "-"


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    root = corpus_root()
    if root is None:
        console.print("corpus not found: set MAILFLOW_CORPUS to the shared corpus folder")
        return 2
    parsed, total, failures, rate = _parse_all(root)
    table = Table(title=f"Parsing ({root})")
    table.add_column("messages parsed")
    table.add_column("failures")
    table.add_column("throughput")
    table.add_row(f"{parsed}/{total}", str(len(failures)), f"{rate:.0f} messages/s")
    console.print(table)
    for failure in failures:
        console.print(f"  parse failure: {failure}")

    table = Table(
        title="Automatic mail (sisimai; control = human mail in not/, must not be automatic)"
    )
    for column in ("category", "detected", "misses"):
        table.add_column(column)
    for category, (ok, count, bad) in sorted(detection(root).items()):
        table.add_row(category, _percent(ok, count), ", ".join(bad[:8]))
    console.print(table)

    results = trim_agreement(trim_cases(root))
    table = Table(title="Reply trimming agreement (lines stripped, blank lines ignored)")
    for column in ("folder", "agree", "disagree"):
        table.add_column(column)
    all_ok = all_total = 0
    for folder, (ok, count, bad) in sorted(results.items()):
        all_ok, all_total = all_ok + ok, all_total + count
        table.add_row(folder, _percent(ok, count), ", ".join(bad))
    table.add_row("overall", _percent(all_ok, all_total), "")
    console.print(table)
    console.print(
        "Compared line by line after normalising line endings, stripping each line and "
        "dropping blank lines; talon HTML replies ignoring all whitespace. github/zapier/"
        "alfonsrv expectations are another library's output (a reference, not truth)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
