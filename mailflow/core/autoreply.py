"""Recognise mail that no human wrote, so that we never answer it.

Answering an auto-reply, a bounce or a list message is how mail loops start
(DESIGN §3 step 1). Each check is a small named rule returning a reason; the
first that fires wins. Strong signals (RFC 3834 ``Auto-Submitted``, RFC 3464
/ 5965 / 8098 reports, null return path, daemon senders, ``Precedence``,
``X-Autoreply``) decide alone.  A vacation subject decides alone when it is
written the way responders write it — the phrase first with a colon
("Out of Office: …", "自動応答: …"), or in brackets anywhere ("【自動返信】",
"[不在]") — never a phrase inside a sentence ("Out of office next week?",
"自動返信メールの設定について" are people).  A vacation phrase anywhere counts
together with ``X-Auto-Response-Suppress`` (Exchange stamps that on ordinary
mail too, so neither counts alone).

List and group mail (``Precedence: bulk|list|junk``, ``List-Id``, mailing-list
software, Google Groups) is its own kind, ``LIST``: a person may have written
it, so it is never simply ignored (DESIGN §3 rule 2); :func:`list_senders`
says on whose behalf it came.

Pure: works on an :class:`~mailflow.core.message.InboundMessage`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from mailflow.core.message import InboundMessage, delivery_status_actions

__all__ = ["NEVER_A_PERSON", "Automatic", "AutomaticKind", "bounce_evidence",
           "classify_automatic", "copy_relayed_by_list", "detect_automatic", "is_bounce",
           "list_senders", "vacation_subject"]


class AutomaticKind(StrEnum):
    """Why a message is automatic; callers act on the kind, log the reason."""

    OWN = "own"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    RECEIPT = "receipt"
    AUTO_REPLY = "auto_reply"
    BULK = "bulk"                # a no-reply sender: nobody reads answers
    LIST = "list"                # list or group mail: a person may have written it


#: Kinds that no person wrote: recorded, never answered, never a request.
NEVER_A_PERSON = frozenset({AutomaticKind.OWN, AutomaticKind.BOUNCE, AutomaticKind.COMPLAINT,
                            AutomaticKind.RECEIPT, AutomaticKind.AUTO_REPLY, AutomaticKind.BULK})


@dataclass(frozen=True)
class Automatic:
    kind: AutomaticKind
    reason: str


_DAEMONS = frozenset(
    {
        "mailer-daemon",
        "postmaster",
        "post_master",
        "mail-daemon",
        "mailerdaemon",
        "maildaemon",
        "mdaemon",
        "mail.delivery.system",
        "mail-delivery-system",
    }
)
#: Senders that say nobody reads answers: replying can only loop or bounce.
_NO_REPLY = frozenset({"no-reply", "noreply", "do-not-reply", "donotreply", "no_reply"})
#: Lines only a delivery report contains (RFC 3464 fields, classic MTA texts).
# [ \t]*, not \s*: a pattern that can span lines makes a body of blank lines
# cost quadratic time (minutes for 80 KB), and any sender can write one.
_DSN_BODY = re.compile(
    r"^[ \t]*(?:final-recipient|original-recipient|diagnostic-code|remote-mta|reporting-mta)"
    r"[ \t]*:|"
    r"^[ \t]*action[ \t]*:[ \t]*(?:failed|delayed)|transcript of session follows|"
    r"the original message was received at|this is the mail system at host|"
    r"could not be delivered to|delivery to the following recipient",
    re.IGNORECASE | re.MULTILINE,
)
#: Known mailer daemons' bounce texts (the formats sisimai reads), matched on the
#: text with white space collapsed, so a sentence wrapped over lines still matches.
_BOUNCE_TEXT = re.compile("|".join([
    r"final-recipient ?:", r"diagnostic-code ?:", r"action ?: ?failed",  # RFC 3464 as text
    r"this is the mail system at host", r"this is the postfix program at host",  # Postfix
    r"a message that you sent (?:could not be delivered|contained one or more recipient)",
    r"the following address\(es\) failed",  # Exim
    r"your mail sent on: .{0,80}could not be delivered to",  # KDDI
    r"could not be delivered because of .{0,200}the following recipients were affected",
    r"sent <<< rcpt to:",  # InterScan, Trend Micro (the SMTP transcript)
    r"error: invalid user address error message below",  # Apache James, Verizon
    r"body of message generated response",  # IMail
    r"the original message was received at", r"transcript of session follows",  # Sendmail
    r"this message was created automatically by mail delivery software",  # Exim
    r"this is the qmail-send program at", r"i'm afraid i wasn't able to deliver",  # qmail
    r"delivery has failed to these recipients", r"did not reach (?:some or all of )?the "
    r"(?:intended |following )?recipient",  # Exchange, Office 365
    r"delivery to the following recipients? failed",  # Gmail
    r"sorry, we were unable to deliver your message",  # Yahoo!
    r"we were unable to deliver your message to the following address",  # AOL
    r"there was an error delivering your mail to",  # DragonFly
    r"this is the mailer-daemon, please do not reply",  # OpenSMTPD
    r"an error has occurred while attempting to deliver a message",  # OpenSMTPD
    r"-+ failure reasons -+",  # Lotus Notes
    r"the following addresses had delivery problems",  # McAfee
    r"unable to deliver (?:the )?message to",  # MailFoundry, InterScan, others
    r"the group you tried to contact", r"連絡しようとしたグループ",  # Google Groups
    r"メッセージはエラーのため送信できませんでした",  # au (EZweb)
    r"以下のメールアドレスへの送信に失敗しました",  # m-FILTER
    r"error occurred while trying to deliver the mail to the following recipients",  # WorkMail
    r"i was unable to deliver your message to the following addresses",  # MessageLabs
    r"could not be delivered\. this is a permanent error",
    r"your mail message to the following address\(es\) could not be delivered",
    r"we had trouble delivering your message",
    r"original message follows",  # IMail
    r"this is an automatically generated delivery status notification",
    r"this report relates to a message you sent",  # Sun/Oracle Messaging Server
    r"an email that you attempted to send to the following address could not be delivered",
    r"this is a delivery failure notification message",  # Mimecast
    r"your message was not able to be delivered",  # SendGrid
    r"automatic bounce notification",
    r"no valid recipients were found for this message",
]), re.IGNORECASE)
#: A warning that delivery is delayed and still being tried: not a bounce.
_DELAY_TEXT = re.compile(
    r"has not yet been delivered|only a notification about a delay|delivery incomplete|"
    r"will (?:retry|keep trying)|still trying", re.IGNORECASE)
#: Bounce texts are read this far (their opening lines say what they are).
_BOUNCE_TEXT_CHARS = 20_000
_COMPLAINT_SUBJECT = re.compile(r"complaint about message|abuse report|spam report", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|failure|has failed|notification|problem)|"
    r"mail delivery|returned mail|failure notice|delivery failed|could not be delivered|"
    r"non[- ]?delivery|nondeliverable|rejected|warning: message|message not delivered|"
    r"mail system error|unzustellbar|non remis|no entregado|"
    r"配信|不達|エラー|送信できません|届きませんでした|未達",
    re.IGNORECASE,
)
_OUT_OF_OFFICE_SUBJECT = re.compile(
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)|"
    r"^auto:|away from (?:my|the) (?:desk|office)|on vacation|vacation (?:reply|notice)|"
    r"abwesenheit|automatische antwort|réponse automatique|absence|respuesta automática|"
    r"fuera de la oficina|risposta automatica|fuori ufficio|automatisch antwoord|"
    r"afwezig|autosvar|automatisk svar|poza biurem|不在|自動返信|自動応答|休暇",
    re.IGNORECASE,
)
_VACATION_PHRASE = (
    r"out of (?:the )?office(?: (?:auto ?reply|reply|notice|message))?|"
    r"automatic reply|auto(?:matic)?[- ]?(?:reply|response|responder)|"
    r"away from (?:my|the) (?:desk|office)|on vacation|vacation(?: reply| notice| message)?|"
    r"abwesenheit(?:snotiz)?|automatische antwort|réponse automatique|absence|"
    r"respuesta automática|fuera de la oficina|risposta automatica|fuori ufficio|"
    r"automatisch antwoord|afwezig|autosvar|automatisk svar|poza biurem|"
    r"不在(?:通知|連絡|のお知らせ|のご連絡)?|"
    r"自動(?:返信|応答|送信|回答)(?:メール|メッセージ)?(?:のお知らせ)?|"
    r"休暇(?:中)?(?:のお知らせ)?|auto")
#: A vacation subject as responders write it: the phrase first, then a colon
#: ("Out of Office: …", "AUTO: …", "自動応答: …") or nothing more; or the phrase
#: in brackets anywhere ("【自動返信】…", "Re: 見積 [不在]").
_VACATION_SUBJECT = re.compile(
    rf"^\s*(?:{_VACATION_PHRASE})\s*(?:[:：]|$)|"
    rf"[\[【(（〔<＜]\s*(?:{_VACATION_PHRASE})\s*[\]】)）〕>＞]|"
    r"^\s*不在(?:通知|のお知らせ|のご連絡)|^\s*自動(?:返信|応答)メール(?:のお知らせ)?\s*$",
    re.IGNORECASE,
)
#: What any bounce body says, in some words: a daemon's mail with a bounce
#: subject and none of these is a person's ("Returned mail from our printer?").
_DELIVERY_WORDS = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|address)|mailbox (?:is )?(?:full|"
    r"unavailable)|over ?quota|unable to deliver|undeliver|not (?:be )?delivered|"
    r"delivery (?:has )?failed|failed to deliver|permanent(?:ly)? (?:error|fail)|"
    r"recipient (?:address )?rejected|host unknown|\b[45]\.\d{1,3}\.\d{1,3}\b|\b5[0-5]\d\b|"
    r"宛先|配信(?:でき|に失敗|エラー)|送信(?:でき|に失敗)|届きません|存在しません|容量",
    re.IGNORECASE)
#: A person's reply or forward: no mailer daemon writes these.
_REPLY_PREFIX = re.compile(r"^\s*(?:re|aw|sv|fw|fwd|wg|tr|返信|転送)\s*[:：]", re.IGNORECASE)
_REPORT_PARTS = {
    "message/delivery-status": (AutomaticKind.BOUNCE, "bounce (DSN)"),
    "message/global-delivery-status": (AutomaticKind.BOUNCE, "bounce (DSN)"),
    "message/feedback-report": (AutomaticKind.COMPLAINT, "complaint (ARF)"),
    "message/disposition-notification": (AutomaticKind.RECEIPT, "read receipt"),
    "message/global-disposition-notification": (AutomaticKind.RECEIPT, "read receipt"),
}
_REPORT_TYPES = {
    "delivery-status": (AutomaticKind.BOUNCE, "bounce (DSN)"),
    "feedback-report": (AutomaticKind.COMPLAINT, "complaint (ARF)"),
    "disposition-notification": (AutomaticKind.RECEIPT, "read receipt"),
}


def _local_part(address: str | None) -> str:
    return (address or "").split("@", 1)[0].split("+", 1)[0].lower()


def _same_mailbox(address: str | None, own_address: str) -> bool:
    """support@x and support+TOKEN@x are the same mailbox (our reply tokens)."""
    if not address or "@" not in address or "@" not in own_address:
        return False
    domain, own_domain = address.rsplit("@", 1)[1], own_address.rsplit("@", 1)[1]
    return _local_part(address) == _local_part(own_address) and domain.lower() == own_domain.lower()


def _looks_like_bounce(msg: InboundMessage) -> bool:
    return _local_part(msg.from_addr) in _DAEMONS or bool(_BOUNCE_SUBJECT.search(msg.subject))


def bounce_evidence(msg: InboundMessage) -> str | None:
    """Why MSG may mark one of our messages bounced, or None.

    A delivery status notification (multipart/report, report-type
    delivery-status) counts only when a recipient's `Action` is `failed`
    (`delayed` or `delivered` never do); without one, a known mailer daemon's
    bounce text counts, unless it announces a delay.  A mail from a
    mailer-daemon address that is neither marks nothing: anyone can send one
    quoting our Message-ID."""
    actions = delivery_status_actions(msg)
    if actions:
        # `expired` is no RFC 3464 action, but some senders (SendGrid) write it for failed.
        failed = {"failed", "expired"}.intersection(actions)
        return "delivery status: failed" if failed else None
    text = " ".join(msg.text[:_BOUNCE_TEXT_CHARS].split())
    if _BOUNCE_TEXT.search(text) and not _DELAY_TEXT.search(text):
        return "bounce text of a mailer daemon"
    return None


def _check_own(msg: InboundMessage, own_address: str) -> Automatic | None:
    if _same_mailbox(msg.from_addr, own_address):
        return Automatic(AutomaticKind.OWN, "our own message")
    if any(name.startswith("x-mailflow-") for name in msg.headers):
        return Automatic(AutomaticKind.OWN, "our own message (x-mailflow header)")
    return None


def _check_report(msg: InboundMessage, own_address: str) -> Automatic | None:
    """multipart/report (RFC 6522) by report-type, or a report part anywhere."""
    content_type = msg.headers.get("content-type", "").lower()
    if msg.content_type == "multipart/report":
        match = re.search(r'report-type\s*=\s*"?([\w-]+)', content_type)
        if match and match.group(1) in _REPORT_TYPES:
            kind, reason = _REPORT_TYPES[match.group(1)]
            return Automatic(kind, reason)
        return Automatic(AutomaticKind.BOUNCE, "bounce (multipart/report)")
    for part_type in msg.part_types:
        if part_type in _REPORT_PARTS:
            kind, reason = _REPORT_PARTS[part_type]
            return Automatic(kind, reason)
    if msg.headers.get("feedback-type"):
        return Automatic(AutomaticKind.COMPLAINT, "complaint (ARF)")
    return None


def _check_daemon_sender(msg: InboundMessage, own_address: str) -> Automatic | None:
    """MAILER-DAEMON / postmaster in From (address or bare name) or Return-Path,
    writing what reads like a bounce (a delivery report, a known mailer daemon's
    text, or a bounce subject that is not a person's reply over a body that
    speaks of a delivery failure).  Anything else from such an address is a person's
    ordinary mail (DESIGN §3), for the other rules to judge: a person's reply
    about delivery ("Re: 配信エラーについて") is not a bounce."""
    candidates = (
        _local_part(msg.from_addr),
        msg.from_name.strip().lower() if not msg.from_addr else "",
        _local_part(msg.headers.get("return-path", "").strip().strip("<>")),
    )
    local = next((c for c in candidates if c in _DAEMONS), None)
    bounce_subject = _BOUNCE_SUBJECT.search(msg.subject) and not _REPLY_PREFIX.match(msg.subject)
    if local and (bounce_evidence(msg) or (
            bounce_subject and _DELIVERY_WORDS.search(msg.text[:_BOUNCE_TEXT_CHARS]))):
        return Automatic(AutomaticKind.BOUNCE, f"sender {local}")
    return None


def _check_no_reply_sender(msg: InboundMessage, own_address: str) -> Automatic | None:
    local = _local_part(msg.from_addr)
    if local in _NO_REPLY:
        kind = AutomaticKind.BOUNCE if _looks_like_bounce(msg) else AutomaticKind.BULK
        return Automatic(kind, f"sender {local}")
    return None


def _check_bounce_text(msg: InboundMessage, own_address: str) -> Automatic | None:
    """A bounce-like subject over a body with delivery-report lines (forwarded or legacy DSN)."""
    if _BOUNCE_SUBJECT.search(msg.subject) and _DSN_BODY.search(msg.text):
        return Automatic(AutomaticKind.BOUNCE, "bounce (report text)")
    return None


def _check_complaint_text(msg: InboundMessage, own_address: str) -> Automatic | None:
    """Old Hotmail-style complaints: a complaint subject with the original attached."""
    attached = any(t in ("message/rfc822", "text/rfc822-headers") for t in msg.part_types)
    if attached and _COMPLAINT_SUBJECT.search(msg.subject):
        return Automatic(AutomaticKind.COMPLAINT, "complaint (abuse report)")
    return None


def _check_vendor_auto_headers(msg: InboundMessage, own_address: str) -> Automatic | None:
    """Vendor markers: Apple's vacation responder."""
    if msg.headers.get("x-apple-action", "").strip().upper() == "VACATION":
        return Automatic(AutomaticKind.AUTO_REPLY, "x-apple-action: vacation")
    return None


