"""Commands defined beside their subsystem, registered on the `mailflow` group.

Each module imports `cli` (and helpers) from `mailflow.cli` and decorates its
commands onto it; importing them here makes them part of the command line.
"""

import mailflow.jobs_cli  # noqa: F401  (digest, jobs)
import mailflow.sandbox_cli  # noqa: F401  (dev)
import mailflow.serve_cli  # noqa: F401  (serve)
