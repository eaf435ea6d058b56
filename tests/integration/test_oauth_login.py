"""Signing in (`mailflow mailbox login`), keeping tokens, and `mailbox check`.

The providers' own libraries run their real flows against the test
authorization server on loopback: msal's device code flow (a Microsoft
`authority` pointed at it), google-auth-oauthlib's loopback redirect (Google
`auth_url`/`token_url` pointed at it, a stand-in browser registered with the
standard `webbrowser` module), and the generic device code flow.  What these
cannot show is listed in docs/mailboxes.md (the real providers' pages).
"""

from __future__ import annotations

import os
import stat
import threading
import webbrowser

import pytest
import requests
from keyring.backend import KeyringBackend

from mailflow.config import OAuth2Settings, settings_from_mapping
from mailflow.errors import MailflowError
from mailflow.oauth.check import check_mailbox
from mailflow.oauth.login import login, sign_ins
from mailflow.oauth.store import TokenStore
from mailflow.oauth.tokens import LoginNeeded, OAuthError, TokenSource
from tests.integration.oauth_world import USER, generic, sign_in
from tests.servers.fixtures import OAUTH_CLIENT

pytestmark = pytest.mark.dovecot


def settings_for(tmp_path, imap_port: int, smtp_port: int, oauth2: dict, *,
                 smtp_auth: str = "oauth2"):
    smtp = {"host": "127.0.0.1", "port": smtp_port, "username": USER, "timeout_seconds": 5,
            "auth": smtp_auth}
    return settings_from_mapping({
        "database_url": f"sqlite:///{tmp_path / 'mailflow.db'}",
        "mailbox": {"imap": {"host": "127.0.0.1", "port": imap_port, "username": USER,
                             "auth": "oauth2", "oauth2": oauth2}},
        "smtp": smtp})


class Recorder:
    """`announce` for login(): keeps the lines, and plays the person on the device."""

    def __init__(self, on_code=None) -> None:
        self.lines: list[str] = []
        self.on_code = on_code

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.on_code and "code" in line:
            self.on_code(line)


# -- Microsoft: msal's device code flow ------------------------------------------------


def test_microsoft_device_flow_signs_in_imap_and_smtp_once(
        tmp_path, token_server, oauth_dovecot, oauth_smtp_server):
    settings = settings_for(tmp_path, oauth_dovecot.port, oauth_smtp_server.port, {
        "provider": "microsoft", "client_id": OAUTH_CLIENT, "authority": token_server.url,
        "tenant": "agency.onmicrosoft.com", "token_store": "file"})
    person = Recorder(on_code=lambda _line: token_server.approve_device(user=USER))

    lines = login(settings, announce=person)

    assert any(f"open {token_server.url}/device and enter the code" in line
               for line in person.lines)
    token_file = tmp_path / "mailflow-oauth.json"  # beside the SQLite database
    assert lines[0] == (f"signed in: IMAP and SMTP as {USER} (microsoft); "
                        f"token stored in {token_file} (mode 0600)")
    assert any("you are root" in line for line in lines) == (os.geteuid() == 0)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_server.counts["device"] == 1  # one sign-in for both
    assert [check.ok for check in check_mailbox(settings)] == [True, True]


def test_microsoft_sign_in_asks_for_imap_and_smtp_scopes_and_a_refresh_token(
        tmp_path, token_server):
    oauth2 = {"provider": "microsoft", "client_id": OAUTH_CLIENT,
              "authority": token_server.url, "token_store": "file"}
    settings = settings_for(tmp_path, 1, 2, oauth2)
    login(settings, announce=Recorder(on_code=lambda _l: token_server.approve_device()))
    record = next(iter(TokenStore(tmp_path / "mailflow-oauth.json", "file")
                       ._read_file().values()))
    assert record["scopes"] == ["https://outlook.office.com/IMAP.AccessAsUser.All",
                                "https://outlook.office.com/SMTP.Send"]
    assert record["refresh_token"]
    assert "/organizations/oauth2/v2.0/token" in record["token_url"]  # tenant left out


# -- Google: the loopback redirect -------------------------------------------------------


class FixtureBrowser(webbrowser.BaseBrowser):
    """Stands in for the person's browser: opens the sign-in page, which (on the
    test server) consents at once and redirects to mailflow's loopback address."""

    opened: list[str] = []
    errors: list[BaseException] = []

    def open(self, url, new=0, autoraise=True) -> bool:
        self.opened.append(url)

        def visit() -> None:
            try:
                requests.get(url, timeout=10, verify=os.environ["REQUESTS_CA_BUNDLE"])
            except BaseException as error:  # the test reports it
                self.errors.append(error)

        threading.Thread(target=visit, daemon=True).start()
        return True


@pytest.fixture
def browser():
    webbrowser.register("mailflow-test-browser", None, FixtureBrowser("test"), preferred=True)
    FixtureBrowser.opened, FixtureBrowser.errors = [], []
    return FixtureBrowser