def _check_null_return_path(msg: InboundMessage, own_address: str) -> Automatic | None:
    """RFC 5321 null reverse-path: bounces, and auto-replies that follow RFC 3834."""
    return_path = msg.headers.get("return-path")
    if return_path is not None and return_path.strip().strip("<>").strip() == "":
        kind = AutomaticKind.BOUNCE if _looks_like_bounce(msg) else AutomaticKind.AUTO_REPLY
        return Automatic(kind, "null return path")
    return None


def _check_auto_submitted(msg: InboundMessage, own_address: str) -> Automatic | None:
    """RFC 3834: any value other than ``no`` means a machine sent it."""
    value = msg.headers.get("auto-submitted", "").split(";", 1)[0].strip().lower()
    if value and value != "no":
        kind = AutomaticKind.BOUNCE if _looks_like_bounce(msg) else AutomaticKind.AUTO_REPLY
        return Automatic(kind, f"auto-submitted: {value}")
    return None


def _check_x_autoreply(msg: InboundMessage, own_address: str) -> Automatic | None:
    for name in ("x-autoreply", "x-autorespond"):
        value = msg.headers.get(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return Automatic(AutomaticKind.AUTO_REPLY, name)
    return None


def _check_vacation_subject(msg: InboundMessage, own_address: str) -> Automatic | None:
    """A responder's subject ("Out of Office: …", "【自動返信】…"), even without
    automatic headers (DESIGN §3 rule 1)."""
    if _VACATION_SUBJECT.search(msg.subject):
        return Automatic(AutomaticKind.AUTO_REPLY, "vacation subject")
    return None


def _check_precedence(msg: InboundMessage, own_address: str) -> Automatic | None:
    value = msg.headers.get("precedence", "").strip().lower()
    if value == "auto_reply":
        return Automatic(AutomaticKind.AUTO_REPLY, f"precedence: {value}")
    if value in ("bulk", "junk", "list"):
        return Automatic(AutomaticKind.LIST, f"precedence: {value}")
    return None


def _check_list_headers(msg: InboundMessage, own_address: str) -> Automatic | None:
    """RFC 2919 List-Id, mailing-list software (fml, Mailman), Google Groups."""
    if msg.headers.get("list-id"):
        return Automatic(AutomaticKind.LIST, "list-id")
    if msg.headers.get("x-mlserver") or msg.headers.get("x-ml-name"):
        return Automatic(AutomaticKind.LIST, "mailing list software")
    if msg.headers.get("x-google-group-id") or msg.headers.get("x-original-from"):
        return Automatic(AutomaticKind.LIST, "group relay")
    return None


_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w.-]+\.[\w-]+", re.UNICODE)


