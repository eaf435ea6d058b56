"""Turn raw inbound bytes into an immutable :class:`InboundMessage`.

Real mail is hostile input: broken MIME, headers that make ``policy.default``
raise on access, undeclared 8-bit Japanese, HTML-only bodies, attachments
larger than anything we want in memory twice. The one promise of this module
is that :func:`parse_message` never raises: whatever it cannot read becomes a
human-readable entry in ``InboundMessage.defects`` so that the caller can still
store the message, classify it and tell staff.

Pure: imports only the standard library and inscriptis (with its lxml); no I/O.
"""

from __future__ import annotations

import email.header
import email.utils
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser, HeaderParser
from types import MappingProxyType

__all__ = [
    "Attachment",
    "content_digest",
    "first_header",
    "InboundMessage",
    "bare_address",
    "decode_bytes",
    "delivery_status_actions",
    "extract_bounced_message_ids",
    "normalise_message_id",
    "parse_message",
]

#: Headers kept in ``InboundMessage.headers``: what classification needs.
#: Any header whose name starts with one of ``KEPT_HEADER_PREFIXES`` is kept too.
KEPT_HEADERS = frozenset(
    {
        "auto-submitted",
        "precedence",
        "x-autoreply",
        "x-autorespond",
        "x-auto-response-suppress",
        "list-id",
        "list-unsubscribe",
        "return-path",
        "authentication-results",
        "content-type",
        "x-failed-recipients",
        "x-loop",
        "feedback-type",
        "x-ms-exchange-generated-message-source",
        "x-ms-exchange-inbox-rules-loop",
        "x-apple-action",
        "x-mlserver",
    "x-original-from",
    "x-original-sender",
    "x-google-group-id",
    "x-ml-name",
    "list-post",
    "sender",
    }
)
#: ``x-spam``: spam filters' verdicts (``X-Spam-Flag``, ``X-Spam-Status``, ``X-Spam``);
#: the topmost is the one our own mail server added (``policy.spam_header``).
KEPT_HEADER_PREFIXES = ("x-mailflow-", "x-spam")

#: Longer Message-IDs are ignored (as if absent): nobody generates them, and
#: every store and header that carries an id then stays within 255 characters.
MAX_MESSAGE_ID_LENGTH = 255
#: RFC 5321 limits a path to 256 octets including the angle brackets.
MAX_ADDRESS_LENGTH = 254
#: Authentication-Results headers kept (the topmost: our own servers add theirs on top).
MAX_AUTH_RESULTS = 100
#: In-Reply-To / References keep at most this many ids (References: the newest).
#: A header with tens of thousands of ids must not cost quadratic time or turn
#: into a database query with more parameters than the database accepts.
MAX_REFERENCED_IDS = 100

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uff66-\uff9f]")
_ISO2022_ESCAPE = re.compile(rb"\x1b[\$\(][@BJ]")


@dataclass(frozen=True)
class Attachment:
    """One non-body MIME part. ``data`` is ``b""`` when ``truncated`` is set."""

    filename: str | None
    content_type: str
    size: int
    data: bytes = b""
    truncated: bool = False


@dataclass(frozen=True)
class InboundMessage:
    """What the rest of mailflow needs to know about one received message.

    ``headers`` holds only the classification headers (lower-case names, the
    first, i.e. topmost, occurrence: the one our own MTA added), decoded to str.
    ``part_types`` lists the content types of every MIME part in tree order, so
    that DSN / ARF / MDN reports can be recognised without keeping the tree.
    ``raw`` is the input, kept so that bounces can be re-read for the original
    Message-ID; it is excluded from ``repr`` and comparisons.
    """

    message_id: str | None = None
    from_addr: str | None = None
    from_name: str = ""
    reply_to: str | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    date: datetime | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    text: str = ""
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    part_types: tuple[str, ...] = ()
    defects: tuple[str, ...] = ()
    size: int = 0
    #: Every Authentication-Results header, topmost first (at most
    #: MAX_AUTH_RESULTS): the DMARC check must see all of them, not the first.
    authentication_results: tuple[str, ...] = ()
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def content_type(self) -> str:
        """The top-level content type without parameters, lower case."""
        value = self.headers.get("content-type", "text/plain")
        return value.split(";", 1)[0].strip().lower() or "text/plain"


