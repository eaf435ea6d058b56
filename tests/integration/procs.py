"""Running mailflow as a real process against the test servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

SUPPORT = "support@agency.example"


def write_config(path: Path, *, db_url: str, imap_port: int, smtp_port: int,
                 **overrides) -> Path:
    config = {
        "database_url": db_url,
        "mailbox": {"address": SUPPORT, "display_name": "Agency Support",
                    "imap": {"host": "127.0.0.1", "port": imap_port, "username": "support",
                             "password_env": "MAILFLOW_IMAP_PASSWORD", "poll_seconds": 30,
                             "start": "all"}},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "timeout_seconds": 5},
        "staff": {"notify": ["staff@agency.example"]},
    }
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(config))
    return path


def env_for(config: Path, password: str) -> dict[str, str]:
    return {**os.environ, "MAILFLOW_CONFIG": str(config), "MAILFLOW_IMAP_PASSWORD": password,
            "PYTHONUNBUFFERED": "1"}


def mailflow(*args: str, env: dict[str, str], timeout: float = 120,
             check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "mailflow", *args], env=env, timeout=timeout,
                          capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"mailflow {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


class ServeProcess:
    """`mailflow serve` in the background, its log in a file, stopped by its own pid."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "mailflow", "serve", *args],
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"no {needle!r} in the log within {timeout}s:\n{self.text()}")

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()