def list_senders(msg: InboundMessage) -> list[str]:
    """Whose mail a list or group message may be, best first: its From, then the
    author a relay names (`X-Original-From`, `X-Original-Sender`, Google
    Groups), then `Reply-To` (Mailman's DMARC mitigation rewrites From to the
    list and puts the author there).  Lower-case addresses."""
    found = [msg.from_addr or ""]
    for name in ("x-original-from", "x-original-sender"):
        match = _ADDRESS.search(msg.headers.get(name, ""))
        found.append(match.group(0) if match else "")
    found.append(msg.reply_to or "")
    return list(dict.fromkeys(a.lower() for a in found if a))


def copy_relayed_by_list(msg: InboundMessage) -> bool:
    """Whether MSG is a list's or group's copy (list headers, or Precedence
    list/bulk): its text and subject may differ from the copy sent to us
    directly (a footer, a subject tag) while its Message-ID is the same."""
    return _check_list_headers(msg, "") is not None or \
        msg.headers.get("precedence", "").strip().lower() in ("list", "bulk")


def vacation_subject(subject: str) -> bool:
    """A vacation phrase anywhere in SUBJECT: a sign, not proof (the loop guard
    uses it; a person may write "Out of office next week?")."""
    return bool(_OUT_OF_OFFICE_SUBJECT.search(subject) or _VACATION_SUBJECT.search(subject))


