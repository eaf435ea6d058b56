"""Commands defined beside their subsystem, registered on the `mailflow` group.

Each module imports `cli` (and helpers) from `mailflow.cli` and decorates its
commands onto it; importing them here makes them part of the command line.
"""

from __future__ import annotations

import importlib

for _name in ("mailflow.jobs_cli", "mailflow.sandbox_cli", "mailflow.serve_cli"):
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as error:  # a subsystem not written yet
        if error.name != _name:
            raise