def first_header(msg: InboundMessage, name: str) -> str | None:
    """The topmost header NAME (the one our own mail server added above anything
    the sender wrote), decoded; read from the kept headers, else from the raw
    header block.  None when absent."""
    name = name.lower()
    if name in msg.headers:
        return msg.headers[name]
    try:
        parsed = HeaderParser(policy=policy.compat32).parsestr(
            _header_block(msg.raw).decode("utf-8", "surrogateescape"))
        value = parsed.get(name)
    except Exception:
        return None
    return None if value is None else clean_subject(_decode_raw_header(str(value)))


def content_digest(msg: InboundMessage) -> str:
    """A digest of what a person wrote and to whom: sender, recipients,
    subject, date, text, HTML and attachments — not the transport headers
    (`Received`, `Delivered-To`, a filter's verdict), which differ between two
    deliveries of the same message.  Two messages with one Message-ID and
    different digests are different messages (web forms reuse Message-IDs)."""
    digest = hashlib.sha256()
    date = msg.date.isoformat() if msg.date else ""
    for value in (msg.from_addr or "", ",".join(msg.to), ",".join(msg.cc), msg.subject, date,
                  " ".join(msg.text.split()), " ".join((msg.html or "").split())):
        digest.update(value.encode("utf-8", "surrogatepass") + b"\0")
    for attachment in msg.attachments:
        digest.update(f"{attachment.filename}|{attachment.content_type}|{attachment.size}|"
                      .encode("utf-8", "surrogatepass"))
        digest.update(hashlib.sha256(attachment.data).digest())
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Small helpers, each usable alone.


def normalise_message_id(value: object) -> str | None:
    """Return the Message-ID inside ``value`` without angle brackets or spaces.

    Case is kept: the local part of a Message-ID is case-sensitive and mail
    systems echo ids back unchanged, so an exact match is the right test.
    """
    if value is None:
        return None
    text = str(value)
    match = _ANGLE_ID.search(text)
    inner = match.group(1) if match else text
    inner = _CONTROL_CHARS.sub("", _WHITESPACE.sub("", inner)).strip("<>")
    if len(inner) > MAX_MESSAGE_ID_LENGTH:
        return None
    return inner or None


def _message_id_list(value: str | None, *, keep: str = "first") -> tuple[str, ...]:
    """The ids in an In-Reply-To / References value, in order, without duplicates.

    At most ``MAX_REFERENCED_IDS`` are kept: the first ones (In-Reply-To) or,
    with ``keep="last"``, the newest ones (References lists oldest first).
    """
    if not value:
        return ()
    found = _ANGLE_ID.findall(value) or value.split()
    ids = tuple(dict.fromkeys(n for c in found if (n := normalise_message_id(c))))
    if keep == "last":
        return ids[-MAX_REFERENCED_IDS:]
    return ids[:MAX_REFERENCED_IDS]


def bare_address(value: str | None) -> str | None:
    """The lower-cased addr-spec of the first address in ``value``, or None."""
    addresses = _addresses(value)
    return addresses[0][1] if addresses else None


def _addresses(value: str | None) -> list[tuple[str, str]]:
    """(display name, lower-case address) pairs; never raises."""
    if not value:
        return []
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:
        return []
    result = []
    for name, addr in pairs:
        addr = addr.strip().strip("<>").strip().lower()
        # Control characters (NUL included) or an overlong address: not deliverable,
        # and not something to store or to answer.
        if addr and len(addr) <= MAX_ADDRESS_LENGTH and not _CONTROL_CHARS.search(addr) \
                and not _SURROGATE.search(addr):
            result.append((name.strip(), addr))
    return result


def clean_subject(value: str) -> str:
    """Collapse control characters (CR, LF, TAB, C1) and runs of spaces."""
    return _WHITESPACE.sub(" ", _CONTROL_CHARS.sub(" ", _storable(value))).strip()


def _storable(value: str) -> str:
    """Text any database and codec accepts: no NUL, no lone surrogates.

    PostgreSQL refuses NUL in text; lone surrogates (left by undecodable
    header bytes) cannot be encoded as UTF-8 at all. Each becomes U+FFFD.
    """
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if _SURROGATE.search(value):
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


# --------------------------------------------------------------------------
# Charset handling.

_CHARSET_SUPERSETS = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "cp943c": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "euc-jp": "euc_jis_2004",
    "x-euc-jp": "euc_jis_2004",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
}

_ISO2022_CODECS = ("iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_2004")


