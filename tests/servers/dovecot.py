"""A private Dovecot IMAP server for tests.

Each `Dovecot` owns a temporary directory holding its config file, base_dir
(sockets, pid), state dir, log file, passwd-file and Maildir tree, and listens
on a free 127.0.0.1 port with plaintext auth and no TLS.  It runs in the
foreground (`dovecot -F`) as our child process and is stopped by that pid.

Running as root, Dovecot wants unprivileged users for its login and internal
processes and refuses mail access as uid 0, so mail is owned by an
unprivileged account (`dovecot`/`dovenull` from the package, or `nobody`).
Running as an ordinary user, everything runs as that user with chroots off.

`Dovecot(oauth2_introspection_url=URL)` also accepts XOAUTH2 and OAUTHBEARER
logins, checked by Dovecot's `oauth2` passdb against that RFC 7662
introspection endpoint (tests/servers/oauth.py); passwords keep working.
`kick(user)` ends the user's sessions (`doveadm kick`), as a server does when
a token is revoked.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import imapclient

PASSWORD = "secret"
DEFAULT_USERS = ("support", "alice", "bob", "carol")
HOST = "127.0.0.1"


class DovecotError(RuntimeError):
    """The test server could not be started or used."""


def dovecot_binary() -> str | None:
    """Path of the dovecot binary, or None when it is not installed."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None,
    )


def dovecot_version(binary: str | None = None) -> str:
    binary = binary or dovecot_binary()
    if binary is None:
        raise DovecotError("dovecot is not installed")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _existing_user(*names: str) -> pwd.struct_passwd:
    for name in names:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise DovecotError(f"none of the users {', '.join(names)} exists")


