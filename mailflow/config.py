"""Settings: the YAML file validated into typed, frozen objects.

A bad file or key stops start-up with one line that names the key and what is
wrong (`ConfigError`).  Secrets never live in the file: the file names the
environment variable that holds them (`password_env`).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailflow.core.billing import Rounding, registration_problem
from mailflow.errors import ConfigError

DEFAULT_PATHS = ("mailflow.yaml", "config.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyProblem(ValueError):
    """A problem with one key below the section being validated (a combination
    of keys): the error names `section.KEY`, not just the section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


AuthMethod = Literal["password", "oauth2"]
TOKEN_FILE_NAME = "mailflow-oauth.json"


class OAuth2Settings(_Section):
    """How to get an OAuth2 access token for XOAUTH2 (`auth: oauth2`)."""

    provider: Literal["google", "microsoft", "generic"] | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    tenant: str | None = None
    authority: str | None = None
    auth_url: str | None = None
    token_url: str | None = None
    device_url: str | None = None
    scopes: tuple[str, ...] | None = None
    token_store: Literal["auto", "file", "keyring"] = "auto"
    token_file: str | None = None

    @field_validator("authority", "auth_url", "token_url", "device_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/") if value else value

    @field_validator("scopes")
    @classmethod
    def _some_scopes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not all(s.strip() for s in value):
            raise ValueError("scopes must be non-empty words")
        return value

    @property
    def configured(self) -> bool:
        return self.provider is not None

    @property
    def client_secret(self) -> str | None:
        return os.environ.get(self.client_secret_env) if self.client_secret_env else None

    @model_validator(mode="after")
    def _fits_the_provider(self) -> OAuth2Settings:
        provider = self.provider
        if provider is None:
            return self
        if not self.client_id:
            raise KeyProblem("client_id", f"required for provider {provider}")
        only = {"tenant": "microsoft", "authority": "microsoft", "device_url": "generic"}
        for key, owner in only.items():
            if getattr(self, key) is not None and provider != owner:
                raise KeyProblem(key, f"only for provider {owner}, not {provider}")
        if provider == "microsoft":
            for key in ("auth_url", "token_url"):
                if getattr(self, key) is not None:
                    raise KeyProblem(key, "not for provider microsoft (its endpoints come "
                                          "from authority and tenant)")
            if self.client_secret_env is not None:
                raise KeyProblem("client_secret_env", "not used for provider microsoft: "
                                 "the app is a public client (turn on 'Allow public client "
                                 "flows' in its registration)")
        if provider == "google" and not self.client_secret_env:
            raise KeyProblem("client_secret_env", "required for provider google (the "
                             "client secret of the Desktop app OAuth client)")
        if provider == "generic":
            if not self.token_url:
                raise KeyProblem("token_url", "required for provider generic")
            if not (self.auth_url or self.device_url):
                raise KeyProblem("device_url", "provider generic needs device_url (device "
                                 "code flow) or auth_url (browser, loopback redirect)")
            if not self.scopes:
                raise KeyProblem("scopes", "required for provider generic")
        return self


def _auth_matches_oauth2(auth: str, oauth2: OAuth2Settings) -> None:
    if auth == "oauth2" and not oauth2.configured:
        raise KeyProblem("oauth2.provider", "required when auth is oauth2")
    if auth == "password" and oauth2.configured:
        raise KeyProblem("auth", "is password, but oauth2.provider is set: write "
                                 "auth: oauth2 (or remove the oauth2 section)")


class ImapSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(143, ge=1, le=65535)
    tls: bool = False
    username: str = "support"
    password_env: str = "MAILFLOW_IMAP_PASSWORD"
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    failed_folder: str = "Failed"
    idle: bool = True
    poll_seconds: int = Field(60, ge=1)
    start: Literal["new", "all"] = "new"
    batch_size: int = Field(100, ge=1, le=5000)
    auth: AuthMethod = "password"
    oauth2: OAuth2Settings = OAuth2Settings()

    @model_validator(mode="after")
    def _auth_fits(self) -> ImapSettings:
        _auth_matches_oauth2(self.auth, self.oauth2)
        return self

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