def _codec_for(charset: str | None) -> str | None:
    """Map a declared charset to the Python codec that decodes what senders mean.

    Senders label CP932 as Shift_JIS, CP1252 as ISO-8859-1 and UTF-8 as
    US-ASCII; decoding with the superset is what every mail reader does.
    """
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    name = _CHARSET_SUPERSETS.get(name, name)
    try:
        "".encode(name)
    except (LookupError, ValueError):
        return None
    return name


def _detect_and_decode(data: bytes) -> tuple[str, str]:
    """Decode undeclared or mislabelled bytes: (text, codec used).

    Order: ISO-2022-JP when its escape sequences are present, UTF-8, then the
    Japanese 8-bit encodings (accepted only if the result has kana/kanji, so a
    Latin-1 text is not misread as CP932), then Latin-1 which always succeeds.
    """
    if _ISO2022_ESCAPE.search(data):
        for codec in _ISO2022_CODECS:
            try:
                return data.decode(codec), codec
            except UnicodeDecodeError:
                continue
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for codec in ("cp932", "euc_jis_2004"):
        try:
            decoded = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if _JAPANESE.search(decoded):
            return decoded, codec
    return data.decode("cp1252", errors="replace").replace("\ufffd", "?"), "latin-1"


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode body bytes; return (text, defect or None). Never raises."""
    codec = _codec_for(charset)
    if codec is not None:
        try:
            return data.decode(codec), None
        except UnicodeDecodeError:
            pass
        if codec in _ISO2022_CODECS:
            for alternative in _ISO2022_CODECS:
                try:
                    return data.decode(alternative), None
                except UnicodeDecodeError:
                    continue
    text, used = _detect_and_decode(data)
    if codec is None and not charset:
        is_ascii = all(byte < 0x80 for byte in data) and b"\x1b" not in data
        return text, None if is_ascii else f"undeclared 8-bit text decoded as {used}"
    if codec is None:
        return text, f"unknown charset {charset!r}; decoded as {used}"
    if charset and charset.lower() in ("us-ascii", "ascii") and used == "utf-8":
        return text, None
    return text, f"text does not match charset {charset!r}; decoded as {used}"


# --------------------------------------------------------------------------
# Header access that never raises.


def _raw_header_values(msg: Message, name: str) -> list[str]:
    """Raw (undecoded) values of header ``name``, without touching the policy."""
    try:
        return [str(v) for k, v in msg.raw_items() if k.lower() == name]
    except Exception:
        return []


def _decode_raw_header(value: str) -> str:
    """Decode a raw header value by hand: 8-bit bytes, raw ISO-2022-JP, RFC 2047."""
    raw = value.encode("utf-8", "surrogateescape")
    if any(byte >= 0x80 for byte in raw) or b"\x1b" in raw:
        value, _ = _detect_and_decode(raw)
    try:
        parts = email.header.decode_header(value)
    except Exception:
        return value
    pieces = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            pieces.append(chunk)
        else:
            pieces.append(decode_bytes(chunk, charset)[0])
    return "".join(pieces)


def _header(msg: Message, name: str, defects: list[str]) -> str | None:
    """The decoded first value of ``name``; falls back to raw decoding on errors.

    ``policy.default`` can raise on access (bad encoded words, broken address
    lists) and decodes 8-bit header bytes as UTF-8 with replacement characters;
    both cases are redone by hand from the raw value.
    """
    raws = _raw_header_values(msg, name)
    if not raws:
        return None
    raw = raws[0]
    needs_manual = "\x1b" in raw or any("\udc80" <= ch <= "\udcff" for ch in raw)
    if not needs_manual:
        try:
            value = msg.get(name)
            if value is not None:
                return str(value)
        except Exception as exc:
            defects.append(f"header {name}: {type(exc).__name__}; read raw")
    try:
        return _decode_raw_header(raw)
    except Exception:
        return raw.encode("utf-8", "replace").decode("utf-8", "replace")


def _kept_headers(msg: Message, defects: list[str]) -> Mapping[str, str]:
    """The classification headers, lower-case name → first decoded value."""
    kept: dict[str, str] = {}
    try:
        names = [k.lower() for k, _ in msg.raw_items()]
    except Exception:
        names = []
    for name in names:
        if name in kept:
            continue
        if name in KEPT_HEADERS or name.startswith(KEPT_HEADER_PREFIXES):
            value = _header(msg, name, defects)
            if value is not None:
                kept[name] = clean_subject(value)
    return MappingProxyType(kept)


def _parse_date(value: str | None, defects: list[str]) -> datetime | None:
    """An aware datetime; a zone-less date (``-0000``) is taken as UTC."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except Exception:
        parsed = None
    if parsed is None:
        defects.append(f"invalid Date header {value[:60]!r}")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


