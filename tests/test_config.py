"""Settings: the documented example, where the file is found, and one-line errors."""

from __future__ import annotations

import re
import types
import typing
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from mailflow.config import DEFAULT_CATALOG, Settings, load_settings, settings_from_mapping
from mailflow.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
REFERENCE = ROOT / "docs" / "config.md"


# --- helpers ------------------------------------------------------------------------


def _submodel(annotation: typing.Any) -> tuple[type[BaseModel] | None, bool]:
    """The settings model inside a field's type, and whether it is a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model, many = _submodel(arg)
            if model is not None:
                return model, many
    return None, False


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key of a settings model, nested models included (`catalog[].key`)."""
    keys = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.add(path)
        sub, many = _submodel(field.annotation)
        if sub is not None:
            keys |= model_keys(sub, f"{path}[]." if many else f"{path}.")
    return keys


def yaml_keys(data: typing.Any, prefix: str = "") -> set[str]:
    """Every dotted key written in a YAML mapping, list items of mappings as `name[].key`."""
    keys = set()
    if isinstance(data, dict):
        for name, value in data.items():
            path = f"{prefix}{name}"
            keys.add(path)
            if isinstance(value, dict):
                keys |= yaml_keys(value, f"{path}.")
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for item in value:
                    keys |= yaml_keys(item, f"{path}[].")
    return keys


def leaf_keys() -> set[str]:
    """Keys that hold a value rather than a section."""
    return {key for key in model_keys(Settings)
            if not any(other.startswith(f"{key}.") for other in model_keys(Settings))}


