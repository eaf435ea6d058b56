"""The staff side from the command line (issue 11 points 1, 2, 5): `reply`,
`assign`, `requests --owner/--mine/--search/--due-before`, `show`'s owner, due
date, days left, attachments and notes, `attachments` / `attachment`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
import yaml
from click.testing import CliRunner
from sqlmodel import select

from mailflow.cli import cli
from mailflow.cli.app import console
from mailflow.config import load_settings
from mailflow.db import create_db_engine, transaction
from mailflow.desk import Desk
from mailflow.intake import receive
from mailflow.models import Outbox

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def desk_today():
    """Today where the desk is (its config says Asia/Tokyo): days left count there."""
    return datetime.now(ZoneInfo("Asia/Tokyo")).date()


@pytest.fixture
def desk_cli(tmp_path, empty_db_url, monkeypatch):
    """`mailflow ARGS` on a fresh database with two staff members and one client."""
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": empty_db_url, "timezone": "Asia/Tokyo",
        "mailbox": {"address": "support@agency.example"},
        "staff": {"notify": ["desk@agency.example"],
                  "members": [{"name": "Sato", "emails": ["sato@agency.example"]},
                              {"name": "Tanaka", "emails": ["tanaka@agency.example"]}]},
    }))
    monkeypatch.delenv("MAILFLOW_STAFF", raising=False)
    monkeypatch.setenv("EDITOR", "true")
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, input: str | None = None,
               env: dict[str, str] | None = None):
        result = runner.invoke(cli, ["--config", str(config), *args], input=input, env=env,
                               catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    invoke("db", "upgrade")
    invoke("clients", "add", "Acme", "--email", "a@acme.example", "--email", "b@acme.example")
    invoke.config = config
    invoke.db_url = empty_db_url
    return invoke


def outbox(run) -> list[dict]:
    return json.loads(run("outbox", "--json").stdout)


def mail_in(run, raw: bytes):
    settings = load_settings(run.config)
    engine = create_db_engine(run.db_url)
    try:
        return receive(engine, Desk(settings), raw)
    finally:
        engine.dispose()


def request_mail(*, subject="Logo swap", text="Please use the attached logo.",
                 cc: str | None = None, files=(("logo.png", "image/png", PNG),)) -> bytes:
    message = EmailMessage()
    message["From"] = "a@acme.example"
    message["To"] = "support@agency.example"
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Message-ID"] = f"<{abs(hash((subject, text, cc)))}@acme.example>"
    message.set_content(text)
    for name, kind, data in files:
        main, sub = kind.split("/")
        message.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return message.as_bytes()


# --- reply ------------------------------------------------------------------------------

def test_reply_sends_text_in_the_thread_with_footer_and_show_records_it(desk_cli, tmp_path):
    desk_cli("request", "new", "Acme", "--subject", "Banner", "--text", "Swap it")
    mockup = tmp_path / "mockup.png"
    mockup.write_bytes(PNG)
    out = desk_cli("reply", "1", "--text", "Which colour do you prefer?",
                   "--attach", str(mockup)).stdout
    assert out.strip() == "[REQ-1] reply queued to a@acme.example with 1 file"
    (sent,) = [m for m in outbox(desk_cli) if m["template"] == "client/reply"]
    assert sent["to"] == "a@acme.example" and sent["subject"] == "[REQ-1] Re: Banner"
    assert sent["body"].startswith("Which colour do you prefer?\n")
    assert "Attached: mockup.png" in sent["body"] and "\n-- \n" in sent["body"]
    assert sent["attachments"] == ["mockup.png"]
    ack = next(m for m in outbox(desk_cli) if m["template"] == "client/ack")
    engine = create_db_engine(desk_cli.db_url)
    with transaction(engine) as session:
        row = session.exec(select(Outbox).where(Outbox.template == "client/reply")).one()
        assert row.in_reply_to == ack["message_id"]  # in the request's thread
        assert row.attachments[0].data == PNG
    engine.dispose()
    shown = json.loads(desk_cli("show", "1", "--json").stdout)
    (reply,) = [m for m in shown["messages"] if m["kind"] == "client/reply"]
    assert reply["text"].startswith("Which colour") and reply["attachments"] == ["mockup.png"]
    assert "Reply to the client" in desk_cli("show", "1").stdout


def test_reply_reads_a_file_or_stdin(desk_cli, tmp_path):
    desk_cli("request", "new", "Acme", "--subject", "Banner")
    answer = tmp_path / "answer.txt"
    answer.write_text("ご確認ください。\n", encoding="utf-8")
    desk_cli("reply", "1", "--file", str(answer))
    desk_cli("reply", "1", "--file", "-", input="From standard input\n")
    bodies = [m["body"] for m in outbox(desk_cli) if m["template"] == "client/reply"]
    assert bodies[0].startswith("ご確認ください。") and bodies[1].startswith("From standard")


def test_reply_with_no_text_opens_the_editor_and_an_empty_text_sends_nothing(desk_cli):
    desk_cli("request", "new", "Acme", "--subject", "Banner")
    # EDITOR=true leaves the file as it was: only the # hint, i.e. nothing written.
    result = desk_cli("reply", "1", code=1)
    assert "empty" in result.stderr and result.stderr.count("\n") == 1
    assert not [m for m in outbox(desk_cli) if m["template"] == "client/reply"]


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("reply", "9", "--text", "x"), "request 9 not found", id="unknown-request"),
    pytest.param(("reply", "1", "--text", "x", "--attach", "/nonexistent/f.pdf"),
                 "cannot read /nonexistent/f.pdf", id="missing-file"),
    pytest.param(("assign", "1", "--to", "Nobody"), "staff member 'Nobody' not found",
                 id="unknown-staff"),
    pytest.param(("assign", "9", "--to", "Sato"), "request 9 not found", id="assign-unknown"),
    pytest.param(("requests", "--owner", "Nobody"), "staff member 'Nobody' not found",
                 id="owner-unknown"),
    pytest.param(("attachment", "1", "3", "--out", "x"), "request 1 has no attachment 3",
                 id="no-such-attachment"),
    pytest.param(("attachments", "9"), "request 9 not found", id="attachments-unknown"),
])
def test_bad_input_is_one_line_and_exit_1(desk_cli, args, message):
    desk_cli("request", "new", "Acme", "--subject", "Banner")
    result = desk_cli(*args, code=1)
    assert message in result.stderr and result.stderr.count("\n") == 1


# --- owners and finding ------------------------------------------------------------------

def test_assign_routes_notices_to_the_owner_and_filters_by_owner(desk_cli, monkeypatch):
    desk_cli("request", "new", "Acme", "--subject", "Banner")
    desk_cli("request", "new", "Acme", "--subject", "Footer")
    assert desk_cli("assign", "1", "--to", "sato").stdout.strip() == "[REQ-1] assigned to Sato"
    mail_in(desk_cli, request_mail(subject="Re: [REQ-1] Banner", text="One more thing", files=()))
    comment = [m for m in outbox(desk_cli) if m["template"] == "staff/comment"]
    assert [m["to"] for m in comment] == ["sato@agency.example"]
    assert [r["id"] for r in json.loads(desk_cli("requests", "--owner", "SATO",
                                                 "--json").stdout)] == [1]
    monkeypatch.setenv("MAILFLOW_STAFF", "Tanaka")
    assert json.loads(desk_cli("requests", "--mine", "--json").stdout) == []
    desk_cli("assign", "2", "--to", "Tanaka")
    rows = json.loads(desk_cli("requests", "--mine", "--json").stdout)
    assert [(r["id"], r["owner"]) for r in rows] == [(2, "Tanaka")]
    monkeypatch.delenv("MAILFLOW_STAFF")
    assert "MAILFLOW_STAFF" in desk_cli("requests", "--mine", code=2).stderr


def test_search_matches_subject_and_text_japanese_included(desk_cli):
    desk_cli("request", "new", "Acme", "--subject", "トップページのバナー差し替え")
    desk_cli("request", "new", "Acme", "--subject", "Footer", "--text", "Update the COPYRIGHT")
    desk_cli("request", "new", "Acme", "--subject", "お問い合わせフォーム", "--text",
             "送信ボタンが動きません")

    def found(*words: str) -> list[int]:
        return [r["id"] for r in json.loads(desk_cli("requests", "--search", " ".join(words),
                                                     "--json").stdout)]

    assert found("バナー") == [1]
    assert found("copyright") == [2]  # text, any case
    assert found("送信ボタン") == [3]
    assert found("フォーム", "ボタン") == [3]  # every word
    assert found("バナー", "ボタン") == []
    assert found("100%") == []  # a LIKE wildcard is a plain character


@pytest.mark.parametrize("subject", ["[bold]Fix[/bold] the header", "Icons :smile: :thumbs_up:",
                                     "[REQ-9] \\[x] old tag", "[link=https://x.example]y[/link]"])
def test_tables_print_a_clients_subject_as_written(desk_cli, subject):
    """A subject is the client's words: never read as rich markup or emoji codes."""
    desk_cli("clients", "add", "[red]Beta[/red]", "--email", "x@beta.example")
    desk_cli("request", "new", "[red]Beta[/red]", "--subject", subject)
    console.cache_clear()  # a console as wide as COLUMNS says, not an earlier test's
    try:
        listing = desk_cli("requests", env={"COLUMNS": "300"}).stdout
    finally:
        console.cache_clear()
    assert subject in listing and "[red]Beta[/red]" in listing