# --------------------------------------------------------------------------
# Bodies and attachments.


def _safe(call, default):
    """Run ``call()`` and return ``default`` on any exception (mail is hostile)."""
    try:
        return call()
    except Exception:
        return default


def _content_type(part: Message) -> str:
    """The part's content type, computed once per part: policy.default parses the
    header anew on every access (~0.1 ms), and a 5,000-part message asks often."""
    cached = part.__dict__.get("_mailflow_content_type")
    if cached is None:
        value = _safe(part.get_content_type, "application/octet-stream").lower()
        cached = _CONTROL_CHARS.sub("", _storable(value)) or "application/octet-stream"
        part.__dict__["_mailflow_content_type"] = cached
    return cached


def _is_attachment(part: Message) -> bool:
    disposition = _safe(part.get_content_disposition, None)
    if disposition == "attachment":
        return True
    return bool(_safe(part.get_filename, None)) and disposition != "inline"


def _leaf_parts(part: Message) -> Iterator[Message]:
    """Leaves of the MIME tree in order; message/* parts are leaves (not opened)."""
    if _safe(part.is_multipart, False) and not _content_type(part).startswith("message/"):
        for child in _safe(part.get_payload, []) or []:
            if isinstance(child, Message):
                yield from _leaf_parts(child)
    else:
        yield part


def _all_part_types(part: Message) -> Iterator[str]:
    """Content types of every part, including inside message/* parts."""
    yield _content_type(part)
    if _safe(part.is_multipart, False):
        for child in _safe(part.get_payload, []) or []:
            if isinstance(child, Message):
                yield from _all_part_types(child)


def _part_bytes(part: Message) -> bytes:
    """Decoded (base64/QP) payload bytes of a leaf; message/* parts re-serialised."""
    if _content_type(part).startswith("message/") and _safe(part.is_multipart, False):
        return _safe(lambda: part.as_bytes(policy=policy.compat32), b"")
    data = _safe(lambda: part.get_payload(decode=True), None)
    if data is None:
        payload = _safe(part.get_payload, "")
        if isinstance(payload, str):
            return payload.encode("utf-8", "surrogateescape")
        return b""
    return data


def _part_text(part: Message, defects: list[str]) -> str:
    charset = _safe(part.get_content_charset, None)
    text, defect = decode_bytes(_part_bytes(part), charset)
    if defect:
        defects.append(defect)
    return text.replace("\r\n", "\n").replace("\r", "\n")


#: Firefox's own rendering rules: paragraphs and divs as blocks, no indentation
#: invented for <div> (the "relaxed" profile indents them, which a reply
#: trimmer would read as structure).
_HTML_CONFIG = None


def _html_config():
    global _HTML_CONFIG
    if _HTML_CONFIG is None:
        from inscriptis.css_profiles import CSS_PROFILES
        from inscriptis.model.config import ParserConfig

        _HTML_CONFIG = ParserConfig(css=CSS_PROFILES["strict"].copy(), display_images=False,
                                    display_links=False)
    return _HTML_CONFIG


def _quote_blockquotes(tree) -> None:
    """Replace each outermost <blockquote> by its text with "> " before every line.

    Mail programs mark quoted history with <blockquote> (Gmail's gmail_quote,
    Apple Mail's type="cite", Thunderbird's moz-cite-prefix): the ">" marks keep
    that knowledge in the plain text, where the reply trimmer looks for them.
    """
    from inscriptis import Inscriptis
    from lxml import html as lxml_html

    for quote in tree.xpath("//blockquote[not(ancestor::blockquote)]"):
        inner = Inscriptis(lxml_html.fragment_fromstring(
            lxml_html.tostring(quote, encoding="unicode"), create_parent="div"),
            _html_config()).get_text().strip("\n")
        replacement = lxml_html.Element("pre")
        replacement.text = "\n" + "\n".join(f"> {line}".rstrip() for line in inner.split("\n"))
        replacement.tail = quote.tail
        quote.getparent().replace(quote, replacement)


