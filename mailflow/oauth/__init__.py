"""OAuth2 sign-in for hosted mailboxes (Google Workspace, Microsoft 365, any
OAuth2 provider): XOAUTH2 access tokens for IMAP and SMTP.

- `providers`: each provider's endpoints and default scopes, from the config.
- `store`: where the refresh token and the cached access token live (a 0600
  file, or the system keyring), with a lock shared by every process.
- `tokens`: `TokenSource.access_token()` for the adapters: the cached token
  while it is fresh, a refresh before it expires, `LoginNeeded` when the
  provider refuses the refresh token (`invalid_grant`).
- `login`: `mailflow mailbox login`, the providers' own flows for an installed
  application (msal device code, google-auth-oauthlib loopback redirect); the
  only module that imports those libraries.
- `mailbox`: `mailflow mailbox check`, and telling staff when a sign-in is needed.

Importing this package imports no HTTP or provider library: the command line
starts fast, and a refresh imports `requests-oauthlib` only when it happens.
"""

from mailflow.oauth.tokens import LoginNeeded, OAuthError, TokenSource, TokenUnavailable

__all__ = ["LoginNeeded", "OAuthError", "TokenSource", "TokenUnavailable"]
