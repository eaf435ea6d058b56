"""Settings: the YAML file validated into typed, frozen objects.

A bad file or key stops start-up with one line that names the key and what is
wrong (`ConfigError`).  Secrets never live in the file: the file names the
environment variable that holds them (`password_env`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailflow.errors import ConfigError

DEFAULT_PATHS = ("mailflow.yaml", "config.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


class InboundSmtpSettings(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8025, ge=1, le=65535)
    lmtp: bool = False


class CreditSettings(_Section):
    price_yen: int = Field(8000, ge=0)
    expiry_days: int = Field(90, ge=1)
    quote_valid_days: int = Field(14, ge=1)
    min_lead_days: int = Field(1, ge=0)
    subject_tag: str = "[REQ-{id}]"

    @field_validator("subject_tag")
    @classmethod
    def _tag_has_id(cls, value: str) -> str:
        if "{id}" not in value:
            raise ValueError("must contain {id}, for example [REQ-{id}]")
        return value


class CatalogItem(_Section):
    key: str
    credits: int = Field(ge=1)
    title: str
    title_ja: str | None = None


class StaffSettings(_Section):
    notify: list[str] = ["staff@example.com"]


class PolicySettings(_Section):
    unknown_sender: Literal["hold", "reply"] = "hold"
    approve_from: Literal["client", "requester"] = "client"
    require_quote_reference: bool = True
    trusted_authserv_id: str | None = None
    max_message_mb: float = Field(25, gt=0)
    autoreply_limit_per_hour: int = Field(5, ge=0)
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
    templates_dir: str | None = None
    language: Literal["en", "ja"] = "en"

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


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return _one_line(f"{location}: unknown key")
    message = error["msg"].removeprefix("Value error, ")
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