def html_to_text(html: str) -> str:
    """Readable plain text from HTML (inscriptis, Apache-2.0), tags stripped if that fails.

    <blockquote> history comes out as "> " lines, as a text part would have it.
    """
    try:
        from inscriptis import Inscriptis
        from lxml import html as lxml_html

        source = re.sub(r"^\s*<\?xml[^>]*\?>", "", html)
        if not source.strip():
            return ""
        tree = lxml_html.document_fromstring(source)
        _quote_blockquotes(tree)
        text = Inscriptis(tree, _html_config()).get_text()
        return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    except Exception:
        return re.sub(r"<[^>]*>", " ", html)


def _attachment(part: Message, limit: int | None) -> Attachment:
    data = _part_bytes(part)
    filename = _safe(part.get_filename, None)
    if isinstance(filename, str):
        filename = clean_subject(filename) or None
    too_big = limit is not None and len(data) > limit
    return Attachment(
        filename=filename,
        content_type=_content_type(part),
        size=len(data),
        data=b"" if too_big else data,
        truncated=too_big,
    )


@dataclass
class _Body:
    text: str = ""
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)


def _extract_body(msg: Message, limit: int | None, defects: list[str]) -> _Body:
    """First text/plain and first text/html body parts; everything else attached."""
    body = _Body()
    plain: str | None = None
    for part in _leaf_parts(msg):
        ctype = _content_type(part)
        if not _is_attachment(part) and ctype == "text/plain" and plain is None:
            plain = _part_text(part, defects)
        elif not _is_attachment(part) and ctype == "text/html" and body.html is None:
            body.html = _part_text(part, defects)
        elif ctype.startswith("multipart/"):
            continue
        else:
            body.attachments.append(_attachment(part, limit))
    if plain is not None and plain.strip():
        body.text = plain
    elif body.html is not None:
        body.text = html_to_text(body.html)
    else:
        body.text = plain or _fallback_text(msg, defects)
    return body


def _fallback_text(msg: Message, defects: list[str]) -> str:
    """Text for a message without a body part: broken multipart or text only in attachments.

    A multipart whose boundary is missing keeps its whole body as a string;
    reports and forwards may carry their only text as a named or embedded part.
    Showing that text beats showing nothing to the staff who must read it.
    """
    for part in _safe(lambda: list(msg.walk()), []):
        ctype = _content_type(part)
        payload = _safe(part.get_payload, None)
        if ctype.startswith("multipart/") and isinstance(payload, str) and payload.strip():
            defects.append("multipart body without usable boundaries; shown as text")
            return _part_text(part, defects)
        if ctype.startswith("text/") and not _safe(part.is_multipart, False):
            text = _part_text(part, defects)
            if text.strip():
                return html_to_text(text) if ctype == "text/html" else text
    return ""


# --------------------------------------------------------------------------
# The entry point.


#: Header values longer than this are cut as the parser reads them: the
#: standard library's structured-header parser is quadratic on some inputs and
#: runs during parsing and on every access (a 64 KB To: took 3 s, a 1 MB
#: Content-Type: over 3 minutes). ``raw`` keeps the whole message.
MAX_HEADER_CHARS = 16 * 1024
#: MIME structure headers are short in any real mail.
MAX_STRUCTURE_HEADER_CHARS = 2 * 1024
_STRUCTURE_HEADERS = frozenset(
    {"content-type", "content-disposition", "content-transfer-encoding"}
)
_KEEP_TAIL_HEADERS = frozenset({"references"})  # the newest ids are at the end


def _cut_header(name: str, value: str, cut_log: list[str] | None) -> str:
    lower = name.lower()
    limit = MAX_STRUCTURE_HEADER_CHARS if lower in _STRUCTURE_HEADERS else MAX_HEADER_CHARS
    if len(value) <= limit:
        return value
    if cut_log is not None:
        cut_log.append(f"header {lower} over {limit} characters; cut")
    return value[-limit:] if lower in _KEEP_TAIL_HEADERS else value[:limit]


