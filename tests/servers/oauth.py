"""A small OAuth2 authorization server for tests, on loopback.

Stdlib `http.server` in a thread, HTTPS with a certificate from a throwaway CA
(`trustme`; clients trust it through `ca_path`, e.g. `REQUESTS_CA_BUNDLE`), and
the same endpoints over plain HTTP for Dovecot's introspection.  It speaks
just enough of each standard for the real client libraries:

- `/authorize` (RFC 6749 §4.1, with PKCE): signs in `consent_user` at once and
  redirects the "browser" to the loopback `redirect_uri` with a code;
- `/devicecode` (RFC 8628): device codes, approved by `approve_device()`;
- `/token`: `authorization_code`, `refresh_token` and `device_code` grants;
  `invalid_grant` for a refresh token that was revoked or never issued;
- `/introspect` (RFC 7662): `{"active": …, "username": …}` — what Dovecot's
  oauth2 passdb asks;
- `/revoke` (RFC 7009): a refresh token takes its access tokens with it;
- `/<tenant>/v2.0/.well-known/openid-configuration` and the
  `/<tenant>/oauth2/v2.0/…` paths that msal uses for a Microsoft authority.

Tests reach into the state directly: `issue()` tokens without a flow,
`revoke_user()`, `expire_access()`, and `counts` of what was asked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import trustme

from tests.servers.dovecot import HOST

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class Grant:
    """What a token stands for."""

    user: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float | None = None  # access tokens only
    revoked: bool = False
    refresh_token: str | None = None  # for an access token: the refresh token it came from


@dataclass
class _Device:
    client_id: str
    scopes: tuple[str, ...]
    user_code: str
    expires_at: float
    approved_user: str | None = None
    denied: bool = False
    polls: int = 0


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    user: str
    challenge: str | None


@dataclass
class TokenServer:
    """The authorization server.  `start()`/`stop()` or `with TokenServer() as s:`."""

    access_seconds: float = 3600
    rotate_refresh: bool = False
    consent_user: str = "support"
    clients: dict[str, str | None] = field(default_factory=dict)  # client_id -> secret
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._access: dict[str, Grant] = {}
        self._refresh: dict[str, Grant] = {}
        self._codes: dict[str, _Code] = {}
        self._devices: dict[str, _Device] = {}
        self._servers: list[ThreadingHTTPServer] = []
        self._dir = Path(tempfile.mkdtemp(prefix="mailflow-oauth-"))
        self.ca_path = self._dir / "ca.pem"
        self.url = self.http_url = ""
        self.last_authorize: dict[str, str] = {}

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> TokenServer:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST, "localhost").configure_cert(context)
        secure = self._serve(context)
        plain = self._serve(None)
        self.url = f"https://{HOST}:{secure.server_address[1]}"
        self.http_url = f"http://{HOST}:{plain.server_address[1]}"
        return self

    def _serve(self, context: ssl.SSLContext | None) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer((HOST, 0), _handler(self))
        server.daemon_threads = True
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         name="oauth-test-server", daemon=True).start()
        self._servers.append(server)
        return server

    def stop(self) -> None:
        """Stop answering (a provider that is down); `cleanup()` also deletes the CA."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    # -- what tests do ------------------------------------------------------------

    def add_client(self, client_id: str, secret: str | None = None) -> None:
        self.clients[client_id] = secret

    def issue(self, user: str, client_id: str, scopes=("mail",)) -> dict:
        """Tokens as a finished sign-in would give them (no flow)."""
        with self._lock:
            return self._issue(user, client_id, tuple(scopes))

    def revoke_user(self, user: str) -> None:
        """Revoke every token of USER (a password change, an admin's 'sign out')."""
        with self._lock:
            for grant in (*self._access.values(), *self._refresh.values()):
                if grant.user == user:
                    grant.revoked = True

    def expire_access(self, user: str | None = None) -> None:
        """Let every access token (of USER) expire now; refresh tokens stay good."""
        with self._lock:
            for grant in self._access.values():
                if user is None or grant.user == user:
                    grant.expires_at = time.time() - 1

    def approve_device(self, user_code: str | None = None, user: str | None = None) -> None:
        """The person enters the code and signs in (all pending codes when None)."""
        with self._lock:
            for device in self._devices.values():
                if user_code in (None, device.user_code):
                    device.approved_user = user or self.consent_user

    def deny_device(self) -> None:
        """The person refuses at the sign-in page (every pending code)."""
        with self._lock:
            for device in self._devices.values():
                device.denied = True

    def introspect(self, token: str) -> dict:
        with self._lock:
            self.counts["introspect"] += 1
            grant = self._access.get(token)
            if grant is None or grant.revoked or (grant.expires_at or 0) <= time.time():
                return {"active": False}
            return {"active": True, "username": grant.user, "client_id": grant.client_id,
                    "scope": " ".join(grant.scopes), "exp": int(grant.expires_at or 0),
                    "token_type": "Bearer"}

    def active_access_tokens(self, user: str) -> int:
        with self._lock:
            now = time.time()
            return sum(1 for g in self._access.values()
                       if g.user == user and not g.revoked and (g.expires_at or 0) > now)

    # -- the endpoints (called from the handler, under the lock) -------------------------

    def _issue(self, user: str, client_id: str, scopes: tuple[str, ...],
               refresh_token: str | None = None) -> dict:
        if refresh_token is None:
            refresh_token = secrets.token_urlsafe(24)
            self._refresh[refresh_token] = Grant(user, client_id, scopes)
        access = secrets.token_urlsafe(24)
        self._access[access] = Grant(user, client_id, scopes,
                                     expires_at=time.time() + self.access_seconds,
                                     refresh_token=refresh_token)
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": self.access_seconds, "refresh_token": refresh_token,
                "scope": " ".join(s for s in scopes if s not in ("openid", "profile")),
                **self._id_token(user, client_id)}

    def _id_token(self, user: str, client_id: str) -> dict:
        """An unsigned ID token and client_info (msal reads the account from them)."""
        def part(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        now = int(time.time())
        claims = {"iss": f"{self.url}/v2.0", "aud": client_id, "sub": user, "iat": now,
                  "exp": now + 3600, "preferred_username": user, "oid": user, "tid": "test"}
        return {"id_token": f"{part({'alg': 'none'})}.{part(claims)}.",
                "client_info": part({"uid": user, "utid": "test"})}

    def _client_ok(self, form: dict[str, str], basic: tuple[str, str] | None) -> str | None:
        client_id, secret = basic or (form.get("client_id"), form.get("client_secret"))
        if client_id not in self.clients:
            return None
        expected = self.clients[client_id]
        return client_id if expected is None or expected == secret else None

    def token_endpoint(self, form: dict[str, str],
                       basic: tuple[str, str] | None) -> tuple[int, dict]:
        with self._lock:
            self.counts["token"] += 1
            client_id = self._client_ok(form, basic)
            if client_id is None:
                return 401, {"error": "invalid_client", "error_description": "unknown client"}
            grant_type = form.get("grant_type")
            if grant_type == "refresh_token":
                return self._grant_refresh(form, client_id)
            if grant_type == "authorization_code":
                return self._grant_code(form, client_id)
            if grant_type == DEVICE_GRANT:
                return self._grant_device(form, client_id)
            return 400, {"error": "unsupported_grant_type"}

    def _grant_refresh(self, form: dict[str, str], client_id: str) -> tuple[int, dict]:
        self.counts["refresh"] += 1
        old = form.get("refresh_token", "")
        grant = self._refresh.get(old)
        if grant is None or grant.revoked or grant.client_id != client_id:
            return 400, {"error": "invalid_grant",
                         "error_description": "Token has been expired or revoked."}
        if self.rotate_refresh:
            grant.revoked = True
            return 200, self._issue(grant.user, client_id, grant.scopes)
        return 200, self._issue(grant.user, client_id, grant.scopes, refresh_token=old)

    def _grant_code(self, form: dict[str, str], client_id: str) -> tuple[int, dict]:
        code = self._codes.pop(form.get("code", ""), None)
        if code is None or code.client_id != client_id \
                or code.redirect_uri != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "bad code"}
        if code.challenge is not None:
            verifier = form.get("code_verifier", "").encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest())
            if digest.decode().rstrip("=") != code.challenge:
                return 400, {"error": "invalid_grant", "error_description": "PKCE mismatch"}
        return 200, self._issue(code.user, client_id, code.scopes)

    def _grant_device(self, form: dict[str, str], client_id: str) -> tuple[int, dict]:
        device = self._devices.get(form.get("device_code", ""))
        if device is None or device.client_id != client_id:
            return 400, {"error": "invalid_grant"}
        device.polls += 1
        if device.expires_at < time.time():
            return 400, {"error": "expired_token"}
        if device.denied:
            return 400, {"error": "access_denied"}
        if device.approved_user is None:
            return 400, {"error": "authorization_pending"}
        del self._devices[form["device_code"]]
        return 200, self._issue(device.approved_user, client_id, device.scopes)

    def device_endpoint(self, form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.counts["device"] += 1
            if form.get("client_id") not in self.clients:
                return 400, {"error": "invalid_client"}
            device_code = secrets.token_urlsafe(16)
            user_code = secrets.token_hex(4).upper()
            self._devices[device_code] = _Device(form["client_id"],
                                                 tuple(form.get("scope", "").split()),
                                                 user_code, time.time() + 600)
            verify = f"{self.url}/device"
            return 200, {"device_code": device_code, "user_code": user_code,
                         "verification_uri": verify, "expires_in": 600, "interval": 1,
                         "message": f"To sign in, open {verify} and enter the code "
                                    f"{user_code} to authenticate."}

    def authorize(self, query: dict[str, str]) -> tuple[int, dict | str]:
        with self._lock:
            self.counts["authorize"] += 1
            if query.get("client_id") not in self.clients or query.get("response_type") != "code":
                return 400, {"error": "invalid_request"}
            code = secrets.token_urlsafe(16)
            self._codes[code] = _Code(query["client_id"], query.get("redirect_uri", ""),
                                      tuple(query.get("scope", "").split()), self.consent_user,
                                      query.get("code_challenge"))
            self.last_authorize = dict(query)
            target = {"code": code}
            if "state" in query:
                target["state"] = query["state"]
            return 302, f"{query.get('redirect_uri', '')}?{urlencode(target)}"

    def revoke(self, form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.counts["revoke"] += 1
            token = form.get("token", "")
            if token in self._refresh:
                self._refresh[token].revoked = True
                for grant in self._access.values():
                    if grant.refresh_token == token:
                        grant.revoked = True
            elif token in self._access:
                self._access[token].revoked = True
            return 200, {}

    def discovery(self, tenant: str) -> dict:
        base = f"{self.url}/{tenant}" if tenant else self.url
        return {"issuer": f"{base}/v2.0" if tenant else base,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "introspection_endpoint": f"{self.url}/introspect",
                "revocation_endpoint": f"{self.url}/revoke"}


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:  # quiet
            pass

        def _reply(self, status: int, body: dict | str) -> None:
            if status == 302:
                self.send_response(302)
                self.send_header("Location", str(body))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            text = self.rfile.read(length).decode() if length else ""
            return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}

        def _basic(self) -> tuple[str, str] | None:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            return user, secret

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path.endswith("/.well-known/openid-configuration"):
                tenant = url.path.split("/")[1] if url.path.count("/") > 2 else ""
                self._reply(200, server.discovery(tenant))
            elif url.path.endswith("/authorize"):
                self._reply(*server.authorize(query))
            else:
                self._reply(404, {"error": "not_found"})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            form = self._form()
            if path.endswith("/token"):
                self._reply(*server.token_endpoint(form, self._basic()))
            elif path.endswith("/devicecode"):
                self._reply(*server.device_endpoint(form))
            elif path.endswith("/introspect"):
                self._reply(200, server.introspect(form.get("token", "")))
            elif path.endswith("/revoke"):
                self._reply(*server.revoke(form))
            else:
                self._reply(404, {"error": "not_found"})

    return Handler
