"""The command line's layout: one module per command group, loaded only when
its command runs, so `mailflow --help` and simple commands start fast."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import mailflow.cli
from mailflow.cli import COMMANDS, cli

PACKAGE = Path(mailflow.cli.__file__).parent
HEAVY = ("sqlalchemy", "sqlmodel", "pydantic", "alembic", "jinja2", "mailflow.config",
         "mailflow.services")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_names_each_command_and_its_own_short_help(name):
    command = cli.get_command(click.Context(cli), name)
    assert command.name == name
    listed = click.Command(name, help=COMMANDS[name][1])
    for limit in (30, 45, 80, 300):
        assert listed.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_help_lists_every_command_of_the_table():
    result = subprocess.run([sys.executable, "-m", "mailflow", "--help"], capture_output=True,
                            text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == sorted(COMMANDS)


def test_an_unknown_command_is_compared_with_commands_not_loaded_yet():
    result = CliRunner().invoke(cli, ["reqests"])
    assert result.exit_code == 2
    assert "No such command 'reqests'" in result.output
    assert "'requests'" in result.output and "'request'" in result.output


def modules_after(args: list[str], cwd: Path) -> set[str]:
    """The modules a fresh `mailflow ARGS` has imported when it ends."""
    code = ("import json, sys\nfrom mailflow.cli import main\ncode = main(sys.argv[1:])\n"
            "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\nsys.exit(code)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in prefixes or m.startswith(prefixes))


@pytest.mark.parametrize("args", [
    pytest.param(["--help"], id="help"),
    pytest.param(["requests", "--help"], id="requests-help"),
    pytest.param(["show", "--help"], id="show-help"),
    pytest.param(["balance", "--help"], id="balance-help"),
    pytest.param(["dev", "--help"], id="dev-help"),
    pytest.param(["jobs", "list", "--help"], id="jobs-list-help"),
    pytest.param(["mailbox", "login", "--help"], id="mailbox-login-help"),
])
def test_help_imports_no_database_library_nor_service(args, tmp_path):
    assert loaded(modules_after(args, tmp_path), HEAVY) == []


def test_help_imports_no_command_module(tmp_path):
    modules = modules_after(["--help"], tmp_path)
    assert sorted(m for m in modules if m.startswith("mailflow.cli.")) == ["mailflow.cli.app"]
    assert "rich" not in modules


def test_a_listing_imports_only_what_it_reads_with(tmp_path):
    (tmp_path / "mailflow.yaml").write_text(f"database_url: sqlite:///{tmp_path / 'm.db'}\n")
    modules_after(["db", "upgrade"], tmp_path)
    modules = modules_after(["requests"], tmp_path)
    assert "mailflow.cli.requests" in modules and "sqlalchemy" in modules
    assert loaded(modules, ("alembic", "apscheduler", "imapclient", "aiosmtpd", "mailflow.jobs",
                            "mailflow.poller", "mailflow.intake", "mailflow.cli.mail",
                            "mailflow.cli.jobs", "mailflow.cli.sandbox")) == []


@pytest.fixture(scope="module")
def desk_folder(tmp_path_factory) -> Path:
    """A folder with mailflow.yaml and a desk: client Acme with credits, request 1 quoted."""
    folder = tmp_path_factory.mktemp("desk")
    config = folder / "mailflow.yaml"
    config.write_text(f"database_url: sqlite:///{folder / 'm.db'}\n")
    runner = CliRunner()
    for args in (["db", "upgrade"], ["clients", "add", "Acme", "--email", "a@acme.example"],
                 ["credits", "grant", "Acme", "5"],
                 ["request", "new", "Acme", "--subject", "Replace the banner"],
                 ["quote", "1", "--credits", "2", "--due", "2030-01-31"]):
        result = runner.invoke(cli, ["--config", str(config), *args])
        assert result.exit_code == 0, (args, result.output, result.exception)
    return folder


#: What a command that reads and prints has no use for: templates (it sends no
#: mail) and migrations (the schema check reads Alembic's table with SQL).
NOT_FOR_READING = ("jinja2", "markupsafe", "mailflow.render", "alembic")


@pytest.mark.parametrize("args", [
    pytest.param(["requests"], id="requests"),
    pytest.param(["balance", "Acme"], id="balance"),
    pytest.param(["show", "1"], id="show"),
])
def test_a_reading_command_imports_no_template_engine_nor_migrations(args, desk_folder):
    modules = modules_after(args, desk_folder)
    assert "sqlalchemy" in modules
    assert loaded(modules, NOT_FOR_READING) == []


def test_balance_imports_the_ledger_services_only(desk_folder):
    modules = modules_after(["balance", "Acme"], desk_folder)
    assert sorted(m for m in modules if m.startswith("mailflow.services.")) == [
        "mailflow.services.bounds", "mailflow.services.clients", "mailflow.services.credits"]


def test_a_command_closes_the_database_before_the_process_ends(desk_folder):
    """`main` freezes the objects at exit, so no garbage collection closes a
    connection left open: the command must, and SQLite then folds its
    write-ahead log back into the database."""
    modules_after(["requests"], desk_folder)
    assert not (desk_folder / "m.db-wal").exists()


def intra_package_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mailflow.cli"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mailflow.cli"))
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")
                                          if p.name not in ("__init__.py", "app.py")))
def test_a_command_module_imports_the_shared_module_never_the_root(module):
    assert intra_package_imports(PACKAGE / module) <= {"mailflow.cli.app"}


def test_the_root_imports_no_command_module():
    assert intra_package_imports(PACKAGE / "__init__.py") == {"mailflow.cli.app"}
    assert intra_package_imports(PACKAGE / "app.py") == set()
