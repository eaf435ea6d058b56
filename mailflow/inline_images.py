"""Images inside our HTML as inline MIME parts (``multipart/related``).

Templates put images (the digest's charts) into the HTML as ``data:`` URIs, so
the HTML in the outbox is complete on its own.  Gmail and Outlook do not show
``data:`` URIs; every mail program shows an image sent as a part of a
``multipart/related`` with a ``Content-ID`` and referenced as ``cid:``
(RFC 2392).  `html_part` makes that structure when the HTML carries images,
and a plain ``text/html`` part when it carries none:

    multipart/alternative
      text/plain
      multipart/related          (only with images)
        text/html                <img src="cid:…">
        image/png                Content-ID, Content-Disposition: inline

Only the exact form our templates write is taken (``src="data:image/png;
base64,…"`` in double quotes): a client's text is HTML-escaped before it
reaches the HTML, so it can never produce one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from email.message import Message
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

_DATA_IMAGE = re.compile(r'src="data:image/(png|gif|jpeg);base64,([A-Za-z0-9+/=]+)"')


def extract_images(html: str, domain: str) -> tuple[str, list[tuple[str, str, bytes]]]:
    """HTML with each embedded image replaced by ``cid:`` and the images as
    (content id, subtype, bytes); one part per distinct image."""
    images: dict[str, tuple[str, str, bytes]] = {}

    def replace(match: re.Match) -> str:
        subtype, encoded = match.group(1), match.group(2)
        try:
            data = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            return match.group(0)
        cid = f"img-{hashlib.sha256(data).hexdigest()[:20]}@{domain}"
        images.setdefault(cid, (cid, subtype, data))
        return f'src="cid:{cid}"'

    return _DATA_IMAGE.sub(replace, html), list(images.values())


def html_part(html: str, domain: str) -> Message:
    """``text/html``, or ``multipart/related`` of it and its inline images."""
    html, images = extract_images(html, domain)
    text = MIMEText(html, "html", "utf-8")
    if not images:
        return text
    related = MIMEMultipart("related")
    related.attach(text)
    for cid, subtype, data in images:
        part = MIMEImage(data, subtype)
        part["Content-ID"] = f"<{cid}>"
        part.add_header("Content-Disposition", "inline", filename=f"{cid.split('@')[0]}.{subtype}")
        related.attach(part)
    return related
