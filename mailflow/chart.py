"""The digest's small bar charts, drawn as PNG with Pillow.

Mail programs disagree about images: Gmail and Outlook show no SVG and no
``data:`` URI, but every one of them shows a PNG sent inline in a
``multipart/related`` part and referenced as ``cid:``.  A chart is therefore
rendered here to PNG bytes and put into the HTML as a ``data:`` URI (so the
stored HTML is complete and opens as it is); the sender turns each such image
into an inline part (`mailflow.inline_images`).

Charts carry only digits (``2026-12``, counts), so no font with Japanese
glyphs is needed: titles and explanations are in the HTML, in the client's
language.  The same data gives the same bytes, and a chart is drawn once per
distinct data set (many clients share one: a plan and no usage).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 300, 140
_MARGIN_TOP, _MARGIN_BOTTOM, _MARGIN_SIDE = 18, 22, 8
_BACKGROUND = (255, 255, 255)
_BAR = {"expiry": (217, 119, 6), "usage": (37, 99, 235)}
_TEXT = (55, 65, 81)
_AXIS = (209, 213, 219)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=2048)
def bar_chart_png(kind: str, bars: tuple[tuple[str, int], ...]) -> bytes:
    """A bar per (label, value), the value above it, the label below; `kind`
    (`expiry` or `usage`) picks the colour.  Cached by its data."""
    image = Image.new("RGB", (WIDTH, HEIGHT), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, label_font = _font(10), _font(11)
    base = HEIGHT - _MARGIN_BOTTOM
    draw.line([(_MARGIN_SIDE, base), (WIDTH - _MARGIN_SIDE, base)], fill=_AXIS, width=1)
    if bars:
        top = max(value for _, value in bars) or 1
        slot = (WIDTH - 2 * _MARGIN_SIDE) / len(bars)
        bar_width = max(6, min(36, int(slot * 0.6)))
        for index, (label, value) in enumerate(bars):
            centre = _MARGIN_SIDE + slot * (index + 0.5)
            height = round((base - _MARGIN_TOP) * value / top)
            if height:
                draw.rectangle([centre - bar_width / 2, base - height,
                                centre + bar_width / 2, base - 1], fill=_BAR[kind])
            draw.text((centre, base - height - 2), str(value), fill=_TEXT, font=label_font,
                      anchor="md")
            draw.text((centre, base + 4), label, fill=_TEXT, font=small, anchor="ma")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


@lru_cache(maxsize=2048)
def _data_uri(kind: str, bars: tuple[tuple[str, int], ...]) -> str:
    return "data:image/png;base64," + base64.b64encode(bar_chart_png(kind, bars)).decode()


def chart_data_uri(kind: str, bars: Sequence[tuple[str, int]]) -> str:
    """The chart as a ``data:image/png;base64,…`` URI for an ``<img src>``."""
    return _data_uri(kind, tuple((str(label), int(value)) for label, value in bars))
