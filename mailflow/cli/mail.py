"""`mailflow poll`, `outbox` and `serve`: mail in and out."""

from __future__ import annotations

import signal
import sys
from datetime import datetime

import click

from mailflow.cli.app import DATE, App, emit_json, json_option, pass_app, table
from mailflow.errors import MailflowError

PAGE = 200


@click.command()
@click.option("--retry", is_flag=True, help="Requeue permanently failed messages.")
@click.option("--all", "show_all", is_flag=True, help="Include messages already sent.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=PAGE, show_default=True,
              help="Show at most this many messages.")
@click.option("--offset", type=click.IntRange(0), default=0,
              help="Skip this many first (the next page: --offset 200).")
@json_option
@pass_app
def outbox(app: App, retry: bool, show_all: bool, limit: int, offset: int,
           as_json: bool) -> None:
    """Pending, failed and held-back (suppressed) outgoing mail.

    Oldest first, a page at a time: when there is more, a last line (on stderr
    with --json) says which messages of how many are shown.

    \b
    mailflow outbox                  # what has not gone out, with the error or why held back
    mailflow outbox --retry          # queue permanently failed messages again
    mailflow outbox --all --json     # everything, with the text as sent
    mailflow outbox --all --offset 200   # the next 200
    """
    from mailflow.services import outbox as outbox_service

    include_sent = show_all or as_json
    with app.session() as session:
        if retry:
            count = outbox_service.retry_failed(session, app.desk)
            if not as_json:
                click.echo(f"{count} failed message{'s' * (count != 1)} queued again")
        rows = [{"id": m.id, "to": m.to_addrs, "cc": m.cc_addrs, "subject": m.subject, "status": m.status,
                 "attempts": m.attempts, "template": m.template, "message_id": m.message_id,
                 "request": m.request_id, "last_error": m.last_error, "created_at": m.created_at,
                 "body": m.body_text, "attachments": [a.filename for a in m.attachments]}
                for m in outbox_service.list_outbox(session, include_sent=include_sent,
                                                    limit=limit, offset=offset)]
        total = outbox_service.count_outbox(session, include_sent=include_sent)
    shown = _page_note(offset, len(rows), total)
    if as_json:
        emit_json(rows)
        if shown:
            click.echo(shown, err=True)
        return
    table("Outbox", ["id", "status", "attempts", "to", "subject", "error"],
          [[r["id"], r["status"], r["attempts"], r["to"], r["subject"], r["last_error"]]
           for r in rows])
    if shown:
        click.echo(shown)


def _page_note(offset: int, count: int, total: int) -> str | None:
    """'showing 1–200 of 1,234 (next: --offset 200)', or None when all are shown."""
    if offset == 0 and count == total:
        return None
    first, last = (offset + 1, offset + count) if count else (offset, offset)
    more = f" (next: --offset {last})" if last < total else ""
    return f"showing {first}–{last} of {total:,}{more}"


# --- mail ---------------------------------------------------------------------

@click.command()
@click.option("--once", is_flag=True, required=True,
              help="Process all mail waiting now, send the outbox, exit.")
@click.option("--since", type=DATE, help="With --no-answers: import mail since this date.")
@click.option("--no-answers", is_flag=True,
              help="Record messages only: no requests changed, nothing sent (history import).")
@click.option("--start", type=click.Choice(["new", "all"]),
              help="First connection only: override mailbox.imap.start.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True, help="info: one line per message.")
@json_option
@pass_app
def poll(app: App, once: bool, since: datetime | None, no_answers: bool, start: str | None,
         log_level: str, as_json: bool) -> None:
    """Fetch and process new mail from the IMAP folder, send the outbox, exit.

    \b
    mailflow poll --once
    mailflow poll --once --since 2026-01-01 --no-answers   # import history as records
    """
    from mailflow.adapters.imap import Mailbox, MailboxError
    from mailflow.logs import configure_logging
    from mailflow.oauth.tokens import LoginNeeded
    from mailflow.poller import Poller
    from mailflow.sender import SenderProcess

    if since and not no_answers:
        raise click.UsageError("--since imports history: use it with --no-answers")
    if since:
        from mailflow.services.bounds import check_date

        check_date(since.date(), today=app.desk.today(), what="--since", future=False)
    configure_logging("text", log_level)
    with app.session():  # checks the schema before touching the mailbox
        pass
    mailbox = Mailbox(app.settings.mailbox.imap)
    progress = _progress_printer() if not as_json and sys.stderr.isatty() else None
    sender = SenderProcess(app.engine, app.desk).start()  # sends while batches go on
    try:
        with mailbox:
            report = Poller(app.engine, app.desk, mailbox, progress=progress,
                            after_batch=sender.wake).poll_once(
                since=since.date() if since else None, answers=not no_answers, start=start)
    except MailboxError as error:
        raise MailflowError(f"IMAP {app.settings.mailbox.imap.host}:"
                            f"{app.settings.mailbox.imap.port}: {error}") from None
    except LoginNeeded as error:  # staff hear of it once; the sender carries the notice
        from mailflow.oauth.check import tell_staff_login_needed

        tell_staff_login_needed(app.engine, app.desk, error)
        raise
    finally:
        sent = sender.stop()
    data = {"processed": report.processed, "failed": report.failed,
            "duplicates": report.duplicates, "moved_leftovers": report.moved_leftovers,
            "verdicts": report.verdicts, "sent": sent.sent, "send_retrying": sent.retrying,
            "send_failed": sent.failed, "skipped_locked": report.skipped_locked}
    if as_json:
        emit_json(data)
        return
    if report.skipped_locked:
        click.echo("another mailflow instance is polling this mailbox; nothing done")
        return
    click.echo(f"{report.processed} processed, {report.failed} failed,"
               f" {report.duplicates} already done; {sent.sent} sent"
               + (f", {sent.retrying} to retry" if sent.retrying else "")
               + (f", {sent.failed} failed to send" if sent.failed else ""))


def _progress_printer():
    from rich.progress import Progress

    progress = Progress(transient=True)
    task = progress.add_task("processing mail", total=None)
    progress.start()

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)
        if done >= total:
            progress.stop()

    return update


@click.command()
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Readable lines, or one JSON object per line.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.option("--no-scheduler", is_flag=True, help="Do not run the periodic jobs here "
              "(another instance, or cron with `mailflow jobs run`, does).")
@pass_app
def serve(app: App, log_format: str, log_level: str, no_scheduler: bool) -> None:
    """Run everything until SIGTERM: IMAP IDLE (or polling), the outbox sender,
    scheduled jobs, and the inbound SMTP/LMTP listener when enabled.

    \b
    mailflow serve
    mailflow serve --log-format json      # for journald / log shippers
    """
    from mailflow.logs import configure_logging
    from mailflow.serve import Service

    configure_logging(log_format, log_level)
    with app.session():  # the schema must exist before anything starts
        pass
    service = Service(app.engine, app.desk)

    def on_signal(signum, _frame) -> None:
        service.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    code = service.run(scheduler=not no_scheduler)
    sys.exit(code)