def _check_exchange_auto(msg: InboundMessage, own_address: str) -> Automatic | None:
    """Exchange marks server-generated mail; inbox-rule loops too."""
    if msg.headers.get("x-ms-exchange-inbox-rules-loop"):
        return Automatic(AutomaticKind.AUTO_REPLY, "exchange inbox rule")
    source = msg.headers.get("x-ms-exchange-generated-message-source", "").lower()
    if source:
        kind = AutomaticKind.BOUNCE if _looks_like_bounce(msg) else AutomaticKind.AUTO_REPLY
        return Automatic(kind, f"exchange generated: {source[:40]}")
    return None


def _check_weak_signals(msg: InboundMessage, own_address: str) -> Automatic | None:
    """An out-of-office subject together with X-Auto-Response-Suppress."""
    suppress = msg.headers.get("x-auto-response-suppress", "").strip().lower()
    if suppress and _OUT_OF_OFFICE_SUBJECT.search(msg.subject):
        return Automatic(
            AutomaticKind.AUTO_REPLY, "out-of-office subject + x-auto-response-suppress"
        )
    return None


def _check_failed_recipients(msg: InboundMessage, own_address: str) -> Automatic | None:
    if msg.headers.get("x-failed-recipients"):
        return Automatic(AutomaticKind.BOUNCE, "bounce (x-failed-recipients)")
    return None


