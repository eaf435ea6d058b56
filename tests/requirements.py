"""What a test needs from the machine, and the one rule when it is missing:
in CI (`CI=true`) a missing Dovecot, PostgreSQL or corpus is a failure; on a
developer's machine the test skips and says why."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Fail (in CI) or skip (elsewhere) because REASON; never returns."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must run these tests)", pytrace=False)
    pytest.skip(reason)
