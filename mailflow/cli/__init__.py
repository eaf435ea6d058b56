"""The `mailflow` command: a thin shell around the use cases.

Each command opens one transaction, calls one use case, commits, and prints a
table for people or `--json` for scripts.  Exit codes: 0 success, 1 a domain
error (one line), 2 a usage or configuration error (`app.MailflowGroup`).

The package, one module per command group:

    __init__.py   the root group `cli`, `main`, and COMMANDS (below)
    app.py        what the commands share: App (settings, engine, desk), --json,
                  emit_json, table, DATE, errors and exit codes
    requests.py   request new, requests, show, quote, approve, reject, complete, cancel,
                  redate
    clients.py    clients add|list|show|edit|import, clients address add|remove
    credits.py    credits grant|buy|adjust, balance
    billing.py    invoices, paid, invoice void, report
    mail.py       poll, outbox, serve
    mailbox.py    mailbox login|check (OAuth2 sign-in, log-in checks)
    inbound.py    inbound failed|retry
    jobs.py       digest, jobs run|list
    staff.py      reply, assign, attachments, attachment (the staff side of a request)
    sandbox.py    dev
    db.py         db upgrade

Commands load lazily (click's "lazy subcommands" pattern): `mailflow --help`
lists COMMANDS from the table without importing any command module, and
`mailflow NAME ...` imports only NAME's module.  A command module imports
`mailflow.cli.app`, never this root, and imports the heavy things (SQLAlchemy,
the services) inside its command functions.

Adding a command, or a group of subcommands, is one line in COMMANDS:

    "invoices": ("mailflow.cli.billing:invoices", "Invoices of a month."),

the top-level name, where its click object lives (module:attribute), and the
first line of its docstring (what `mailflow --help` shows; a test checks that
the two agree).  Subcommands of a group live in the group's module.
"""

from __future__ import annotations

import atexit
import gc
import importlib

import click

from mailflow import __version__
from mailflow.cli.app import App, MailflowGroup

#: name → ("module:attribute", the first line of the command's docstring)
COMMANDS: dict[str, tuple[str, str]] = {
    "approve": ("mailflow.cli.requests:approve",
                "Record the client's approval (given by phone); takes the credits."),
    "assign": ("mailflow.cli.staff:assign",
               "Set a request's owner: its staff notices go to them."),
    "attachment": ("mailflow.cli.staff:attachment", "Save attachment N of a request to a file."),
    "attachments": ("mailflow.cli.staff:attachments",
                    "A request's attachments, numbered for `mailflow attachment ID N --out F`."),
    "balance": ("mailflow.cli.credits:balance",
                "Available credits, lots with their expiry, and the recent ledger."),
    "cancel": ("mailflow.cli.requests:cancel",
               "Cancel an open request (with --refund, an approved one's credits return)."),
    "clients": ("mailflow.cli.clients:clients", "Clients and their addresses."),
    "complete": ("mailflow.cli.requests:complete",
                 "Mark approved work as completed; the client is told."),
    "credits": ("mailflow.cli.credits:credits", "Grant, sell or adjust credits."),
    "db": ("mailflow.cli.db:db", "The database schema."),
    "dev": ("mailflow.cli.sandbox:dev",
            "A sandbox mail world on loopback: try mailflow with any mail program."),
    "digest": ("mailflow.cli.jobs:digest",
               "Send the balance digests due now (schedule.digest_cron), or preview them."),
    "inbound": ("mailflow.cli.inbound:inbound",
                "Messages that could not be processed: list them, run one again."),
    "invoice": ("mailflow.cli.billing:invoice_group",
                "Change one invoice: invoice void INVOICE --reason T."),
    "invoices": ("mailflow.cli.billing:invoices", "Invoices for credits bought, oldest first."),
    "jobs": ("mailflow.cli.jobs:jobs_group",
             "Scheduled jobs: allotment, expiry, quotes, reminders, digest."),
    "mailbox": ("mailflow.cli.mailbox:mailbox",
                "Sign in to a hosted mailbox (OAuth2) and check the IMAP and SMTP log-ins."),
    "outbox": ("mailflow.cli.mail:outbox", "Pending, failed and held-back (suppressed) outgoing mail."),
    "paid": ("mailflow.cli.billing:paid",
             "Record an invoice's payment: its credits are added and the client gets a receipt."),
    "poll": ("mailflow.cli.mail:poll",
             "Fetch and process new mail from the IMAP folder, send the outbox, exit."),
    "quote": ("mailflow.cli.requests:quote",
              "Quote a request: mailflow quote 12 --credits 2 --due 2026-12-10"),
    "redate": ("mailflow.cli.requests:redate",
               "Move an approved request's completion date; the client is told."),
    "reject": ("mailflow.cli.requests:reject", "Record the client's rejection (given by phone)."),
    "report": ("mailflow.cli.billing:report",
               "Per client for a month: credits granted, bought, used, expired;"
               " yen invoiced and paid."),
    "reply": ("mailflow.cli.staff:reply",
              "Write to the client in the request's thread (no text: opens $EDITOR)."),
    "request": ("mailflow.cli.requests:request_group",
                "Log a request that came by phone or chat."),
    "requests": ("mailflow.cli.requests:requests_list",
                 "List requests, optionally by status, client, owner, words or due date."),
    "serve": ("mailflow.cli.mail:serve",
              "Run everything until SIGTERM: IMAP IDLE (or polling), the outbox sender,"
              " scheduled jobs, and the inbound SMTP/LMTP listener when enabled."),
    "show": ("mailflow.cli.requests:show",
             "One request: owner, due date, thread, attachments, notes and ledger effects."),
}


class LazyGroup(MailflowGroup):
    """A group whose commands are imported when invoked (click's lazy-loading
    pattern), listed in `--help` from the short help of the table."""

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            self.add_command(self._load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, cmd_name: str) -> click.Command:
        module_name, _, attribute = self.lazy_commands[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}:{attribute} is not a click command")
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """As click's, but an unknown name is compared with every command, loaded
        or not, for click's "Did you mean" (click >= 8.4)."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as error:
            unknown = getattr(error, "command_name", None)
            if unknown is None:
                raise
            raise type(error)(unknown, possibilities=self.list_commands(ctx), ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not loaded yet is described by its table
        entry (shortened exactly as click shortens a docstring)."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            command = self.commands.get(name) or click.Command(
                name, help=self.lazy_commands[name][1])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="MAILFLOW_CONFIG", type=click.Path(dir_okay=False),
              help="Config file (default: $MAILFLOW_CONFIG, ./mailflow.yaml, built-in defaults).")
@click.version_option(__version__, prog_name="mailflow")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """mailflow runs a prepaid-support desk over ordinary e-mail.

    \b
    A first session:
      mailflow db upgrade
      mailflow clients add Acme --email a@acme.example --plan 5
      mailflow credits buy Acme 3
      mailflow request new Acme --subject "Replace banner"
      mailflow quote 1 --credits 2 --due 2026-12-10
      mailflow balance Acme
    """
    ctx.obj = App(config_path)
    ctx.call_on_close(ctx.obj.close)


def main(argv: list[str] | None = None) -> int:
    # At exit the interpreter collects garbage once more over every object: some
    # 80,000 after a database command (SQLAlchemy's, pydantic's, ours), 0.05-0.1 s
    # of each command here, only to free cycles of a process that is ending.
    # Frozen objects are left out (whatever must be closed is closed by then).
    atexit.register(gc.freeze)
    try:
        cli.main(args=argv, prog_name="mailflow", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0

