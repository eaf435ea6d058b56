"""`mailflow mailbox login`: sign in once, keep the refresh token.

Each provider's flow for an installed application, through its maintained
library (imported here only, when a person signs in):

- Microsoft 365: the device code flow of `msal` — the command prints a code,
  the person enters it at microsoft.com/devicelogin on any device.
- Google Workspace: the loopback-redirect flow of `google-auth-oauthlib`
  (Google's device flow does not allow the mail scope): the browser returns
  to a one-request web server on 127.0.0.1.
- generic: with `device_url`, the device code flow (RFC 8628: oauthlib's
  `DeviceClient` builds and reads the messages; no maintained library runs
  that flow against plain endpoints, so the polling loop is here); with only
  `auth_url`, the same loopback flow as Google (`InstalledAppFlow` is plain
  OAuth2 with PKCE and takes any endpoints).

IMAP and SMTP configured with the same provider, client and account share one
sign-in (`sign_ins()`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailflow.config import Settings
from mailflow.errors import MailflowError
from mailflow.oauth.tokens import OAuthError, TokenSource

Announce = Callable[[str], None]
NAMES = {"mailbox.imap": "IMAP", "smtp": "SMTP"}


@dataclass(frozen=True)
class SignIn:
    """One account at one provider, and the connections that use it."""

    sections: tuple[str, ...]  # "mailbox.imap", "smtp"
    tokens: TokenSource

    @property
    def names(self) -> str:
        return " and ".join(NAMES[s] for s in self.sections)


def sign_ins(settings: Settings) -> list[SignIn]:
    """The distinct OAuth2 sign-ins the config uses (none with passwords only)."""
    found: list[SignIn] = []
    for where, section in (("mailbox.imap", settings.mailbox.imap), ("smtp", settings.smtp)):
        if section.auth != "oauth2":
            continue
        tokens = TokenSource.for_section(section, where)
        for index, known in enumerate(found):
            if known.tokens.same_sign_in(tokens):
                found[index] = SignIn((*known.sections, where), known.tokens)
                break
        else:
            found.append(SignIn((where,), tokens))
    return found


def login(settings: Settings, *, announce: Announce, open_browser: bool = True,
          port: int = 0, timeout: float = 600) -> list[str]:
    """Run each sign-in's flow and store its tokens; one line per sign-in."""
    wanted = sign_ins(settings)
    if not wanted:
        raise MailflowError("no OAuth2 sign-in configured: mailbox.imap.auth and smtp.auth "
                            "are both password (see docs/mailboxes.md)")
    done = []
    for sign_in in wanted:
        tokens = sign_in.tokens
        announce(f"Signing in {sign_in.names} as {tokens.account} …")
        token = run_flow(tokens, announce=announce, open_browser=open_browser, port=port,
                         timeout=timeout)
        tokens.save_login(token)
        done.append(f"signed in: {sign_in.names} as {tokens.account}; "
                    f"token stored in {tokens.store.describe()}")
        if os.geteuid() == 0 and not tokens.store.uses_keyring:
            done.append("note: you are root, so root owns the token file; run this as the "
                        "user mailflow runs as (sudo -u mailflow …) or it cannot renew tokens")
        who = _signed_in_as(token)
        if who and who.lower() != tokens.username.lower():
            done.append(f"note: signed in as {who}, not {tokens.username}; that works only "
                        f"if {who} may use the mailbox {tokens.username} (a shared mailbox)")
    return done


def run_flow(tokens: TokenSource, *, announce: Announce, open_browser: bool = True,
             port: int = 0, timeout: float = 600) -> dict[str, Any]:
    """The provider's sign-in flow; returns its token response (with refresh_token)."""
    provider = tokens.provider
    if provider.name == "microsoft":
        return _microsoft_device_flow(tokens, announce)
    if provider.device_url:
        return _device_flow(tokens, announce, timeout)
    return _loopback_flow(tokens, open_browser=open_browser, port=port, timeout=timeout)


def _signed_in_as(token: dict[str, Any]) -> str | None:
    claims = token.get("id_token_claims") or {}
    return claims.get("preferred_username") or claims.get("email")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


# -- Microsoft: msal's device code flow ----------------------------------------------------


def _microsoft_device_flow(tokens: TokenSource, announce: Announce) -> dict[str, Any]:
    import msal

    provider = tokens.provider
    options = {"instance_discovery": False} if provider.custom_authority else {}
    app = msal.PublicClientApplication(provider.client_id, authority=provider.authority,
                                       **options)
    flow = app.initiate_device_flow(scopes=list(provider.scopes))
    if "user_code" not in flow:
        raise OAuthError(f"{tokens.where}: Microsoft would not start the sign-in: "
                         f"{_one_line(flow.get('error_description') or flow.get('error'))}")
    announce(flow["message"])
    result = app.acquire_token_by_device_flow(flow)  # returns when done or the code expired
    if "access_token" not in result:
        raise OAuthError(f"{tokens.where}: the sign-in did not finish: "
                         f"{_one_line(result.get('error_description') or result.get('error'))}")
    return result