def commented_keys(text: str) -> dict[str, str]:
    """Block-style keys of a YAML text, each with the comment lines just above it."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        match = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([name for _, name in stack] + [match.group(2)])
            stack.append((indent, match.group(2)))
            found[path] = "\n".join(comment)
        comment = []
    return found


def write(tmp_path: Path, text: str, name: str = "mailflow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def no_env_config(monkeypatch):
    monkeypatch.delenv("MAILFLOW_CONFIG", raising=False)


# --- the documented example ---------------------------------------------------------


def test_example_config_loads_to_the_defaults():
    """Except `staff.members`: empty by default, one example member in the file."""
    example = load_settings(EXAMPLE)
    assert [(m.name, m.emails) for m in example.staff.members] == [("Sato",
                                                                     ["sato@example.com"])]
    bare = example.model_copy(update={"staff": example.staff.model_copy(
        update={"members": []})})
    assert bare == Settings()


def test_example_config_has_every_settings_key():
    written = yaml_keys(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    expected = model_keys(Settings)
    assert expected - written == set(), "keys of config.py missing from config.example.yaml"
    assert written - expected == set(), "keys in config.example.yaml that config.py lacks"


def test_example_catalog_lists_every_default_task_with_every_field():
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    fields = set(DEFAULT_CATALOG[0].__class__.model_fields)
    assert [item["key"] for item in data["catalog"]] == [item.key for item in DEFAULT_CATALOG]
    assert all(set(item) == fields for item in data["catalog"])
    assert all(item["title_ja"] for item in data["catalog"])


def test_example_config_comments_every_key_with_its_default():
    comments = commented_keys(EXAMPLE.read_text(encoding="utf-8"))
    written = {key for key in model_keys(Settings) if "[]" not in key}
    assert written <= set(comments)
    undocumented = sorted(key for key in written if not comments[key])
    assert undocumented == [], "keys without a comment above them"
    no_default = sorted(key for key in written & leaf_keys() if "Default" not in comments[key])
    assert no_default == [], "keys whose comment does not state the default"


def test_example_config_keeps_secrets_out_of_the_file():
    written = yaml_keys(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    assert not any(key.rsplit(".", 1)[-1] in ("password", "secret", "token") for key in written)


def test_reference_documents_every_key():
    text = REFERENCE.read_text(encoding="utf-8")
    missing = sorted(key for key in model_keys(Settings) if f"`{key}`" not in text)
    assert missing == [], "keys of config.py missing from docs/config.md"


# --- bad files: one line naming the file and the key --------------------------------

BAD_CONFIGS = [
    pytest.param("colour: blue\n", "colour: unknown key", id="unknown-top-level-key"),
    pytest.param("smtp:\n  prot: 25\n", "smtp.prot: unknown key", id="unknown-nested-key"),
    pytest.param("mailbox:\n  imap:\n    hots: x\n", "mailbox.imap.hots: unknown key",
                 id="unknown-deeply-nested-key"),
    pytest.param("smtp:\n  port: abc\n", "smtp.port:", id="wrong-type"),
    pytest.param("smtp:\n  port: 70000\n", "smtp.port:", id="port-out-of-range"),
    pytest.param("mailbox:\n  imap:\n    port: 0\n", "mailbox.imap.port:", id="imap-port-zero"),
    pytest.param("smtp: 25\n", "smtp:", id="section-not-a-mapping"),
    pytest.param("policy:\n  unknown_sender: drop\n", "policy.unknown_sender:", id="bad-enum"),
    pytest.param("mailbox:\n  imap:\n    start: old\n", "mailbox.imap.start:",
                 id="bad-imap-start"),
    pytest.param("language: fr\n", "language:", id="bad-language"),
    pytest.param("timezone: Mars/Olympus_Mons\n", "timezone: unknown time zone",
                 id="bad-time-zone"),
    pytest.param("timezone: America\n", "timezone: unknown time zone",
                 id="time-zone-folder"),
    pytest.param('schedule:\n  digest_cron: "0 9 *"\n', "schedule.digest_cron:",
                 id="bad-digest-cron"),
    pytest.param('schedule:\n  allotment_cron: "@monthly"\n', "schedule.allotment_cron:",
                 id="bad-allotment-cron"),
    pytest.param('credits:\n  subject_tag: "[REQ]"\n', "credits.subject_tag:",
                 id="subject-tag-without-id"),
    pytest.param("credits:\n  price_yen: -1\n", "credits.price_yen:", id="negative-price"),
    pytest.param("credits:\n  min_lead_days: -1\n", "credits.min_lead_days:",
                 id="negative-lead-days"),
    pytest.param("policy:\n  low_balance_credits: -2\n", "policy.low_balance_credits:",
                 id="negative-low-balance"),
    pytest.param("mailbox:\n  address: support\n", "mailbox.address:", id="address-without-at"),
    pytest.param("catalog:\n  - {key: a, credits: 1, title: A}\n  - {key: a, credits: 2, title: B}\n",
                 "catalog: duplicate catalog key 'a'", id="duplicate-catalog-key"),
    pytest.param("catalog:\n  - {key: a, title: A}\n", "catalog.0.credits:",
                 id="catalog-item-without-credits"),
    pytest.param("catalog:\n  - {key: a, credits: 0, title: A}\n", "catalog.0.credits:",
                 id="catalog-item-zero-credits"),
    pytest.param("mailbox:\n  imap:\n    auth: token\n", "mailbox.imap.auth:",
                 id="bad-imap-auth"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n",
                 "mailbox.imap.oauth2.provider: required when auth is oauth2",
                 id="oauth2-without-provider"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: yahoo}\n",
                 "mailbox.imap.oauth2.provider:", id="oauth2-unknown-provider"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: google}\n",
                 "mailbox.imap.oauth2.client_id: required for provider google",
                 id="oauth2-without-client-id"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n"
                 "    oauth2: {provider: google, client_id: c}\n",
                 "mailbox.imap.oauth2.client_secret_env: required for provider google",
                 id="google-without-client-secret"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n"
                 "    oauth2: {provider: google, client_id: c, client_secret_env: S, tenant: t}\n",
                 "mailbox.imap.oauth2.tenant: only for provider microsoft, not google",
                 id="tenant-for-google"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n"
                 "    oauth2: {provider: microsoft, client_id: c, client_secret_env: S}\n",
                 "mailbox.imap.oauth2.client_secret_env: not used for provider microsoft",
                 id="secret-for-microsoft"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: microsoft, "
                 "client_id: c, token_url: 'https://x.example/token'}\n",
                 "mailbox.imap.oauth2.token_url: not for provider microsoft",
                 id="token-url-for-microsoft"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: microsoft, "
                 "client_id: c, device_url: 'https://x.example/device'}\n",
                 "mailbox.imap.oauth2.device_url: only for provider generic",
                 id="device-url-for-microsoft"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n"
                 "    oauth2: {provider: generic, client_id: c, scopes: [mail]}\n",
                 "mailbox.imap.oauth2.token_url: required for provider generic",
                 id="generic-without-token-url"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: generic, "
                 "client_id: c, token_url: 'https://x.example/token', scopes: [mail]}\n",
                 "mailbox.imap.oauth2.device_url: provider generic needs device_url",
                 id="generic-without-flow"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: generic, "
                 "client_id: c, token_url: 'https://x.example/token', "
                 "device_url: 'https://x.example/d'}\n",
                 "mailbox.imap.oauth2.scopes: required for provider generic",
                 id="generic-without-scopes"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: generic, "
                 "client_id: c, token_url: 'http://x.example/token', scopes: [mail]}\n",
                 "mailbox.imap.oauth2.token_url: must be an https:// URL",
                 id="token-url-not-https"),
    pytest.param("mailbox:\n  imap:\n    oauth2: {provider: microsoft, client_id: c}\n",
                 "mailbox.imap.auth: is password, but oauth2.provider is set",
                 id="oauth2-section-with-password-auth"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n"
                 "    oauth2: {provider: microsoft, client_id: c, token_store: vault}\n",
                 "mailbox.imap.oauth2.token_store:", id="bad-token-store"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n"
                 "    oauth2: {provider: microsoft, client_id: c, secret: x}\n",
                 "mailbox.imap.oauth2.secret: unknown key", id="oauth2-unknown-key"),
    pytest.param("smtp:\n  auth: oauth2\n  username: desk\n",
                 "smtp.oauth2.provider: required when smtp.auth is oauth2",
                 id="smtp-oauth2-without-any-sign-in"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n"
                 "    oauth2: {provider: microsoft, client_id: c}\nsmtp:\n  auth: oauth2\n",
                 "smtp.username: required when auth is oauth2", id="smtp-oauth2-without-user"),
    pytest.param("smtp:\n  username: desk\n  oauth2: {provider: microsoft, client_id: c}\n",
                 "smtp.auth: is password, but oauth2.provider is set",
                 id="smtp-oauth2-section-with-password-auth"),
    pytest.param('billing:\n  registration_number: "T1234567890123"\n',
                 "billing.registration_number: check digit is wrong", id="registration-check-digit"),
    pytest.param('billing:\n  registration_number: "1234567890123"\n',
                 "billing.registration_number: must be T followed by 13 digits",
                 id="registration-without-t"),
    pytest.param("billing:\n  registration_number: T92345678901\n",
                 "billing.registration_number: must be T followed by 13 digits",
                 id="registration-too-short"),
    pytest.param("billing:\n  tax_rate: 10\n", "billing.tax_rate:", id="tax-rate-as-percent"),
    pytest.param("billing:\n  tax_rate: -0.1\n", "billing.tax_rate:", id="negative-tax-rate"),
    pytest.param("billing:\n  tax_rate: yes\n", "billing.tax_rate:", id="tax-rate-bool"),
    pytest.param("billing:\n  rounding: bankers\n", "billing.rounding:", id="bad-rounding"),
    pytest.param("billing:\n  payment_terms_days: -1\n", "billing.payment_terms_days:",
                 id="negative-payment-terms"),
    pytest.param("billing:\n  max_credits_per_order: 0\n", "billing.max_credits_per_order:",
                 id="zero-max-order"),
    pytest.param('billing:\n  issuer: ""\n', "billing.issuer:", id="empty-issuer"),
    pytest.param("billing:\n  bank: x\n", "billing.bank: unknown key", id="unknown-billing-key"),
    pytest.param('"colour\\nscheme": blue\n', "colour\\nscheme: unknown key",
                 id="line-break-in-key"),
    pytest.param("- smtp\n- imap\n", "top level must be a mapping", id="top-level-list"),
    pytest.param("just some text\n", "top level must be a mapping", id="top-level-scalar"),
    pytest.param("smtp: [port\n", "not valid YAML at line", id="invalid-yaml"),
    pytest.param("smtp:\n\tport: 25\n", "not valid YAML at line", id="tab-indent"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_raises_one_line_naming_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def _latin1_file(tmp: Path) -> Path:
    path = tmp / "latin1.yaml"
    path.write_bytes("mailbox:\n  display_name: Zürich Support\n".encode("latin-1"))
    return path


UNREADABLE = [
    pytest.param(lambda tmp: tmp / "missing.yaml", "No such file", id="missing-file"),
    pytest.param(lambda tmp: tmp, "Is a directory", id="directory"),
    pytest.param(_latin1_file, "not UTF-8", id="not-utf8"),
]


@pytest.mark.parametrize(("make_path", "expected"), UNREADABLE)
def test_unreadable_config_raises_one_line_naming_file(tmp_path, make_path, expected):
    path = make_path(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: cannot read config")
    assert expected in message


def test_mapping_errors_name_the_source():
    with pytest.raises(ConfigError, match=r"^env: smtp\.port: "):
        settings_from_mapping({"smtp": {"port": "abc"}}, source="env")


def test_cli_reports_config_error_on_one_line_with_exit_2(tmp_path, capsys, no_env_config):
    from mailflow.cli import main

    path = write(tmp_path, "smtp:\n  port: 70000\n")
    assert main(["--config", str(path), "clients", "list"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and "smtp.port" in lines[0]


# --- values that load ---------------------------------------------------------------

GOOD_CONFIGS = [
    pytest.param("", {}, id="empty-file-is-defaults"),
    pytest.param("# only a comment\n", {}, id="comment-only-is-defaults"),
    pytest.param("database_url: postgresql://mailflow@db/mailflow\n",
                 {"database_url": "postgresql://mailflow@db/mailflow"}, id="plain-postgresql"),
    pytest.param("mailbox:\n  imap: {port: 993, tls: true}\n",
                 {"mailbox.imap.port": 993, "mailbox.imap.tls": True}, id="imaps"),
    pytest.param("smtp: {port: 587, starttls: true, username: desk}\n",
                 {"smtp.port": 587, "smtp.starttls": True, "smtp.username": "desk"},
                 id="submission"),
    pytest.param("language: ja\ntimezone: Asia/Tokyo\n",
                 {"language": "ja", "timezone": "Asia/Tokyo"}, id="japanese"),
    pytest.param("catalog: []\n", {"catalog": ()}, id="empty-catalog"),
    pytest.param("billing: {tax_rate: 0.08, rounding: round, price_includes_tax: true}\n",
                 {"billing.tax_rate": Decimal("0.08"), "billing.rounding": "round",
                  "billing.price_includes_tax": True}, id="reduced-rate-tax-included"),
    pytest.param('billing: {registration_number: "T7000012050002", issuer: 株式会社エグザンプル}\n',
                 {"billing.registration_number": "T7000012050002",
                  "billing.issuer": "株式会社エグザンプル"}, id="real-registration-number"),
    pytest.param("billing: {tax_rate: 0}\n", {"billing.tax_rate": Decimal("0")},
                 id="tax-exempt"),
    pytest.param('credits: {subject_tag: "#{id}"}\n', {"credits.subject_tag": "#{id}"},
                 id="custom-subject-tag"),
    pytest.param("database_url: sqlite:////var/lib/mailflow/mailflow.db\nmailbox:\n  imap:\n"
                 "    auth: oauth2\n    oauth2: {provider: microsoft, client_id: c}\n"
                 "smtp: {auth: oauth2, username: desk}\n",
                 {"mailbox.imap.oauth2.token_file": "/var/lib/mailflow/mailflow-oauth.json",
                  "smtp.oauth2.provider": "microsoft", "smtp.oauth2.client_id": "c",
                  "smtp.oauth2.token_file": "/var/lib/mailflow/mailflow-oauth.json"},
                 id="smtp-shares-the-imap-sign-in-token-beside-the-database"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: microsoft, "
                 "client_id: c}\nsmtp:\n  auth: oauth2\n  username: desk\n  oauth2: "
                 "{provider: null, client_id: null}\n",
                 {"smtp.oauth2.provider": "microsoft"}, id="smtp-provider-null-shares-too"),
    pytest.param("mailbox:\n  imap:\n    auth: oauth2\n    oauth2: {provider: google, "
                 "client_id: c, client_secret_env: S, token_file: /srv/t.json}\n"
                 "smtp:\n  auth: oauth2\n  username: desk\n  oauth2: {provider: generic, "
                 "client_id: d, token_url: 'https://idp.example/token/', "
                 "auth_url: 'https://idp.example/auth', scopes: [mail]}\n",
                 {"mailbox.imap.oauth2.token_file": "/srv/t.json",
                  "smtp.oauth2.token_url": "https://idp.example/token",
                  "smtp.oauth2.token_file": "mailflow-oauth.json"},
                 id="smtp-with-its-own-sign-in"),
    pytest.param("database_url: postgresql://db/mailflow\nmailbox:\n  imap:\n"
                 "    auth: oauth2\n    oauth2: {provider: microsoft, client_id: c}\n",
                 {"mailbox.imap.oauth2.token_file":
                  str(Path.home() / "mailflow-oauth.json")},
                 id="token-file-in-home-with-postgresql"),
    pytest.param("credits: {min_lead_days: 0}\npolicy: {low_balance_credits: 0}\n",
                 {"credits.min_lead_days": 0, "policy.low_balance_credits": 0},
                 id="no-lead-time-no-low-balance-mail"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD_CONFIGS)
def test_good_config_loads(tmp_path, text, expected):
    settings = load_settings(write(tmp_path, text))
    for dotted, value in expected.items():
        obj = settings
        for part in dotted.split("."):
            obj = getattr(obj, part)
        assert obj == value, dotted


# --- where the file is found --------------------------------------------------------

LOOKUP = [
    # files in the working directory (name -> smtp.port), $MAILFLOW_CONFIG, the path argument
    pytest.param({}, None, None, 25, id="no-file-gives-defaults"),
    pytest.param({"mailflow.yaml": 2501}, None, None, 2501, id="mailflow-yaml"),
    pytest.param({"config.yaml": 2502}, None, None, 2502, id="config-yaml"),
    pytest.param({"mailflow.yaml": 2501, "config.yaml": 2502}, None, None, 2501,
                 id="mailflow-yaml-before-config-yaml"),
    pytest.param({"env.yaml": 2503}, "env.yaml", None, 2503, id="env-var-when-no-path"),
    pytest.param({"env.yaml": 2503, "mailflow.yaml": 2501}, "env.yaml", None, 2503,
                 id="env-var-before-mailflow-yaml"),
    pytest.param({"env.yaml": 2503, "cli.yaml": 2504}, "env.yaml", "cli.yaml", 2504,
                 id="path-before-env-var"),
]


@pytest.mark.parametrize(("files", "env", "path", "port"), LOOKUP)
def test_config_lookup_order(tmp_path, monkeypatch, files, env, path, port):
    monkeypatch.chdir(tmp_path)
    for name, file_port in files.items():
        write(tmp_path, f"smtp:\n  port: {file_port}\n", name)
    if env is None:
        monkeypatch.delenv("MAILFLOW_CONFIG", raising=False)
    else:
        monkeypatch.setenv("MAILFLOW_CONFIG", str(tmp_path / env))
    settings = load_settings(path)
    assert settings.smtp.port == port
    if not files:
        assert settings == Settings()


def test_missing_file_named_by_env_var_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILFLOW_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_settings()


# --- secrets from the environment ---------------------------------------------------

PASSWORDS = [
    pytest.param("", lambda s: s.mailbox.imap, "MAILFLOW_IMAP_PASSWORD", id="imap-default-var"),
    pytest.param("", lambda s: s.smtp, "MAILFLOW_SMTP_PASSWORD", id="smtp-default-var"),
    pytest.param("mailbox:\n  imap:\n    password_env: DESK_IMAP_PW\n",
                 lambda s: s.mailbox.imap, "DESK_IMAP_PW", id="imap-own-var"),
    pytest.param("smtp:\n  password_env: DESK_SMTP_PW\n", lambda s: s.smtp, "DESK_SMTP_PW",
                 id="smtp-own-var"),
]


@pytest.mark.parametrize(("text", "section", "variable"), PASSWORDS)
def test_password_comes_from_the_named_environment_variable(tmp_path, monkeypatch, text,
                                                            section, variable):
    settings = load_settings(write(tmp_path, text))
    monkeypatch.delenv(variable, raising=False)
    assert section(settings).password is None
    monkeypatch.setenv(variable, "s3cret パス")
    assert section(settings).password == "s3cret パス"


# --- the reference's examples -------------------------------------------------------


def _reference_examples() -> list:
    """Each ```yaml block of docs/config.md, named after the heading above it."""
    examples, heading, block = [], "", None
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        if block is not None:
            if line.startswith("```"):
                examples.append(pytest.param("\n".join(block), id=heading))
                block = None
            else:
                block.append(line)
        elif line.startswith("#"):
            heading = re.sub(r"\W+", "-", line.lstrip("#").split(":")[0].strip().lower())
        elif line.startswith("```yaml"):
            block = []
    return examples


@pytest.mark.parametrize("text", _reference_examples())
def test_reference_example_loads(tmp_path, text):
    settings = load_settings(write(tmp_path, text))
    assert settings != Settings()