def test_google_loopback_flow_signs_in_with_pkce_and_offline_access(
        tmp_path, token_server, oauth_dovecot, oauth_smtp_server, browser, monkeypatch):
    token_server.add_client("google-client", secret="s3cret")
    monkeypatch.setenv("MAILFLOW_GOOGLE_SECRET", "s3cret")
    settings = settings_for(tmp_path, oauth_dovecot.port, oauth_smtp_server.port, {
        "provider": "google", "client_id": "google-client",
        "client_secret_env": "MAILFLOW_GOOGLE_SECRET", "auth_url": f"{token_server.url}/authorize",
        "token_url": f"{token_server.url}/token", "token_store": "file"})
    token_server.consent_user = USER

    lines = login(settings, announce=Recorder(), timeout=30)

    assert browser.errors == []
    assert lines[0].startswith(f"signed in: IMAP and SMTP as {USER} (google)")
    asked = token_server.last_authorize
    assert asked["redirect_uri"].startswith("http://127.0.0.1:")
    assert asked["scope"] == "https://mail.google.com/"
    assert (asked["access_type"], asked["prompt"], asked["login_hint"]) == \
        ("offline", "consent", USER)
    assert asked["code_challenge_method"] == "S256"  # the server checked the verifier
    assert [check.ok for check in check_mailbox(settings)] == [True, True]


def test_google_sign_in_with_a_wrong_client_secret_is_one_line(
        tmp_path, token_server, browser, monkeypatch):
    token_server.add_client("google-client", secret="s3cret")
    monkeypatch.setenv("MAILFLOW_GOOGLE_SECRET", "wrong")
    settings = settings_for(tmp_path, 1, 2, {
        "provider": "google", "client_id": "google-client",
        "client_secret_env": "MAILFLOW_GOOGLE_SECRET", "auth_url": f"{token_server.url}/authorize",
        "token_url": f"{token_server.url}/token", "token_store": "file"})
    with pytest.raises(OAuthError, match=r"^mailbox.imap: the sign-in ended: invalid_client"):
        login(settings, announce=Recorder(), timeout=30)


# -- generic: the device code flow --------------------------------------------------------


def test_generic_device_flow_waits_while_the_person_signs_in(tmp_path, token_server):
    oauth2 = generic(token_server, tmp_path / "tokens.json")
    settings = settings_for(tmp_path, 1, 2, oauth2, smtp_auth="password")
    approve = threading.Timer(0.3, token_server.approve_device)

    lines = login(settings, announce=Recorder(on_code=lambda _line: approve.start()))

    assert lines[0] == (f"signed in: IMAP as {USER} (generic); token stored in "
                        f"{tmp_path / 'tokens.json'} (mode 0600)")
    assert token_server.counts["token"] >= 2  # asked, was told to wait, asked again
    assert TokenSource(OAuth2Settings(**oauth2), USER, where="mailbox.imap").access_token()


def test_generic_device_flow_refused_by_the_person_is_one_line(tmp_path, token_server):
    settings = settings_for(tmp_path, 1, 2, generic(token_server, tmp_path / "t.json"),
                            smtp_auth="password")
    with pytest.raises(OAuthError, match="^mailbox.imap: the sign-in ended: access_denied$"):
        login(settings, announce=Recorder(on_code=lambda _line: token_server.deny_device()))


def test_login_without_any_oauth2_connection_says_so(tmp_path):
    settings = settings_from_mapping({"database_url": f"sqlite:///{tmp_path / 'm.db'}"})
    with pytest.raises(MailflowError, match="no OAuth2 sign-in configured"):
        login(settings, announce=Recorder())


def test_imap_and_smtp_with_different_accounts_are_two_sign_ins(tmp_path, token_server):
    oauth2 = generic(token_server, tmp_path / "t.json")
    settings = settings_from_mapping({
        "mailbox": {"imap": {"username": "support", "auth": "oauth2", "oauth2": oauth2}},
        "smtp": {"username": "sender", "auth": "oauth2"}})
    assert [s.names for s in sign_ins(settings)] == ["IMAP", "SMTP"]


# -- keeping tokens --------------------------------------------------------------------------


def test_refresh_with_a_rotating_provider_keeps_the_new_refresh_token(tmp_path, token_server):
    token_server.rotate_refresh = True
    oauth2 = generic(token_server, tmp_path / "t.json")
    tokens = sign_in(token_server, oauth2)
    first = tokens.access_token()
    for _ in range(3):  # the server takes back each refresh token it replaces
        tokens.access_token(rejected=tokens.access_token().value)
    assert token_server.counts["refresh"] == 3
    assert tokens.access_token().value != first.value


