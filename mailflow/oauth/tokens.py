"""Access tokens for XOAUTH2: cached while fresh, refreshed before they expire.

    tokens = TokenSource.for_section(settings.mailbox.imap, "mailbox.imap")
    client.oauth2_login(user, tokens.access_token().value)

`access_token()` returns the cached token while more than a quarter of its
lifetime (at most 5 minutes) is left, and otherwise refreshes it with the
stored refresh token (RFC 6749 §6, through requests-oauthlib: the same request
for every provider).  A server that refuses a token it was given (revoked,
expired early) gets a fresh one: `access_token(rejected=old_value)`.

Errors, one line each:
- `LoginNeeded`: no token stored, or the provider refused the refresh token
  (`invalid_grant`: revoked, expired, password changed).  Only a person can
  fix that (`mailflow mailbox login`); the refusal is remembered in the store,
  so every process stops asking the provider until then.
- `TokenUnavailable`: the token endpoint could not be reached or failed (try
  again later, like a mail server that is down).
- `OAuthError`: any other refusal (a wrong client id or secret).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from mailflow.config import ImapSettings, OAuth2Settings, SmtpSettings
from mailflow.errors import ConfigError, MailflowError
from mailflow.oauth.providers import Provider, resolve, token_key
from mailflow.oauth.store import Record, TokenStore

# A token is renewed when less than this share of its lifetime is left ...
RENEW_SHARE = 0.25
# ... or less than this many seconds, whichever comes first.
RENEW_SECONDS = 300
LOGIN_COMMAND = "mailflow mailbox login"


class OAuthError(MailflowError):
    """The provider refused to give an access token."""


class TokenUnavailable(OAuthError):
    """The token endpoint could not be reached or failed: try again later."""


class LoginNeeded(OAuthError):
    """A person must sign in again (`mailflow mailbox login`)."""

    def __init__(self, message: str, *, key: str, revoked: bool) -> None:
        super().__init__(message)
        self.key = key
        self.revoked = revoked  # False: nothing was ever stored


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float | None  # seconds since the epoch; None: the provider did not say
    renew_at: float | None  # from then on `access_token()` gets a new one

    @classmethod
    def of(cls, record: Record) -> AccessToken:
        return cls(record["access_token"], record.get("expires_at"), _renew_at(record))


def _renew_at(record: Record) -> float | None:
    expires_at = record.get("expires_at")
    if expires_at is None:
        return None
    lifetime = expires_at - (record.get("issued_at") or expires_at)
    return expires_at - min(RENEW_SECONDS, lifetime * RENEW_SHARE)


def _fresh(record: Record, now: float) -> bool:
    if not record.get("access_token"):
        return False
    renew_at = _renew_at(record)
    return renew_at is None or now < renew_at


class TokenSource:
    """Access tokens for one mailbox account signed in with one provider."""

    def __init__(self, oauth2: OAuth2Settings, username: str, *, where: str,
                 store: TokenStore | None = None, clock: Callable[[], float] = time.time,
                 timeout: float = 30.0) -> None:
        self.oauth2 = oauth2
        self.username = username
        self.where = where
        self.provider: Provider = resolve(oauth2, where)
        self.key = token_key(self.provider, username)
        if store is None:
            if not oauth2.token_file:
                raise ConfigError(f"{where}.oauth2.token_file: required")
            store = TokenStore(oauth2.token_file, oauth2.token_store, where=where)
        self.store = store
        self.clock = clock
        self.timeout = timeout
        # A secret named but missing fails now, at the connection, not at the first refresh.
        self.client_secret = _client_secret(oauth2, where)

    @classmethod
    def for_section(cls, section: ImapSettings | SmtpSettings, where: str) -> TokenSource:
        username = section.username
        if not username:
            raise ConfigError(f"{where}.username: required when auth is oauth2")
        return cls(section.oauth2, username, where=where)

    @property
    def account(self) -> str:
        return f"{self.username} ({self.provider.name})"

    # -- the access token ---------------------------------------------------------------

    def access_token(self, *, rejected: str | None = None) -> AccessToken:
        """A fresh access token; REJECTED: a value the server just refused."""
        record = self.store.load(self.key)
        if record and not record.get("login_needed") and _fresh(record, self.clock()) \
                and record["access_token"] != rejected:
            return AccessToken.of(record)
        with self.store.locked():
            record = self.store.load(self.key)  # another process may have refreshed it
            if record is None:
                raise LoginNeeded(f"{self.where}: no OAuth2 sign-in stored for "
                                  f"{self.account}: run `{LOGIN_COMMAND}`",
                                  key=self.key, revoked=False)
            if record.get("login_needed"):
                raise self._login_needed(record["login_needed"]["reason"])
            if _fresh(record, self.clock()) and record["access_token"] != rejected:
                return AccessToken.of(record)
            try:
                token = self._refresh(record["refresh_token"])
            except _Refused as refused:
                record["login_needed"] = {"reason": refused.reason, "at": self.clock(),
                                          "staff_told": False}
                self.store.save(self.key, record)
                raise self._login_needed(refused.reason) from None
            record.update(self._timed(token), refresh_token=token.get("refresh_token")
                          or record["refresh_token"])
            self.store.save(self.key, record)
            return AccessToken.of(record)

    def _login_needed(self, reason: str) -> LoginNeeded:
        return LoginNeeded(f"{self.where}: the OAuth2 sign-in for {self.account} has expired "
                           f"or was revoked ({reason}): run `{LOGIN_COMMAND}` again",
                           key=self.key, revoked=True)

    def _timed(self, token: dict[str, Any]) -> Record:
        now = self.clock()
        expires_in = token.get("expires_in")
        return {"access_token": token["access_token"], "issued_at": now,
                "expires_at": now + float(expires_in) if expires_in is not None else None}

    def _refresh(self, refresh_token: str) -> dict[str, Any]:
        import requests
        from oauthlib.oauth2.rfc6749.errors import (
            InvalidGrantError,
            MissingTokenError,
            OAuth2Error,
        )
        from requests_oauthlib import OAuth2Session

        provider = self.provider
        extra = {"client_id": provider.client_id}
        if self.client_secret is not None:
            extra["client_secret"] = self.client_secret
        try:
            with OAuth2Session(provider.client_id) as session:
                return session.refresh_token(
                    provider.token_url, refresh_token=refresh_token, timeout=self.timeout,
                    body=urlencode({"scope": " ".join(provider.refresh_scopes)}), **extra)
        except InvalidGrantError as error:
            raise _Refused(_describe(error)) from error
        except MissingTokenError as error:  # not an OAuth2 answer: a 5xx page, a proxy
            raise TokenUnavailable(f"{self.where}: {provider.token_url} gave no token "
                                   "(the provider may be down); will retry") from error
        except OAuth2Error as error:
            if error.error in ("server_error", "temporarily_unavailable"):
                raise TokenUnavailable(f"{self.where}: {provider.token_url}: "
                                       f"{_describe(error)}; will retry") from error
            raise OAuthError(f"{self.where}: {provider.token_url} refused to refresh the "
                             f"token for {self.account}: {_describe(error)}") from error
        except requests.RequestException as error:
            raise TokenUnavailable(f"{self.where}: cannot reach {provider.token_url}: "
                                   f"{type(error).__name__}; will retry") from error

    # -- sign-in and state -------------------------------------------------------------

    def refused(self) -> None:
        """Raise `LoginNeeded` if the provider refused this sign-in (as the store
        says, whichever process found out); asks no server."""
        record = self.store.load(self.key)
        if record and record.get("login_needed"):
            raise self._login_needed(record["login_needed"]["reason"])

    def save_login(self, token: dict[str, Any]) -> None:
        """Store what a sign-in returned (it must carry a refresh token)."""
        if not token.get("refresh_token"):
            raise OAuthError(f"{self.where}: the provider gave no refresh token for "
                             f"{self.account}; mailflow could not stay signed in")
        record = {"account": self.username, "provider": self.provider.name,
                  "token_url": self.provider.token_url, "scopes": list(self.provider.scopes),
                  "refresh_token": token["refresh_token"], **self._timed(token)}
        with self.store.locked():
            self.store.save(self.key, record)

    def claim_staff_notice(self) -> bool:
        """True once per refused sign-in: the caller tells staff about it."""
        with self.store.locked():
            record = self.store.load(self.key)
            needed = record.get("login_needed") if record else None
            if not needed or needed.get("staff_told"):
                return False
            needed["staff_told"] = True
            self.store.save(self.key, record)
            return True

    def same_sign_in(self, other: TokenSource) -> bool:
        return self.key == other.key and self.store.describe() == other.store.describe()


def _client_secret(oauth2: OAuth2Settings, where: str) -> str | None:
    env = oauth2.client_secret_env
    if env is None:
        return None
    secret = oauth2.client_secret
    if secret is None:
        raise ConfigError(f"{where}.oauth2.client_secret_env: environment variable {env} "
                          "is not set")
    return secret


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(error) -> str:
    """`invalid_grant: Token has been expired or revoked.` on one line."""
    text = error.error or "error"
    if error.description:
        text += f": {error.description}"
    return " ".join(text.split())[:300]
