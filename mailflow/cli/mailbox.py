"""`mailflow mailbox login|check`: the support mailbox's OAuth2 sign-in, and
whether the IMAP and SMTP log-ins work.  The logic lives in `mailflow.oauth`
(imported when the command runs; msal and google-auth-oauthlib only by
`login`)."""

from __future__ import annotations

import click

from mailflow.cli.app import App, emit_json, json_option, pass_app


@click.group()
def mailbox() -> None:
    """Sign in to a hosted mailbox (OAuth2) and check the IMAP and SMTP log-ins."""


@mailbox.command("login")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Browser sign-in (Google): the 127.0.0.1 port the browser returns to; "
                   "0 picks a free one. Pick one to forward it with ssh -L.")
@click.option("--no-browser", is_flag=True,
              help="Print the sign-in address instead of opening a browser.")
@click.option("--timeout", type=click.IntRange(min=10), default=600, show_default=True,
              help="Seconds to wait for the browser to come back.")
@pass_app
def mailbox_login(app: App, port: int, no_browser: bool, timeout: int) -> None:
    """Sign in as the support mailbox (OAuth2) and store the token.

    Run it as the user mailflow runs as. Microsoft 365 prints a code to enter
    at microsoft.com/devicelogin; Google opens (or prints) a sign-in address.

    \b
    mailflow mailbox login
    mailflow mailbox login --port 8765 --no-browser   # over ssh -L 8765:127.0.0.1:8765
    """
    from mailflow.oauth.login import login

    for line in login(app.settings, announce=click.echo, open_browser=not no_browser,
                      port=port, timeout=timeout):
        click.echo(line)


@mailbox.command("check")
@json_option
@pass_app
def mailbox_check(app: App, as_json: bool) -> None:
    """Log in to IMAP and SMTP and say what works (exit 0 only if both do).

    \b
    mailflow mailbox check
    mailflow mailbox check --json
    """
    from mailflow.oauth.check import check_mailbox

    checks = check_mailbox(app.settings)
    if as_json:
        emit_json([{"name": c.name, "ok": c.ok, "detail": c.line} for c in checks])
    else:
        for check in checks:
            click.echo(f"{'ok' if check.ok else 'FAILED':<7}{check.line}")
    if not all(check.ok for check in checks):
        raise click.exceptions.Exit(1)