class _CappedDefault(policy.EmailPolicy):
    """policy.default whose header values are cut to a bounded length when read,
    and parsed once per distinct value: the parser and the Message methods ask
    for each part's Content-Type half a dozen times, at ~0.1 ms a parse, so a
    5,000-part message took 10 s. Header objects are immutable; sharing is safe."""

    cut_log: list[str] | None = None
    parsed: dict | None = None

    def header_source_parse(self, sourcelines):
        name, value = super().header_source_parse(sourcelines)
        return name, _cut_header(name, value, self.cut_log)

    def header_fetch_parse(self, name, value):
        if self.parsed is None or not isinstance(value, str):
            return super().header_fetch_parse(name, value)
        key = (name, value)
        found = self.parsed.get(key)
        if found is None:
            found = super().header_fetch_parse(name, value)
            if len(self.parsed) < 20_000:
                self.parsed[key] = found
        return found


class _CappedCompat32(policy.Compat32):
    """policy.compat32 with the same cut."""

    cut_log: list[str] | None = None

    def header_source_parse(self, sourcelines):
        name, value = super().header_source_parse(sourcelines)
        return name, _cut_header(name, value, self.cut_log)


_HEADER_END = re.compile(rb"\r?\n\r?\n|\r\r")
#: Where no blank line ends the header block, this much is taken as headers.
MAX_HEADER_BLOCK = 1024 * 1024


def _header_block(raw: bytes) -> bytes:
    """The bytes up to the blank line that ends the headers (no copy of the body)."""
    end = _HEADER_END.search(raw, 0, MAX_HEADER_BLOCK)
    return raw[: end.end()] if end else raw[:MAX_HEADER_BLOCK]


def _parse_tree(raw: bytes, defects: list[str], headers_only: bool) -> Message:
    """Parse with policy.default; fall back to compat32, then to the headers alone
    (a MIME tree nested a thousand deep exhausts the parser's recursion), then to
    an empty message. Headers alone are parsed from the header block only, so a
    message over the size limit is never copied or split into lines."""
    attempts = [] if headers_only else [(BytesParser, c) for c in (_CappedDefault,
                                                                    _CappedCompat32)]
    attempts += [(BytesHeaderParser, c) for c in (_CappedDefault, _CappedCompat32)]
    for parser_cls, capped in attempts:
        cut_log: list[str] = []
        source = raw if parser_cls is BytesParser else _header_block(raw)
        try:
            chosen = capped(cut_log=cut_log, parsed={}) if capped is _CappedDefault \
                else capped(cut_log=cut_log)
            msg = parser_cls(policy=chosen).parsebytes(source)
        except Exception as exc:
            name = "EmailPolicy" if capped is _CappedDefault else "Compat32"
            defects.append(f"parser ({name}) failed: {exc!r:.80}")
            continue
        if parser_cls is BytesHeaderParser and not headers_only:
            defects.append("body not read: the MIME structure could not be parsed")
        defects.extend(cut_log)
        return msg
    return Message()


def _tree_defects(msg: Message) -> list[str]:
    found: list[str] = []
    stack = [msg]
    while stack:
        part = stack.pop()
        for defect in getattr(part, "defects", []) or []:
            found.append(f"MIME: {type(defect).__name__}")
        if _safe(part.is_multipart, False):
            stack.extend(p for p in (_safe(part.get_payload, []) or []) if isinstance(p, Message))
    return found


def _display_name_only(value: str) -> str:
    """The name in "MAILER-DAEMON <>" (From without address), kept for classification."""
    return value.split("<", 1)[0].strip().strip('"').strip()


def _address_pairs(msg: Message, name: str, defects: list[str]) -> list[tuple[str, str]]:
    """(display name, address) pairs of header ``name``, from the structured header.

    Re-parsing the decoded text would let an encoded word in a display name
    (``=?utf-8?q?Evil=0D=0ABcc:_victim@x?= <a@acme.example>``) decide the address.
    When the structured parse fails (the standard library refuses CR/LF in a
    decoded name), the undecoded ASCII value is parsed and only the names are
    decoded. Raw 8-bit or ISO-2022-JP values are decoded first, as before: their
    bytes can look like ``<``, ``,`` or ``@``.
    """
    raws = _raw_header_values(msg, name)
    needs_manual = bool(raws) and ("\x1b" in raws[0] or _SURROGATE.search(raws[0]))
    if raws and not needs_manual:
        try:
            header = msg.get(name)
            found = [(str(a.display_name), str(a.addr_spec)) for a in header.addresses]
        except Exception:
            found = []
        pairs = _addresses(", ".join(f"<{addr}>" for _, addr in found)) if found else []
        if pairs and len(pairs) == len(found):
            return [(name_, addr) for (name_, _), (_, addr) in zip(found, pairs, strict=True)]
        pairs = _addresses_hiding_encoded_words(raws[0])
        if pairs:
            return pairs
    return _addresses(_header(msg, name, defects))


