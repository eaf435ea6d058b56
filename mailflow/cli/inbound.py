"""`mailflow inbound failed|retry`: messages that could not be processed."""

from __future__ import annotations

import logging

import click

from mailflow.cli.app import App, emit_json, json_option, local_time, pass_app, table


@click.group()
def inbound() -> None:
    """Messages that could not be processed: list them, run one again."""


@inbound.command("failed")
@json_option
@pass_app
def inbound_failed(app: App, as_json: bool) -> None:
    """Messages that could not be processed (and have not run again since).

    \b
    mailflow inbound failed
    mailflow inbound failed --json
    """
    from mailflow.services.inbound import failed_messages

    with app.session() as session:
        rows = [{"id": m.id, "received_at": m.received_at, "from": m.from_addr,
                 "subject": m.subject, "reason": m.reason} for m in failed_messages(session)]
    if as_json:
        emit_json(rows)
        return
    table("Failed messages", ["id", "received", "from", "subject", "reason"],
          [[r["id"], local_time(r["received_at"], app.desk), r["from"], r["subject"],
            r["reason"]] for r in rows])


@inbound.command("retry")
@click.argument("inbound_id", type=click.IntRange(min=1), metavar="ID")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error",
                                                "critical"]),
              default="critical", show_default=True,
              help="error: the traceback when it fails again.")
@pass_app
def inbound_retry(app: App, inbound_id: int, log_level: str) -> None:
    """Run a failed message again, once, after its cause is fixed.

    Moving the message from the failed folder back to the inbox does the same.

    \b
    mailflow inbound retry 17
    mailflow inbound retry 17 --log-level error   # with the traceback if it fails again
    """
    from mailflow.errors import MailflowError
    from mailflow.intake import retry

    logger = logging.getLogger("mailflow")
    level = logger.level
    logger.setLevel(log_level.upper())  # the failure is the one line below, by default
    try:
        outcome = retry(app.engine, app.desk, inbound_id)
    finally:
        logger.setLevel(level)
    if outcome.duplicate:
        raise MailflowError(f"inbound message {inbound_id} was run again meanwhile: nothing done")
    if outcome.failed:
        raise MailflowError(f"inbound message {inbound_id} failed again: {outcome.reason}")
    tag = f" {app.desk.tag(outcome.request_id)}" if outcome.request_id else ""
    click.echo(f"inbound message {inbound_id}: {outcome.verdict}{tag}")