class MailboxSettings(_Section):
    address: str = "support@example.com"
    display_name: str = "Example Support"
    reply_token: bool = False
    imap: ImapSettings = ImapSettings()

    @field_validator("address")
    @classmethod
    def _address_has_at(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError("must be an e-mail address like support@example.com")
        return value


class SmtpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    tls: bool = False
    starttls: bool = False
    username: str | None = None
    password_env: str = "MAILFLOW_SMTP_PASSWORD"
    timeout_seconds: float = Field(30, gt=0)
    max_attempts: int = Field(8, ge=1)
    claim_timeout_seconds: int = Field(300, ge=0)
    auth: AuthMethod = "password"
    oauth2: OAuth2Settings = OAuth2Settings()

    @model_validator(mode="after")
    def _auth_fits(self) -> SmtpSettings:
        if self.auth == "oauth2" and not self.username:
            raise KeyProblem("username", "required when auth is oauth2 (the mailbox "
                                         "address the token belongs to)")
        if self.oauth2.configured or self.auth == "password":
            # Left out with auth: oauth2, it is mailbox.imap.oauth2 (Settings fills it in).
            _auth_matches_oauth2(self.auth, self.oauth2)
        return self

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


class InboundSmtpSettings(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8025, ge=1, le=65535)
    lmtp: bool = False


# The database's integer columns hold up to 2**31 - 1 (PostgreSQL `integer`):
# the largest lot and its price in yen must fit.
MAX_STORED_INTEGER = 2**31 - 1


class CreditSettings(_Section):
    price_yen: int = Field(8000, ge=0)
    expiry_days: int = Field(90, ge=1)
    quote_valid_days: int = Field(14, ge=1)
    min_lead_days: int = Field(1, ge=0)
    subject_tag: str = "[REQ-{id}]"
    max_credits_per_quote: int = Field(100, ge=1, le=1_000_000)
    max_credits_per_grant: int = Field(10_000, ge=1, le=1_000_000)

    @field_validator("subject_tag")
    @classmethod
    def _tag_has_id(cls, value: str) -> str:
        if "{id}" not in value:
            raise ValueError("must contain {id}, for example [REQ-{id}]")
        return value

    @field_validator("max_credits_per_grant")
    @classmethod
    def _price_fits(cls, value: int, info) -> int:
        price = info.data.get("price_yen") or 0
        if value * price > MAX_STORED_INTEGER:
            raise ValueError(f"{value:,} credits at {price:,} yen is more yen than one lot "
                             f"can record ({MAX_STORED_INTEGER:,}); lower it")
        return value


class CatalogItem(_Section):
    key: str
    credits: int = Field(ge=1)
    title: str
    title_ja: str | None = None


class StaffMember(_Section):
    name: str = Field(min_length=1, max_length=100)
    emails: list[str] = []

    @field_validator("emails")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [address.strip().lower() for address in value]


class StaffSettings(_Section):
    notify: list[str] = ["staff@example.com"]
    members: list[StaffMember] = []

    @model_validator(mode="after")
    def _unique_members(self) -> StaffSettings:
        names: set[str] = set()
        addresses: set[str] = set()
        for member in self.members:
            if member.name.casefold() in names:
                raise KeyProblem("members", f"two staff members are named {member.name!r}")
            names.add(member.name.casefold())
            for address in member.emails:
                if address in addresses:
                    raise KeyProblem("members", f"{address} belongs to two staff members")
                addresses.add(address)
        return self

    def member(self, name: str) -> StaffMember | None:
        """The member called NAME (case-insensitive)."""
        return next((m for m in self.members if m.name.casefold() == name.strip().casefold()),
                    None)

    def member_by_address(self, address: str | None) -> StaffMember | None:
        address = (address or "").lower()
        return next((m for m in self.members if address and address in m.emails), None)


class PolicySettings(_Section):
    unknown_sender: Literal["hold", "reply"] = "hold"
    approve_from: Literal["client", "requester"] = "client"
    require_quote_reference: bool = True
    trusted_authserv_id: str | None = None
    max_message_mb: float = Field(25, gt=0)
    cc_client_contacts: bool = True
    autoreply_limit_per_hour: int = Field(5, ge=0)
    staff_notice_limit_per_hour: int | None = Field(30, ge=1)
    spam_header: str | None = None

    @field_validator("spam_header")
    @classmethod
    def _name_and_value(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, colon, wanted = value.partition(":")
        if not colon or not name.strip() or not wanted.strip() or " " in name.strip():
            raise ValueError('must be "Name: value", like "X-Spam-Flag: YES"')
        return f"{name.strip()}: {wanted.strip()}"

    @property
    def spam_marker(self) -> tuple[str, str] | None:
        """The spam header's lower-case name and its value, or None."""
        if self.spam_header is None:
            return None
        name, _, wanted = self.spam_header.partition(":")
        return name.strip().lower(), wanted.strip().lower()
    low_balance_credits: int = Field(2, ge=0)


class ScheduleSettings(_Section):
    digest_cron: str = "0 9 1 * *"
    allotment_cron: str = "0 0 1 * *"
    expiry_warning_days: int = Field(14, ge=0)

    @field_validator("digest_cron", "allotment_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a cron expression of 5 fields, like '0 9 1 * *'")
        return value


class BillingSettings(_Section):
    """The issuer's details printed on every invoice (適格請求書) and how tax is computed."""

    issuer: str = Field("Example Co., Ltd.", min_length=1)
    registration_number: str = "T9234567890123"
    address: str = "1-2-3 Example-cho, Chiyoda-ku, Tokyo 100-0000"
    payment_terms_days: int = Field(30, ge=0, le=365)
    tax_rate: Decimal = Field(Decimal("0.10"), ge=0, lt=1)
    price_includes_tax: bool = False
    rounding: Rounding = Rounding.FLOOR
    bank_account: str = "Example Bank, Head Office, ordinary 1234567, Example Co., Ltd."
    max_credits_per_order: int = Field(100, ge=1, le=10000)

    @field_validator("registration_number")
    @classmethod
    def _registration_number(cls, value: str) -> str:
        problem = registration_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("tax_rate", mode="before")
    @classmethod
    def _exact_rate(cls, value):
        # YAML reads 0.10 as a float; its decimal text is what the agency wrote.
        if isinstance(value, float):
            return Decimal(repr(value))
        if isinstance(value, bool):
            raise ValueError("must be a rate like 0.10")
        return value


DEFAULT_CATALOG = (
    CatalogItem(key="banner", credits=1, title="Add or replace images or banners (up to 3)",
                title_ja="画像・バナーの追加・差し替え（3点まで）"),
    CatalogItem(key="news", credits=1, title="Upload and publish a news entry",
                title_ja="お知らせ記事の掲載"),
    CatalogItem(key="guide", credits=1, title="Create simple instructions or guide",
                title_ja="簡単な手順書の作成"),
    CatalogItem(key="plugin", credits=2, title="Install and test a simple plugin",
                title_ja="シンプルなプラグインの導入・テスト"),
    CatalogItem(key="page", credits=2, title="Create a new templated web page or blog post",
                title_ja="テンプレートを使った新規ページ・ブログ記事の作成"),
    CatalogItem(key="banner_design", credits=2, title="Design a new web banner",
                title_ja="新規Webバナーのデザイン"),
    CatalogItem(key="complex_plugin", credits=3, title="Install and test a complex plugin",
                title_ja="複雑なプラグインの導入・テスト"),
    CatalogItem(key="integration", credits=3,
                title="Configure plugin to integrate with an external system",
                title_ja="外部システム連携のためのプラグイン設定"),
    CatalogItem(key="third_party", credits=3,
                title="Install and test third-party code (e.g. SalesForce, Pardot, CRM)",
                title_ja="サードパーティコードの導入・テスト（SalesForce、Pardot、CRMなど）"),
    CatalogItem(key="plugin_layout", credits=4,
                title="Customize the layout or design of a supported plugin",
                title_ja="対応プラグインのレイアウト・デザインのカスタマイズ"),
    CatalogItem(key="custom_field", credits=4, title="Create new custom field for posts or pages",
                title_ja="投稿・ページのカスタムフィールド作成"),
    CatalogItem(key="analytics", credits=4, title="Review and report on Google Analytics data",
                title_ja="Google Analytics データの確認とレポート"),
    CatalogItem(key="landing_page", credits=5, title="Create custom landing page",
                title_ja="カスタムランディングページの作成"),
    CatalogItem(key="plugin_custom", credits=5, title="Customize plugin functionality",
                title_ja="プラグイン機能のカスタマイズ"),
    CatalogItem(key="theme", credits=5, title="Make global changes to design theme",
                title_ja="デザインテーマ全体の変更"),
)


class Settings(_Section):
    database_url: str = "sqlite:///mailflow.db"
    timezone: str = "Asia/Tokyo"
    mailbox: MailboxSettings = MailboxSettings()
    smtp: SmtpSettings = SmtpSettings()
    inbound_smtp: InboundSmtpSettings = InboundSmtpSettings()
    credits: CreditSettings = CreditSettings()
    catalog: tuple[CatalogItem, ...] = DEFAULT_CATALOG
    staff: StaffSettings = StaffSettings()
    policy: PolicySettings = PolicySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    billing: BillingSettings = BillingSettings()
    templates_dir: str | None = None
    language: Literal["en", "ja"] = "en"

    @model_validator(mode="before")
    @classmethod
    def _oauth2_defaults(cls, data: object) -> object:
        """`smtp.oauth2` left out (or its provider null) with `smtp.auth: oauth2` is
        `mailbox.imap.oauth2` (one sign-in for both); a `token_file` left out is
        `default_token_file`."""
        if not isinstance(data, dict):
            return data
        mailbox = data.get("mailbox")
        imap = mailbox.get("imap") if isinstance(mailbox, dict) else None
        smtp = data.get("smtp")
        data = dict(data)
        if isinstance(imap, dict) and isinstance(imap.get("oauth2"), dict):
            data["mailbox"] = {**mailbox, "imap": _with_token_file(imap, data)}
            own = smtp.get("oauth2") if isinstance(smtp, dict) else None
            if isinstance(smtp, dict) and smtp.get("auth") == "oauth2" and (
                    own is None or isinstance(own, dict) and own.get("provider") is None):
                smtp = {**smtp, "oauth2": imap["oauth2"]}
        if isinstance(smtp, dict) and isinstance(smtp.get("oauth2"), dict):
            data["smtp"] = _with_token_file(smtp, data)
        return data

    @model_validator(mode="after")
    def _smtp_oauth2_known(self) -> Settings:
        if self.smtp.auth == "oauth2" and not self.smtp.oauth2.configured:
            raise KeyProblem("smtp.oauth2.provider", "required when smtp.auth is oauth2 "
                             "(left null, it is mailbox.imap.oauth2's, which is null too)")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a tz folder
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("catalog")
    @classmethod
    def _unique_keys(cls, value: tuple[CatalogItem, ...]) -> tuple[CatalogItem, ...]:
        keys = [item.key for item in value]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate catalog key {duplicates[0]!r}")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def catalog_item(self, key: str) -> CatalogItem | None:
        return next((item for item in self.catalog if item.key == key), None)


def default_token_file(database_url: str) -> str:
    """Where OAuth2 tokens are kept when `token_file` is left out: beside the
    SQLite database file, else (PostgreSQL) in the home directory."""
    if database_url.startswith("sqlite:///"):
        database = database_url.removeprefix("sqlite:///").split("?", 1)[0]
        if database and database != ":memory:":
            return str(Path(database).parent / TOKEN_FILE_NAME)
    return str(Path.home() / TOKEN_FILE_NAME)


def _with_token_file(section: dict, data: dict) -> dict:
    oauth2 = section["oauth2"]
    if not isinstance(oauth2, dict) or oauth2.get("provider") is None \
            or oauth2.get("token_file") is not None:
        return section
    url = data.get("database_url", Settings.model_fields["database_url"].default)
    path = default_token_file(url if isinstance(url, str) else "")
    return {**section, "oauth2": {**oauth2, "token_file": path}}


def _describe(error: dict) -> str:
    parts = [str(part) for part in error["loc"]]
    problem = (error.get("ctx") or {}).get("error")
    if isinstance(problem, KeyProblem):
        parts.append(problem.key)
    location = ".".join(parts) or "(top level)"
    if error["type"] == "extra_forbidden":
        return _one_line(f"{location}: unknown key")
    message = problem.message if isinstance(problem, KeyProblem) else \
        error["msg"].removeprefix("Value error, ")
    return _one_line(f"{location}: {message}")


def _one_line(text: str) -> str:
    """A key or value may hold line breaks; the error must stay on one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def settings_from_mapping(data: dict | None, *, source: str = "config") -> Settings:
    """Validate a mapping (as read from YAML) into `Settings`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc.errors()[0])}") from None


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read settings from PATH, `$MAILFLOW_CONFIG`, or ./mailflow.yaml; defaults if none."""
    chosen = path or os.environ.get("MAILFLOW_CONFIG")
    if chosen is None:
        chosen = next((p for p in DEFAULT_PATHS if Path(p).is_file()), None)
        if chosen is None:
            return Settings()
    file = Path(chosen)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: cannot read config (not UTF-8 at byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}: not valid YAML{where}") from None
    return settings_from_mapping(data, source=str(file))
