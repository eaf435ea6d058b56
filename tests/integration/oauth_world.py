"""Settings and sign-ins for the OAuth2 tests: our IMAP/SMTP settings pointed at
the test Dovecot, aiosmtpd and authorization server (tests/servers/oauth.py)."""

from __future__ import annotations

from pathlib import Path

from mailflow.config import ImapSettings, OAuth2Settings, SmtpSettings
from mailflow.oauth.tokens import TokenSource
from tests.servers.fixtures import OAUTH_CLIENT
from tests.servers.oauth import TokenServer

USER = "support"


def generic(token_server: TokenServer, token_file: Path, **changes) -> dict:
    """The `oauth2` section for the test server as a `generic` provider."""
    return {"provider": "generic", "client_id": OAUTH_CLIENT,
            "token_url": f"{token_server.url}/token",
            "device_url": f"{token_server.url}/devicecode", "scopes": ["mail"],
            "token_store": "file", "token_file": str(token_file), **changes}


def imap_oauth(port: int, oauth2: dict, **changes) -> ImapSettings:
    return ImapSettings(host="127.0.0.1", port=port, username=USER, auth="oauth2",
                        oauth2=OAuth2Settings(**oauth2), **changes)


def smtp_oauth(port: int, oauth2: dict, **changes) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, username=USER, auth="oauth2",
                        oauth2=OAuth2Settings(**oauth2), timeout_seconds=5, **changes)


def sign_in(token_server: TokenServer, oauth2: dict, user: str = USER) -> TokenSource:
    """Store tokens as a finished `mailflow mailbox login` would."""
    tokens = TokenSource(OAuth2Settings(**oauth2), user, where="mailbox.imap")
    tokens.save_login(token_server.issue(user, OAUTH_CLIENT, ("mail",)))
    return tokens
