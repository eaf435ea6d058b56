"""Each provider's endpoints and scopes, resolved from `oauth2` settings.

Google and Microsoft publish fixed endpoints; `generic` takes them from the
config.  A Google `auth_url`/`token_url` or a Microsoft `authority` in the
config replaces the published one (a national cloud; a test server).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailflow.config import OAuth2Settings
from mailflow.errors import ConfigError

GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
# Gmail's IMAP and SMTP accept XOAUTH2 only with the full-access scope.
GOOGLE_SCOPES = ("https://mail.google.com/",)

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
MICROSOFT_TENANT = "organizations"  # any work or school account
MICROSOFT_SCOPES = ("https://outlook.office.com/IMAP.AccessAsUser.All",
                    "https://outlook.office.com/SMTP.Send")


@dataclass(frozen=True)
class Provider:
    """Where and how to ask for tokens."""

    name: str
    client_id: str
    token_url: str
    scopes: tuple[str, ...]
    auth_url: str | None = None  # browser flow, loopback redirect
    device_url: str | None = None  # device code flow
    authority: str | None = None  # Microsoft: authority URL with tenant, for msal
    custom_authority: bool = False  # Microsoft: not Microsoft's own host (skip its check)

    @property
    def refresh_scopes(self) -> tuple[str, ...]:
        """Scopes sent with a refresh: Microsoft hands out a new refresh token
        only while `offline_access` is asked for."""
        if self.name == "microsoft":
            return (*self.scopes, "offline_access")
        return self.scopes


def resolve(oauth2: OAuth2Settings, where: str) -> Provider:
    """The endpoints of the configured provider; ConfigError when none is."""
    if oauth2.provider is None or oauth2.client_id is None:
        raise ConfigError(f"{where}.oauth2.provider: required when auth is oauth2")
    if oauth2.provider == "google":
        return Provider("google", oauth2.client_id,
                        token_url=oauth2.token_url or GOOGLE_TOKEN_URL,
                        auth_url=oauth2.auth_url or GOOGLE_AUTH_URL,
                        scopes=oauth2.scopes or GOOGLE_SCOPES)
    if oauth2.provider == "microsoft":
        host = oauth2.authority or MICROSOFT_AUTHORITY
        authority = f"{host}/{oauth2.tenant or MICROSOFT_TENANT}"
        return Provider("microsoft", oauth2.client_id,
                        token_url=f"{authority}/oauth2/v2.0/token",
                        device_url=f"{authority}/oauth2/v2.0/devicecode",
                        authority=authority, custom_authority=host != MICROSOFT_AUTHORITY,
                        scopes=oauth2.scopes or MICROSOFT_SCOPES)
    assert oauth2.token_url and oauth2.scopes  # checked by OAuth2Settings
    return Provider("generic", oauth2.client_id, token_url=oauth2.token_url,
                    auth_url=oauth2.auth_url, device_url=oauth2.device_url,
                    scopes=oauth2.scopes)


def token_key(provider: Provider, username: str) -> str:
    """One stored token per provider endpoint, client and mailbox: IMAP and SMTP
    configured alike share one sign-in."""
    return f"{provider.name} {provider.token_url} {provider.client_id} {username.lower()}"
