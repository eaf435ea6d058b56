"""`mailflow serve`."""

from __future__ import annotations

import signal
import sys

import click

from mailflow.cli import App, cli, pass_app


@cli.command()
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