def test_two_processes_due_at_once_refresh_once(tmp_path, token_server):
    token_server.rotate_refresh = True  # a second refresh with the old token would fail
    oauth2 = generic(token_server, tmp_path / "t.json")
    first = sign_in(token_server, oauth2).access_token()
    results: list = []

    def renew() -> None:
        source = TokenSource(OAuth2Settings(**oauth2), USER, where="mailbox.imap")
        try:
            results.append(source.access_token(rejected=first.value).value)
        except Exception as error:  # reported below
            results.append(error)

    threads = [threading.Thread(target=renew) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(set(results)) == 1 and isinstance(results[0], str)
    assert token_server.counts["refresh"] == 1


def test_a_token_file_others_can_read_is_made_private(tmp_path, token_server):
    oauth2 = generic(token_server, tmp_path / "t.json")
    tokens = sign_in(token_server, oauth2)
    os.chmod(tmp_path / "t.json", 0o644)
    tokens.access_token()
    assert stat.S_IMODE((tmp_path / "t.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "t.json.lock").stat().st_mode) == 0o600


def test_a_damaged_token_file_is_one_line_saying_to_log_in_again(tmp_path, token_server):
    oauth2 = generic(token_server, tmp_path / "t.json")
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(MailflowError, match=r"t.json: cannot read it .*mailbox login"):
        TokenSource(OAuth2Settings(**oauth2), USER, where="mailbox.imap").access_token()


class MemoryKeyring(KeyringBackend):
    """A working keyring backend kept in memory (a desktop keyring stands in)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        self.items.pop((service, username), None)


@pytest.fixture
def memory_keyring():
    import keyring

    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.mark.parametrize("store", ["keyring", "auto"])
def test_tokens_go_to_a_working_keyring_and_not_to_a_file(tmp_path, token_server,
                                                          memory_keyring, store):
    oauth2 = generic(token_server, tmp_path / "t.json", token_store=store)
    tokens = sign_in(token_server, oauth2)
    assert tokens.store.describe().startswith("the system keyring")
    assert tokens.access_token(rejected=tokens.access_token().value)  # refreshed, saved
    assert not (tmp_path / "t.json").exists()
    assert len(memory_keyring.items) == 1


def test_auto_without_a_working_keyring_uses_the_file(tmp_path, token_server):
    import keyring
    from keyring.backends.fail import Keyring as NoKeyring

    previous = keyring.get_keyring()
    keyring.set_keyring(NoKeyring())
    try:
        tokens = sign_in(token_server, generic(token_server, tmp_path / "t.json"))
        assert tokens.store.describe() == f"{tmp_path / 't.json'} (mode 0600)"
        with pytest.raises(MailflowError, match="token_store: keyring, but no usable"):
            TokenSource(OAuth2Settings(**generic(token_server, tmp_path / "t.json",
                                                 token_store="keyring")),
                        USER, where="mailbox.imap")
    finally:
        keyring.set_keyring(previous)
    assert (tmp_path / "t.json").exists()


# -- mailbox check ---------------------------------------------------------------------------


def test_check_says_what_works_one_line_each(tmp_path, token_server, oauth_dovecot,
                                            oauth_smtp_server):
    oauth2 = generic(token_server, tmp_path / "t.json")
    settings = settings_for(tmp_path, oauth_dovecot.port, oauth_smtp_server.port, oauth2)
    sign_in(token_server, oauth2)
    imap, smtp = check_mailbox(settings)
    assert imap.ok and imap.line == (f"IMAP 127.0.0.1:{oauth_dovecot.port} as {USER} "
                                     "(OAuth2 generic): logged in; INBOX holds 0 messages")
    assert smtp.ok and smtp.line == (f"SMTP 127.0.0.1:{oauth_smtp_server.port} as {USER} "
                                     "(OAuth2 generic): logged in")

    token_server.revoke_user(USER)
    token_server.expire_access(USER)
    imap, smtp = check_mailbox(settings)
    assert not imap.ok and not smtp.ok
    for check in (imap, smtp):
        assert "\n" not in check.line
        assert check.line.endswith("run `mailflow mailbox login` again")


def test_check_with_imap_oauth2_and_smtp_password(tmp_path, token_server, oauth_dovecot,
                                                 monkeypatch):
    from tests.servers.smtp import SmtpServer

    oauth2 = generic(token_server, tmp_path / "t.json")
    sign_in(token_server, oauth2)
    monkeypatch.setenv("MAILFLOW_SMTP_PASSWORD", "wrong")
    with SmtpServer(users={USER: "secret"}) as server:
        settings = settings_for(tmp_path, oauth_dovecot.port, server.port, oauth2,
                                smtp_auth="password")
        imap, smtp = check_mailbox(settings)
    assert imap.ok
    assert not smtp.ok and smtp.line.startswith(f"SMTP 127.0.0.1:{server.port} as {USER} "
                                                "(password): SMTP login refused: 535")


def test_login_needed_is_a_mailflow_error_for_one_line_cli_output():
    assert issubclass(LoginNeeded, MailflowError)