_RULES: tuple[Callable[[InboundMessage, str], Automatic | None], ...] = (
    _check_own,
    _check_report,
    _check_daemon_sender,
    _check_failed_recipients,
    _check_null_return_path,
    _check_auto_submitted,
    _check_x_autoreply,
    _check_exchange_auto,
    _check_vendor_auto_headers,
    _check_bounce_text,
    _check_complaint_text,
    _check_weak_signals,
    _check_vacation_subject,
    _check_precedence,
    _check_list_headers,
    _check_no_reply_sender,
)


def classify_automatic(msg: InboundMessage, *, own_address: str) -> Automatic | None:
    """The first rule that recognises ``msg`` as automatic, or None for a person."""
    for rule in _RULES:
        found = rule(msg, own_address.strip().lower())
        if found is not None:
            return found
    return None


def detect_automatic(msg: InboundMessage, *, own_address: str) -> str | None:
    """A short reason ("precedence: bulk", "bounce (DSN)") or None for a human message."""
    found = classify_automatic(msg, own_address=own_address)
    return found.reason if found else None


def is_bounce(msg: InboundMessage, *, own_address: str = "") -> bool:
    """True for delivery failures, whose original we mark bounced and tell staff about."""
    found = classify_automatic(msg, own_address=own_address)
    return found is not None and found.kind is AutomaticKind.BOUNCE