_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_PLACEHOLDER = re.compile("\x01(\\d+)\x01")


def _addresses_hiding_encoded_words(raw: str) -> list[tuple[str, str]]:
    """Parse an undecoded address list with each encoded word replaced by a quoted
    placeholder (hostile encoded words carry ``:``, ``<`` or ``,``), then decode names."""
    words: list[str] = []

    def hide(match: re.Match) -> str:
        words.append(match.group())
        return f'"\x01{len(words) - 1}\x01"'

    def restore(name: str) -> str:
        return _PLACEHOLDER.sub(lambda m: words[int(m.group(1))], name)

    return [(_safe(lambda n=name: _decode_raw_header(restore(n)), name), addr)
            for name, addr in _addresses(_ENCODED_WORD.sub(hide, raw))]


def _addresses_of(msg: Message, name: str, defects: list[str]) -> tuple[str, ...]:
    return tuple(addr for _, addr in _address_pairs(msg, name, defects))


#: Blank lines before the first header (some relays and web forms write them);
#: a parser would read them as the end of an empty header block.
_LEADING_BLANK_LINES = re.compile(rb"(?:[ \t]*\r?\n)+(?=[!-9;-~]+[ \t]*:)")


def _without_leading_blank_lines(raw: bytes) -> bytes:
    """RAW from its first header line, when blank lines come before it."""
    match = _LEADING_BLANK_LINES.match(raw, 0, MAX_HEADER_BLOCK)
    return raw[match.end():] if match else raw


def _build(raw: bytes, max_bytes: int | None, attachment_limit: int | None) -> InboundMessage:
    defects: list[str] = []
    raw = _without_leading_blank_lines(raw)
    over_limit = max_bytes is not None and len(raw) > max_bytes
    if over_limit:
        defects.append(
            f"message is {len(raw)} bytes, over the {max_bytes}-byte limit; body not read"
        )
    msg = _parse_tree(raw, defects, headers_only=over_limit)
    defects.extend(_tree_defects(msg))
    body = _Body() if over_limit else _extract_body(msg, attachment_limit, defects)
    raw_from = _header(msg, "from", defects) or ""
    sender = _address_pairs(msg, "from", defects)
    from_name, from_addr = sender[0] if sender else (_display_name_only(raw_from), None)
    if not sender:
        defects.append("no usable From address")
    return InboundMessage(
        message_id=normalise_message_id(_header(msg, "message-id", defects)),
        from_addr=from_addr,
        from_name=clean_subject(from_name),
        reply_to=next(iter(_addresses_of(msg, "reply-to", defects)), None),
        to=_addresses_of(msg, "to", defects),
        cc=_addresses_of(msg, "cc", defects),
        subject=clean_subject(_header(msg, "subject", defects) or ""),
        date=_parse_date(_header(msg, "date", defects), defects),
        in_reply_to=_message_id_list(_header(msg, "in-reply-to", defects)),
        references=_message_id_list(_header(msg, "references", defects), keep="last"),
        text=_storable(body.text),
        html=None if body.html is None else _storable(body.html),
        attachments=tuple(body.attachments),
        headers=_kept_headers(msg, defects),
        part_types=tuple(_all_part_types(msg)) if not over_limit else (),
        defects=tuple(dict.fromkeys(defects)),
        size=len(raw),
        authentication_results=tuple(
            v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            for v in _raw_header_values(msg, "authentication-results")[:MAX_AUTH_RESULTS]),
        raw=raw,
    )


