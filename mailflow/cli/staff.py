"""The staff side of a request: `reply` (write to the client in its thread),
`assign` (set the owner), `attachments` / `attachment` (list and save its files)."""

from __future__ import annotations

import mimetypes
import os
import sys
from pathlib import Path

import click

from mailflow.cli.app import App, emit_json, json_option, pass_app, plural, table
from mailflow.errors import MailflowError

EDITOR_HINT = ("\n# Write to the client above.  Lines starting with # are left out;"
               " an empty text sends nothing.\n")


def _editor_text() -> str:
    written = click.edit(EDITOR_HINT, extension=".txt")
    if written is None:
        return ""
    return "\n".join(line for line in written.splitlines() if not line.startswith("#"))


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise MailflowError(f"cannot read {path}: {error.strerror or error}") from None


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--text", help="The message (else --file, else $EDITOR opens).")
@click.option("--file", "text_file", type=click.Path(dir_okay=False),
              help="Read the message from this file ('-': standard input).")
@click.option("--attach", "attach", multiple=True, type=click.Path(dir_okay=False),
              help="Attach a file (repeatable).")
@pass_app
def reply(app: App, request_id: int, text: str | None, text_file: str | None,
          attach: tuple[str, ...]) -> None:
    """Write to the client in the request's thread (no text: opens $EDITOR).

    \b
    mailflow reply 12 --text "The new banner is on the staging site; does it look right?"
    mailflow reply 12 --file answer.txt --attach mockup.png --attach notes.pdf
    """
    from mailflow.services import staff as staff_service
    from mailflow.services.outbox import FileToSend

    if text is not None and text_file is not None:
        raise click.UsageError("give --text or --file, not both")
    if text_file == "-":
        text = sys.stdin.read()
    elif text_file is not None:
        text = _read_file(text_file).decode("utf-8", errors="replace")
    files = []
    for path in attach:
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        files.append(FileToSend(os.path.basename(path), kind, _read_file(path)))
    with app.session() as session:
        staff_service.get_request(session, request_id)  # unknown: exit 1 before the editor
        if text is None:
            text = _editor_text()
        if not text.strip():
            raise MailflowError("nothing sent: the message is empty")
        row = staff_service.reply_to_client(session, app.desk, request_id=request_id,
                                            text=text, files=files,
                                            actor=os.environ.get("MAILFLOW_STAFF") or "staff")
        to = row.to_addrs + (f" (cc {row.cc_addrs})" if row.cc_addrs else "")
    click.echo(f"{app.desk.tag(request_id)} reply queued to {to}"
               + (f" with {plural(len(files), 'file')}" if files else ""))


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@click.option("--to", "name", required=True, metavar="STAFF",
              help="A staff member's name (staff.members).")
@pass_app
def assign(app: App, request_id: int, name: str) -> None:
    """Set a request's owner: its staff notices go to them."""
    from mailflow.services import staff as staff_service

    with app.session() as session:
        request = staff_service.assign_request(session, app.desk, request_id=request_id,
                                               name=name)
        owner = request.owner
    click.echo(f"{app.desk.tag(request_id)} assigned to {owner}")


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@json_option
@pass_app
def attachments(app: App, request_id: int, as_json: bool) -> None:
    """A request's attachments, numbered for `mailflow attachment ID N --out F`."""
    from mailflow.render import format_size as human_size
    from mailflow.services import staff as staff_service

    with app.session() as session:
        staff_service.get_request(session, request_id)
        files = staff_service.request_files(session, request_id)
    rows = [{"n": f.number, "name": f.filename, "type": f.content_type, "size": f.size,
             "from": f.from_addr, "at": f.received_at} for f in files]
    if as_json:
        emit_json(rows)
        return
    table(f"Attachments of {app.desk.tag(request_id)}", ["n", "name", "type", "size", "from"],
          [[r["n"], r["name"], r["type"], human_size(r["size"]), r["from"]] for r in rows])


@click.command()
@click.argument("request_id", type=int, metavar="ID")
@click.argument("number", type=int, metavar="N")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to save it ('-': standard output).")
@pass_app
def attachment(app: App, request_id: int, number: int, out: str) -> None:
    """Save attachment N of a request to a file."""
    from mailflow.services import staff as staff_service

    with app.session() as session:
        found, data = staff_service.request_file(session, request_id, number)
    if out == "-":
        click.get_binary_stream("stdout").write(data)
        return
    try:
        Path(out).write_bytes(data)
    except OSError as error:
        raise MailflowError(f"cannot write {out}: {error.strerror or error}") from None
    click.echo(f"{found.filename} ({plural(len(data), 'byte')}) saved to {out}")