# -- Google (and generic with auth_url): the loopback redirect ---------------------------


def _loopback_flow(tokens: TokenSource, *, open_browser: bool, port: int,
                   timeout: float) -> dict[str, Any]:
    import webbrowser

    from google_auth_oauthlib.flow import InstalledAppFlow, WSGITimeoutError
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error

    provider = tokens.provider
    client = {"client_id": provider.client_id, "client_secret": tokens.client_secret or "",
              "auth_uri": provider.auth_url, "token_uri": provider.token_url,
              "redirect_uris": ["http://127.0.0.1"]}
    flow = InstalledAppFlow.from_client_config({"installed": client},
                                               scopes=list(provider.scopes))
    if open_browser:
        try:
            webbrowser.get()
        except webbrowser.Error:  # a server without a browser: the address is printed
            open_browser = False
    extra = {}
    if provider.name == "google":  # a refresh token, every time, for this account
        extra = {"access_type": "offline", "prompt": "consent", "login_hint": tokens.username}
    account = tokens.account.replace("{", "{{").replace("}", "}}")
    try:
        flow.run_local_server(
            host="127.0.0.1", port=port, open_browser=open_browser, timeout_seconds=timeout,
            authorization_prompt_message=f"Open this address in a browser and sign in as "
                                         f"{account}:\n{{url}}",
            success_message="mailflow is signed in. You may close this window.", **extra)
    except OAuth2Error as error:  # refused: at the sign-in page or at the token endpoint
        raise OAuthError(f"{tokens.where}: the sign-in ended: {_one_line(error.error)}"
                         + (f": {_one_line(error.description)}" if error.description else "")
                         ) from None
    except WSGITimeoutError:
        raise OAuthError(f"{tokens.where}: no answer from the browser within "
                         f"{timeout:.0f}s; run the command again") from None
    except OSError as error:  # the port is taken
        raise OAuthError(f"{tokens.where}: cannot listen on 127.0.0.1:{port} for the "
                         f"browser's answer: {error.strerror}") from None
    return dict(flow.oauth2session.token)


# -- generic: the device code flow (RFC 8628) ----------------------------------------------


def _device_flow(tokens: TokenSource, announce: Announce, timeout: float,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    import requests
    from oauthlib.oauth2 import DeviceClient
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error

    provider = tokens.provider
    assert provider.device_url
    secret = {"client_secret": tokens.client_secret} if tokens.client_secret else {}
    scope = " ".join(provider.scopes)
    try:
        start = requests.post(provider.device_url, timeout=30,
                              data={"client_id": provider.client_id, "scope": scope, **secret})
        code = start.json()
    except (requests.RequestException, ValueError) as error:
        raise OAuthError(f"{tokens.where}: cannot start the sign-in at "
                         f"{provider.device_url}: {_one_line(error)}") from None
    if "device_code" not in code:
        raise OAuthError(f"{tokens.where}: {provider.device_url} would not start the "
                         f"sign-in: {_one_line(code.get('error_description') or code)}")
    announce(code.get("message") or f"To sign in, open {code['verification_uri']} and "
                                    f"enter the code {code['user_code']}.")
    client = DeviceClient(provider.client_id)
    interval = float(code.get("interval", 5))
    deadline = time.monotonic() + min(timeout, float(code.get("expires_in", 900)))
    while True:
        body = client.prepare_request_body(code["device_code"], include_client_id=True,
                                           **secret)
        try:
            answer = requests.post(provider.token_url, data=body, timeout=30, headers={
                "Content-Type": "application/x-www-form-urlencoded"})
            return dict(client.parse_request_body_response(answer.text))
        except OAuth2Error as error:
            if error.error == "slow_down":
                interval += 5
            elif error.error != "authorization_pending":
                raise OAuthError(f"{tokens.where}: the sign-in ended: "
                                 f"{_one_line(error.error)}") from None
        except requests.RequestException as error:
            raise OAuthError(f"{tokens.where}: cannot reach {provider.token_url}: "
                             f"{_one_line(error)}") from None
        if time.monotonic() + interval > deadline:
            raise OAuthError(f"{tokens.where}: the code expired before the sign-in was "
                             "finished; run the command again")
        sleep(interval)
