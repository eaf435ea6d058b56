"""Where tokens are kept: a JSON file only its owner can read (0600), or the
system keyring.

One record per sign-in (`providers.token_key`): the refresh token, the cached
access token with its expiry, and — once the provider refused the refresh
token — `login_needed`.  Every process of one mailflow (serve, its sender, a
cron `poll --once`, `mailbox check`) reads and refreshes through the same
store; `locked()` (an flock on `<token_file>.lock`) makes a refresh happen in
one of them at a time, so a provider that rotates refresh tokens never sees an
old one used twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailflow.errors import ConfigError

log = logging.getLogger(__name__)

KEYRING_SERVICE = "mailflow-oauth"
Record = dict[str, Any]


def _keyring_module(required: bool, where: str):
    """The `keyring` module when it is installed and has a working backend."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        if required:
            raise ConfigError(f"{where}.oauth2.token_store: keyring, but the keyring "
                              "package is not installed (pip install keyring)") from None
        return None
    backend = keyring.get_keyring()
    problem = None
    if backend.priority <= 0:
        problem = f"no usable keyring backend ({type(backend).__module__})"
    else:
        try:
            keyring.get_password(KEYRING_SERVICE, "probe")
        except KeyringError as error:
            problem = f"the keyring does not answer ({error})"
    if problem is None:
        return keyring
    if required:
        raise ConfigError(f"{where}.oauth2.token_store: keyring, but {problem}")
    return None


class TokenStore:
    """Records by key, in a file (0600) or the keyring; `locked()` around a
    read-modify-write."""

    def __init__(self, path: str | os.PathLike, kind: str = "auto", *,
                 where: str = "mailbox.imap") -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._keyring = None if kind == "file" else _keyring_module(kind == "keyring", where)

    @property
    def uses_keyring(self) -> bool:
        return self._keyring is not None

    def describe(self) -> str:
        if self._keyring is not None:
            backend = self._keyring.get_keyring()
            return f"the system keyring ({type(backend).__module__}.{type(backend).__name__})"
        return f"{self.path} (mode 0600)"

    # -- locking ---------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (between processes and between threads)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    # -- records -----------------------------------------------------------------------

    def load(self, key: str) -> Record | None:
        if self._keyring is not None:
            text = self._keyring.get_password(KEYRING_SERVICE, key)
            return json.loads(text) if text else None
        return self._read_file().get(key)

    def save(self, key: str, record: Record) -> None:
        if self._keyring is not None:
            self._keyring.set_password(KEYRING_SERVICE, key, json.dumps(record))
            return
        records = self._read_file()
        records[key] = record
        self._write_file(records)

    # -- the file --------------------------------------------------------------------

    def _read_file(self) -> dict[str, Record]:
        try:
            with self.path.open("rb") as file:
                mode = os.fstat(file.fileno()).st_mode
                data = json.load(file)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise ConfigError(f"token file {self.path}: cannot read it ({error}); "
                              "run `mailflow mailbox login` to write it again") from None
        if stat.S_IMODE(mode) & 0o077:
            log.warning("token file %s could be read by others: set it to 0600", self.path)
            with contextlib.suppress(OSError):
                self.path.chmod(0o600)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        return tokens if isinstance(tokens, dict) else {}

    def _write_file(self, records: dict[str, Record]) -> None:
        """Replace the file at once (a reader never sees half of it), mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump({"version": 1, "tokens": records}, file, indent=1, sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o600)  # O_CREAT's mode does not apply to an existing file
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