def test_due_before_and_show_give_due_date_and_days_left(desk_cli):
    today = desk_today()
    desk_cli("request", "new", "Acme", "--subject", "Soon")
    desk_cli("request", "new", "Acme", "--subject", "Later")
    desk_cli("request", "new", "Acme", "--subject", "Undated")
    desk_cli("quote", "1", "--credits", "1", "--due", (today + timedelta(days=3)).isoformat())
    desk_cli("quote", "2", "--credits", "1", "--due", (today + timedelta(days=20)).isoformat())
    cutoff = (today + timedelta(days=10)).isoformat()
    rows = json.loads(desk_cli("requests", "--due-before", cutoff, "--json").stdout)
    assert [(r["id"], r["days_left"]) for r in rows] == [(1, 3)]
    desk_cli("assign", "1", "--to", "Sato")
    shown = json.loads(desk_cli("show", "1", "--json").stdout)
    assert (shown["owner"], shown["due"], shown["days_left"]) == (
        "Sato", (today + timedelta(days=3)).isoformat(), 3)
    text = desk_cli("show", "1").stdout
    assert f"owner Sato, due {(today + timedelta(days=3)).isoformat()} (3 days left)" in text
    assert "owner (none), no due date" in desk_cli("show", "3").stdout
    assert "usage" in desk_cli("requests", "--due-before", "12/10", code=2).stderr.lower()