def parse_message(
    raw: bytes,
    *,
    max_bytes: int | None = None,
    max_attachment_bytes: int | None = None,
) -> InboundMessage:
    """Parse ``raw`` into an :class:`InboundMessage`; never raises.

    Over ``max_bytes`` only the header block is read (enough to record, link
    and answer the message) and a defect says why. Attachments larger than
    ``max_attachment_bytes`` (default: ``max_bytes``) keep their size and name
    but not their data. Any unexpected failure yields an otherwise empty
    message whose ``defects`` name the failure.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raw = str(raw).encode("utf-8", "surrogateescape")
    raw = bytes(raw)
    limit = max_attachment_bytes if max_attachment_bytes is not None else max_bytes
    try:
        return _build(raw, max_bytes, limit)
    except Exception as exc:  # the promise: never raise on input
        return InboundMessage(
            defects=(f"unparseable message: {exc!r:.200}",), size=len(raw), raw=raw
        )


# --------------------------------------------------------------------------
# Bounces: which of our messages came back?

# Horizontal space only before the name: "\s*" would span lines, and a body of
# blank lines would then cost quadratic time (each line start rescans the rest).
_QUOTED_MESSAGE_ID = re.compile(
    r"^[ \t>|]*(?:original-)?message-id:[ \t]*(?:\n[ \t]+)?(<[^<>\s]+>|\S+@\S+)",
    re.IGNORECASE | re.MULTILINE,
)


def _ids_in_headers_text(text: str) -> list[str]:
    try:
        parsed = HeaderParser(policy=policy.compat32).parsestr(text, headersonly=True)
        value = parsed.get("Message-ID")
    except Exception:
        value = None
    normal = normalise_message_id(value) if value else None
    return [normal] if normal else []


def _bounced_ids_in_tree(msg: Message) -> Iterator[str]:
    """Message-IDs of attached originals (message/rfc822, text/rfc822-headers)."""
    for part in _safe(lambda: list(msg.walk()), []):
        if part is msg:
            continue
        ctype = _content_type(part)
        if ctype in ("message/rfc822", "message/global") and _safe(part.is_multipart, False):
            inner = (_safe(part.get_payload, []) or [None])[0]
            if isinstance(inner, Message):
                normal = normalise_message_id(_safe(lambda i=inner: i.get("Message-ID"), None))
                if normal:
                    yield normal
        elif ctype in (
            "text/rfc822-headers",
            "message/rfc822-headers",
            "message/global-headers",
        ) or (ctype.startswith("message/") and not _safe(part.is_multipart, False)):
            yield from _ids_in_headers_text(_part_text(part, []))


def _bounced_ids_in_text(msg: Message) -> Iterator[str]:
    """Message-IDs of the original quoted as text in a non-standard bounce body."""
    for part in _leaf_parts(msg):
        if _content_type(part).startswith("text/"):
            for match in _QUOTED_MESSAGE_ID.finditer(_part_text(part, [])):
                normal = normalise_message_id(match.group(1))
                if normal:
                    yield normal


def extract_bounced_message_ids(msg: InboundMessage | bytes) -> tuple[str, ...]:
    """Message-IDs of the original message(s) a bounce (DSN) refers to.

    Looks in attached originals (``message/rfc822``, ``text/rfc822-headers``)
    first, then in original headers quoted in the text. The bounce's own
    Message-ID is never returned. Never raises.
    """
    raw = msg.raw if isinstance(msg, InboundMessage) else bytes(msg)
    try:
        tree = BytesParser(policy=policy.compat32).parsebytes(raw)
        own = normalise_message_id(_safe(lambda: tree.get("Message-ID"), None))
        found = list(_bounced_ids_in_tree(tree)) + list(_bounced_ids_in_text(tree))
    except Exception:
        return ()
    return tuple(i for i in dict.fromkeys(found) if i != own)


_DSN_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_DSN_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})
_DSN_ACTION = re.compile(r"^[ \t]*action[ \t]*:[ \t]*([a-z]+)", re.IGNORECASE | re.MULTILINE)


def delivery_status_actions(msg: InboundMessage | bytes) -> tuple[str, ...]:
    """The per-recipient `Action` values (`failed`, `delayed`, `delivered`…, lower
    case) of a delivery status notification (RFC 3464 / 6533): a multipart/report
    with report-type delivery-status holding a message/delivery-status part.
    Empty for anything else, whatever its text says. Never raises."""
    raw = msg.raw if isinstance(msg, InboundMessage) else bytes(msg)
    try:
        tree = BytesParser(policy=policy.compat32).parsebytes(raw)
        actions: list[str] = []
        for report in tree.walk():
            if _content_type(report) != "multipart/report" or str(
                    report.get_param("report-type", "")).lower() not in _DSN_REPORT_TYPES:
                continue
            for part in _safe(report.get_payload, []) or []:
                if isinstance(part, Message) and _content_type(part) in _DSN_PARTS:
                    text = _part_text(part, [])
                    actions += [m.group(1).lower() for m in _DSN_ACTION.finditer(text)]
    except Exception:
        return ()
    return tuple(actions)
