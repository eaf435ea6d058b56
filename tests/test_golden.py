"""Golden files: every template (client and staff, both languages, each
variant in `tests/golden/samples.py`) rendered from fixed data and a fixed
clock, compared with `tests/golden/<lang>/<template>[--variant].txt` (and
`.html` where the template has an HTML alternative).  A change to a text is a
visible diff in review.

Regenerate after an intended change: `pytest tests/test_golden.py
--update-golden` (or `UPDATE_GOLDEN=1`), then `python scripts/render_mails.py`
for docs/mails.md, and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailflow.render import Renderer, packaged_templates_dir
from tests.golden.samples import LANGUAGES, SAMPLES, TEMPLATES, Sample

GOLDEN = Path(__file__).parent / "golden"
CASES = [pytest.param(sample, lang, id=f"{lang}-{sample.name}")
         for lang in LANGUAGES for sample in SAMPLES]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(timezone="Asia/Tokyo")


def golden_text(renderer: Renderer, sample: Sample, lang: str) -> tuple[str, str | None]:
    rendered = renderer.render(sample.template, lang, sample.full_context())
    return f"Subject: {rendered.subject}\n\n{rendered.text}", rendered.html


def check(path: Path, actual: str, update: bool) -> None:
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.is_file(), f"{path} is missing: run pytest {__file__} --update-golden"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path.relative_to(GOLDEN)} differs (--update-golden to accept)"


@pytest.mark.parametrize(("sample", "lang"), CASES)
def test_rendering_matches_the_golden_file(renderer, sample, lang, update_golden):
    text, html = golden_text(renderer, sample, lang)
    base = GOLDEN / lang / sample.name
    check(base.with_name(base.name + ".txt"), text, update_golden)
    html_path = base.with_name(base.name + ".html")
    if html is None:
        assert not html_path.exists() or update_golden, f"{html_path} is stale"
    else:
        check(html_path, html, update_golden)


def test_every_template_has_a_sample_and_every_sample_a_template():
    root = packaged_templates_dir()
    for lang in LANGUAGES:
        found = {p.relative_to(root / lang).as_posix().removesuffix(".txt.j2")
                 for p in (root / lang).rglob("*.txt.j2") if not p.name.startswith("_")}
        assert found == set(TEMPLATES), lang


def test_no_golden_file_without_a_sample():
    wanted = {f"{lang}/{s.name}" for lang in LANGUAGES for s in SAMPLES}
    found = {p.relative_to(GOLDEN).as_posix().rsplit(".", 1)[0]
             for p in GOLDEN.rglob("*") if p.suffix in (".txt", ".html")}
    assert found <= wanted, sorted(found - wanted)


def test_docs_mails_md_is_current():
    """docs/mails.md is generated from the same samples (scripts/render_mails.py)."""
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "scripts" / "render_mails.py"
    spec = importlib.util.spec_from_file_location("render_mails", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render_all()
    if os.environ.get("UPDATE_GOLDEN"):
        module.OUTPUT.write_text(expected, encoding="utf-8")
    assert module.OUTPUT.read_text(encoding="utf-8") == expected, \
        "docs/mails.md is out of date: run python scripts/render_mails.py"