class Dovecot:
    """One private Dovecot instance.  Use `start()`/`stop()` or `with Dovecot() as d:`."""

    def __init__(self, users: tuple[str, ...] = DEFAULT_USERS, *, root: str | Path | None = None,
                 idle_check_seconds: int = 1, oauth2_introspection_url: str | None = None):
        self.binary = dovecot_binary()
        if self.binary is None:
            raise DovecotError("dovecot is not installed (run scripts/install-system-deps.sh)")
        self._own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="mailflow-dovecot-"))
        self.config_path = self.root / "dovecot.conf"
        self.base_dir = self.root / "run"
        self.state_dir = self.root / "state"
        self.mail_dir = self.root / "mail"
        self.passwd_path = self.root / "passwd"
        self.log_path = self.root / "dovecot.log"
        self.idle_check_seconds = idle_check_seconds
        self.oauth2_introspection_url = oauth2_introspection_url
        self.oauth2_config_path = self.root / "dovecot-oauth2.conf.ext"
        self.host = HOST
        self.port = 0
        self.password = PASSWORD
        self._process: subprocess.Popen | None = None
        self._users: list[str] = []
        self._prepare_accounts()
        for user in users:
            self.create_user(user)

    # -- accounts and files ----------------------------------------------------

    def _prepare_accounts(self) -> None:
        if os.geteuid() == 0:
            mail = _existing_user("dovecot", "nobody")
            self._internal_user = mail.pw_name
            self._login_user = _existing_user("dovenull", "nobody").pw_name
            self._mail_uid, self._mail_gid = mail.pw_uid, mail.pw_gid
            self._chroot = True
        else:
            me = pwd.getpwuid(os.geteuid())
            self._internal_user = self._login_user = me.pw_name
            self._mail_uid, self._mail_gid = me.pw_uid, me.pw_gid
            self._chroot = False
        for path in (self.base_dir, self.state_dir, self.mail_dir):
            path.mkdir(parents=True, exist_ok=True)
        # mkdtemp gives 0700; the unprivileged processes must reach their files.
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(self.mail_dir, self._mail_uid, self._mail_gid)
        self.passwd_path.touch()

    def create_user(self, name: str, password: str = PASSWORD) -> None:
        """Add a mail user (picked up by a running server without restart)."""
        if ":" in name or "\n" in name:
            raise ValueError(f"bad user name {name!r}")
        if name in self._users:
            return
        with self.passwd_path.open("a", encoding="utf-8") as passwd:
            passwd.write(f"{name}:{{PLAIN}}{password}::::::\n")
        self._users.append(name)

    @property
    def users(self) -> list[str]:
        return list(self._users)

    def _oauth2_config(self) -> tuple[str, str]:
        """(auth_mechanisms, passdb blocks) for password and, when asked, OAuth2 logins."""
        password = f"""\
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {self.passwd_path}
}}
"""
        if self.oauth2_introspection_url is None:
            return "plain login", password
        self.oauth2_config_path.write_text(f"""\
introspection_url = {self.oauth2_introspection_url}
introspection_mode = post
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
""", encoding="utf-8")
        oauth2 = password.replace("  driver", "  mechanisms = plain login\n  driver", 1) + f"""\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self.oauth2_config_path}
}}
"""
        return "plain login xoauth2 oauthbearer", oauth2

    def _config(self) -> str:
        uid, gid = self._mail_uid, self._mail_gid
        no_chroot = "" if self._chroot else "  chroot =\n"
        first_valid_uid = min(uid, 500)
        mechanisms, passdbs = self._oauth2_config()
        # A refused token is retried at once with a new one.  Dovecot delays the
        # next login from an address after a failure (up to 15 s) unless its
        # auth process cannot reach anvil's penalty socket: close that socket.
        no_penalty = "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n" \
            if self.oauth2_introspection_url else ""
        return f"""\
# Generated by tests/servers/dovecot.py for Dovecot 2.3
instance_name = mailflow-test-{self.port}
protocols = imap
listen = {HOST}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
default_internal_user = {self._internal_user}
default_login_user = {self._login_user}
first_valid_uid = {first_valid_uid}
first_valid_gid = {min(gid, 500)}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{self.mail_dir}/%n
auth_failure_delay = 0
mailbox_idle_check_interval = {self.idle_check_seconds} secs
imap_idle_notify_interval = 1 mins
shutdown_clients = yes
verbose_proctitle = yes
login_greeting = mailflow test dovecot ready.
{passdbs}userdb {{
  driver = passwd-file
  args = username_format=%n {self.passwd_path}
  default_fields = uid={uid} gid={gid} home={self.mail_dir}/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{no_chroot}}}
service anvil {{
{no_penalty}{no_chroot}}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
"""

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Dovecot:
        """Start on a free port (the same port again after `stop()`)."""
        if self.running:
            return self
        reuse_port = self.port != 0
        for _attempt in range(3):
            if not reuse_port:
                self.port = free_port()
            self.config_path.write_text(self._config(), encoding="utf-8")
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True,
            )
            if self._wait_ready(timeout):
                return self
            stderr = self._kill()
            if reuse_port or "Address already in use" not in stderr + self.log_tail():
                raise DovecotError(
                    f"dovecot did not start on {HOST}:{self.port}: {stderr.strip()}\n"
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
        raise DovecotError(f"dovecot could not find a free port; log {self.log_path}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(200).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _kill(self) -> str:
        process, self._process = self._process, None
        if process is None:
            return ""
        if process.poll() is None:
            # The master and all its children share the process group we gave
            # them (start_new_session).  SIGTERM to the master alone leaves it
            # waiting ~10 s for imap processes with open connections; SIGTERM
            # to the whole group stops everything at once (clients get BYE).
            # The master sometimes then sleeps a second before exiting, after
            # its children are gone; a test server need not wait for that.
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.stderr:
            process.stderr.close()
        return stderr

    @staticmethod
    def _signal_group(process: subprocess.Popen, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    def stop(self) -> None:
        """Stop the server (by its own pid); mail and config stay for a restart."""
        self._kill()
        self._wait_port_closed()

    def _wait_port_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and delete the temporary directory."""
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def kick(self, user: str) -> str:
        """End USER's IMAP sessions now (`doveadm kick`); returns doveadm's output."""
        doveadm = shutil.which("doveadm") or str(Path(self.binary).with_name("doveadm"))
        done = subprocess.run([doveadm, "-c", str(self.config_path), "kick", user],
                              capture_output=True, text=True, timeout=10)
        return (done.stdout + done.stderr).strip()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- mail ----------------------------------------------------------------------

    def client(self, user: str = "support") -> imapclient.IMAPClient:
        """A logged-in IMAPClient (the caller logs out)."""
        client = imapclient.IMAPClient(HOST, port=self.port, ssl=False, timeout=10)
        client.login(user, self.password)
        return client

    def append(self, user: str, folder: str, raw: bytes, flags: tuple = ()) -> int | None:
        """Deliver raw bytes into USER's FOLDER (created if missing); return its UID."""
        client = self.client(user)
        try:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=flags)
        finally:
            client.logout()
        # APPENDUID (RFC 4315): b"[APPENDUID <uidvalidity> <uid>] Append completed."
        text = response.decode(errors="replace") if isinstance(response, bytes) else str(response)
        if "APPENDUID" in text:
            return int(text.split("APPENDUID", 1)[1].split("]", 1)[0].split()[1])
        return None

    def list_messages(self, user: str, folder: str) -> list[tuple[int, bytes]]:
        """(uid, raw bytes) of every message in USER's FOLDER, by UID; [] if no folder."""
        client = self.client(user)
        try:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search(["ALL"]))
            if not uids:
                return []
            data = client.fetch(uids, ["BODY.PEEK[]"])
            return [(uid, data[uid][b"BODY[]"]) for uid in uids]
        finally:
            client.logout()

    def folders(self, user: str) -> list[str]:
        client = self.client(user)
        try:
            return [name for _flags, _delim, name in client.list_folders()]
        finally:
            client.logout()
