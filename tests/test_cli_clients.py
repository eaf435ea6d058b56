"""`mailflow clients show|edit|address|import` and `credits adjust` as staff type
them (click's CliRunner), on SQLite and PostgreSQL: exit 0, 1 with one line for
a domain error, 2 for usage; `--json` for scripts."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from mailflow.cli import cli


@pytest.fixture
def run(tmp_path, db_url):
    """`mailflow ARGS` against a migrated database with client Acme (plan 5)."""
    config = tmp_path / "mailflow.yaml"
    config.write_text(yaml.safe_dump({"database_url": db_url, "timezone": "Asia/Tokyo"}))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        if code == 1:
            assert result.stderr.strip().count("\n") == 0, result.stderr
        return result

    invoke("clients", "add", "Acme", "--email", "a@acme.example", "--plan", "5")
    return invoke


def as_json(result):
    return json.loads(result.stdout)


def test_show_edit_and_addresses(run):
    run("clients", "add", "Beta", "--email", "x@beta.example")
    run("request", "new", "Acme", "--subject", "Replace banner")
    run("credits", "buy", "Acme", "2")
    shown = as_json(run("clients", "show", "a@acme.example", "--json"))
    assert {k: shown[k] for k in ("id", "name", "lang", "plan", "active", "emails",
                                  "available")} == {
        "id": 1, "name": "Acme", "lang": "en", "plan": 5, "active": True,
        "emails": ["a@acme.example"], "available": 2}
    assert [(r["id"], r["status"], r["subject"]) for r in shown["open_requests"]] == \
        [(1, "received", "Replace banner")]

    edited = run("clients", "edit", "Acme", "--name", "Acme Corp", "--lang", "ja", "--no-plan")
    assert edited.stdout.strip() == "Acme Corp: name Acme → Acme Corp; lang en → ja;" \
                                    " plan 5 → no plan"
    assert run("clients", "edit", "1", "--lang", "ja").stdout.strip() == \
        "Acme Corp: nothing changed"
    assert "b@acme.example added to Acme Corp" in run(
        "clients", "address", "add", "Acme Corp", "B@Acme.example").stdout
    assert "already an address" in run("clients", "address", "add", "1", "b@acme.example").stdout
    run("clients", "address", "remove", "b@acme.example", "a@acme.example")
    assert "deactivated" in run("clients", "edit", "Acme Corp", "--deactivate").stdout

    text = run("clients", "show", "Acme Corp").stdout
    assert "deactivated: its mail is held" in text and "b@acme.example" in text
    assert "no plan" in text and "[REQ-1]" in text
    rows = as_json(run("clients", "list", "--json"))
    assert [(r["name"], r["emails"], r["active"]) for r in rows] == [
        ("Acme Corp", ["b@acme.example"], False), ("Beta", ["x@beta.example"], True)]


def test_errors_are_one_line_with_exit_code(run):
    run("clients", "add", "Beta", "--email", "x@beta.example")
    cases = [  # (args, code, message)
        (["clients", "show", "Nobody"], 1, "client 'Nobody' not found"),
        (["clients", "edit", "Nobody", "--plan", "3"], 1, "client 'Nobody' not found"),
        (["clients", "edit", "Acme", "--name", "beta"], 1, "client 'Beta' already exists"),
        (["clients", "edit", "Acme"], 2, "nothing to change"),
        (["clients", "edit", "Acme", "--plan", "3", "--no-plan"], 2, "exclude each other"),
        (["clients", "edit", "Acme", "--lang", "fr"], 2, "--lang"),
        (["clients", "address", "add", "Acme", "x@beta.example"], 1,
         "address x@beta.example belongs to client Beta (id 2)"),
        (["clients", "address", "add", "Acme", "not-an-address"], 1, "not an e-mail address"),
        (["clients", "address", "remove", "Acme", "a@acme.example"], 1,
         "only address of Acme"),
        (["clients", "address", "remove", "Acme", "z@acme.example"], 1,
         "z@acme.example is not an address of Acme"),
        (["clients", "address", "add", "Acme"], 2, "Missing argument 'ADDR'"),
        (["credits", "adjust", "Acme", "-1", "--reason", "typo"], 1,
         "Acme has 0 credits available, the adjustment takes 1"),
        (["credits", "adjust", "Nobody", "+1", "--reason", "typo"], 1, "not found"),
        (["credits", "adjust", "Acme", "0", "--reason", "typo"], 2, "non-zero"),
        (["credits", "adjust", "Acme", "-1"], 2, "Missing option '--reason'"),
        (["credits", "adjust", "Acme", "two", "--reason", "x"], 2, "'two' is not a valid"),
        (["credits", "adjust", "Acme", "-1", "--reason", "x", "--never-expires"], 1,
         "apply to a positive adjustment"),
    ]
    for args, code, message in cases:
        result = run(*args, code=code)
        assert message in result.stderr, (args, result.stderr)
    shown = as_json(run("clients", "show", "Acme", "--json"))
    assert (shown["name"], shown["emails"], shown["plan"]) == ("Acme", ["a@acme.example"], 5)


def test_adjust_is_shown_in_balance_with_its_reason(run):
    run("credits", "grant", "Acme", "3", "--expires-days", "10")
    run("credits", "buy", "Acme", "2")
    taken = as_json(run("credits", "adjust", "Acme", "-4", "--reason", "quoted twice",
                        "--json"))
    assert (taken["available"], taken["lot"], taken["draws"]) == \
        (1, None, [{"lot": 1, "credits": 3}, {"lot": 2, "credits": 1}])
    added = run("credits", "adjust", "Acme", "+2", "--reason", "import typo", "--never-expires")
    assert added.stdout.strip() == ("Acme: adjustment +2 credits (new lot 3, never expires);"
                                    " available now 3")
    balance = as_json(run("balance", "Acme", "--json"))
    adjustments = [(e["delta"], e["note"]) for e in balance["entries"]
                   if e["kind"] == "adjustment"]
    assert sorted(adjustments) == [(-3, "quoted twice"), (-1, "quoted twice"),
                                   (2, "import typo")]
    assert balance["available"] == 3
    assert "import typo" in run("balance", "Acme").stdout


CSV = ("name,emails,plan,lang\r\n"
       "Acme,a@acme.example;c@acme.example,5,ja\r\n"
       "さくら商事,info@sakura.example ops@sakura.example,3,ja\r\n")


def test_import_dry_run_then_import_then_nothing_to_change(run, tmp_path):
    path = tmp_path / "clients.csv"
    path.write_bytes(CSV.encode("cp932"))  # as Excel in Japan saves it
    dry = run("clients", "import", str(path), "--dry-run")
    assert dry.stdout.splitlines() == [
        "line 2    updated    Acme: lang en → ja; address c@acme.example added",
        "line 3    created    さくら商事: info@sakura.example, ops@sakura.example; plan 3; ja",
        "1 created, 1 updated, 0 unchanged, 0 in error (dry run: nothing written)",
    ]
    assert [r["name"] for r in as_json(run("clients", "list", "--json"))] == ["Acme"]

    report = as_json(run("clients", "import", str(path), "--json"))
    assert (report["encoding"], report["written"], report["created"], report["updated"]) == \
        ("cp932", True, 1, 1)
    assert report["lines"][0]["changes"] == {"lang": ["en", "ja"]}
    rows = as_json(run("clients", "list", "--json"))
    assert [(r["name"], r["emails"], r["plan"], r["lang"]) for r in rows] == [
        ("Acme", ["a@acme.example", "c@acme.example"], 5, "ja"),
        ("さくら商事", ["info@sakura.example", "ops@sakura.example"], 3, "ja")]

    again = run("clients", "import", str(path))
    assert again.stdout.splitlines()[-1] == \
        "0 created, 0 updated, 2 unchanged, 0 in error (written)"
    assert as_json(run("clients", "list", "--json")) == rows


def test_import_with_a_bad_line_writes_nothing_and_names_every_bad_line(run, tmp_path):
    path = tmp_path / "clients.csv"
    path.write_text("\ufeffname,emails,plan\nNew,n@new.example,2\nOther,a@acme.example,1\n"
                    "Third,t@third.example,many\n", encoding="utf-8")
    result = run("clients", "import", str(path), code=1)
    assert result.stdout.splitlines() == [
        "line 2    created    New: n@new.example; plan 2; en",
        "line 3    error      Other: address a@acme.example belongs to client Acme (id 1)",
        "line 4    error      Third: plan 'many' is not a number of credits (0 = no plan)",
        "1 created, 0 updated, 0 unchanged, 2 in error (nothing written)",
    ]
    assert result.stderr.strip() == ("Error: 2 lines in error: nothing was imported"
                                     " (fix them and import the file again)")
    report = as_json(run("clients", "import", str(path), "--json", code=1))
    assert (report["written"], report["errors"], report["encoding"]) == (False, 2, "utf-8-sig")
    assert [r["name"] for r in as_json(run("clients", "list", "--json"))] == ["Acme"]


def test_import_file_problems(run, tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,emails\nCafé,c@cafe.example\n".encode("utf-16"))
    assert "neither UTF-8 nor Shift_JIS" in run("clients", "import", str(latin), code=1).stderr
    assert "unknown encoding 'klingon'" in run("clients", "import", str(latin), "--encoding",
                                               "klingon", code=2).stderr
    assert "does not exist" in run("clients", "import", str(tmp_path / "nope.csv"),
                                   code=2).stderr
    header = tmp_path / "header.csv"
    header.write_text("name,mails\nAcme,a@acme.example\n")
    assert "line 1" in run("clients", "import", str(header), code=1).stdout


@pytest.mark.parametrize("args", [
    ["clients", "show"], ["clients", "edit"], ["clients", "address"],
    ["clients", "address", "add"], ["clients", "address", "remove"], ["clients", "import"],
    ["credits", "adjust"],
])
def test_help_has_an_example(args):
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert f"mailflow {' '.join(args[:2])} " in result.output