# --- attachments ------------------------------------------------------------------------

def test_attachments_are_stored_listed_saved_and_sent_to_staff(desk_cli, tmp_path):
    pdf = b"%PDF-1.4\n" + b"x" * 3000
    outcome = mail_in(desk_cli, request_mail(files=(("logo.png", "image/png", PNG),
                                                    ("仕様書.pdf", "application/pdf", pdf))))
    number = outcome.request_id
    listed = json.loads(desk_cli("attachments", str(number), "--json").stdout)
    assert [(f["n"], f["name"], f["type"], f["size"]) for f in listed] == [
        (1, "logo.png", "image/png", len(PNG)), (2, "仕様書.pdf", "application/pdf", len(pdf))]
    assert "仕様書.pdf" in desk_cli("show", str(number)).stdout
    saved = tmp_path / "out.pdf"
    out = desk_cli("attachment", str(number), "2", "--out", str(saved)).stdout
    assert saved.read_bytes() == pdf and "saved to" in out
    (notice,) = [m for m in outbox(desk_cli) if m["template"] == "staff/new_request"]
    assert notice["attachments"] == ["logo.png", "仕様書.pdf"]
    assert "Attachments (2):" in notice["body"] and "1. logo.png (image/png" in notice["body"]
    # The client's acknowledgement carries none of them.
    (ack,) = [m for m in outbox(desk_cli) if m["template"] == "client/ack"]
    assert ack["attachments"] == []


# --- carbon copies ----------------------------------------------------------------------

def test_answers_cc_the_clients_other_addresses_on_the_request_never_strangers(desk_cli):
    desk_cli("clients", "add", "Other", "--email", "o@other.example")
    outcome = mail_in(desk_cli, request_mail(
        cc="B@acme.example, stranger@else.example, o@other.example", files=()))
    number = str(outcome.request_id)
    (ack,) = [m for m in outbox(desk_cli) if m["template"] == "client/ack"]
    assert (ack["to"], ack["cc"]) == ("a@acme.example", "b@acme.example")
    desk_cli("reply", number, "--text", "Noted.")
    desk_cli("quote", number, "--credits", "1",
             "--due", (desk_today() + timedelta(days=7)).isoformat())
    answers = [m for m in outbox(desk_cli) if m["template"].startswith("client/")]
    assert {m["cc"] for m in answers} == {"b@acme.example"}
    assert json.loads(desk_cli("show", number, "--json").stdout)["cc"] == ["b@acme.example"]
    # Staff notices copy nobody; an address removed from the client is no longer copied.
    assert all(m["cc"] is None for m in outbox(desk_cli) if m["template"].startswith("staff/"))
    desk_cli("clients", "address", "remove", "Acme", "b@acme.example")
    desk_cli("reply", number, "--text", "Again.")
    assert outbox(desk_cli)[-1]["cc"] is None


def test_cc_client_contacts_false_copies_nobody(desk_cli):
    config = yaml.safe_load(desk_cli.config.read_text())
    config["policy"] = {"cc_client_contacts": False}
    desk_cli.config.write_text(yaml.safe_dump(config))
    outcome = mail_in(desk_cli, request_mail(cc="b@acme.example", files=()))
    desk_cli("reply", str(outcome.request_id), "--text", "Noted.")
    assert all(m["cc"] is None for m in outbox(desk_cli))


def test_staff_notice_attaches_files_in_order_within_max_message_mb():
    from mailflow.config import settings_from_mapping
    from mailflow.core.message import Attachment
    from mailflow.services.outbox import notice_files

    desk = Desk(settings_from_mapping({"policy": {"max_message_mb": 0.001}}))  # 1,048 bytes
    found = [Attachment("a.txt", "text/plain", 600, b"a" * 600),
             Attachment("big.pdf", "application/pdf", 900, b"b" * 900),
             Attachment(None, "image/png", 400, b"c" * 400),
             Attachment("huge.zip", "application/zip", 10**8, b"", truncated=True)]
    listing, files = notice_files(desk, found)
    assert [(f["name"], f["attached"]) for f in listing] == [
        ("a.txt", True), ("big.pdf", False), ("attachment-3", True), ("huge.zip", False)]
    assert [f.filename for f in files] == ["a.txt", "attachment-3"]
