"""How fast `mailflow` answers: start-up of a few simple commands, cold and warm.

    .venv/bin/python benchmarks/startup.py                 # 10 warm runs, 3 cold, a table
    .venv/bin/python benchmarks/startup.py --runs 20 --cold-runs 5 --breakdown
    .venv/bin/python benchmarks/startup.py --json

Measures `mailflow --help`, `mailflow requests`, `mailflow balance CLIENT` and
`mailflow show ID`, each as the installed console script (the `mailflow` next
to this Python) in a fresh process, against a small SQLite database created in
a temporary directory (one client, two lots, three requests).

- **warm**: the usual case — bytecode caches (`__pycache__`) in place, the
  files in the OS page cache.  One unmeasured run first, then the median of N.
- **cold**: every module compiled from source: `PYTHONDONTWRITEBYTECODE=1` and
  `PYTHONPYCACHEPREFIX` pointing at an empty directory, so no `.pyc` is read
  or written (Python's own frozen start-up modules excepted).  This is what
  the first run after an install without precompiled bytecode costs, and an
  upper bound otherwise.  The OS page cache is *not* dropped (that needs root
  and would slow down everything else on the machine), so this is not a
  cold-disk figure.

Beside them, the **floor**: the same figures for `python -c pass` (the
interpreter alone) and `python -c "import mailflow.models"` (SQLAlchemy,
SQLModel, pydantic and our tables: what any command that opens the database
must import), the latter also with `gc.freeze` at exit, as `mailflow` does
(the interpreter's last garbage collection over all those objects is then
skipped).  The last column is what a command costs over its floor (the bare
interpreter for `--help`, the frozen models for the others), warm: settings,
engine, query, table, click and rich, and whatever else we import.

Wall time is measured around the process; CPU time (user + system of the
child, from `getrusage`) is printed beside it because on a shared machine the
wall time mostly measures the neighbours.  `--breakdown` runs each command
once more under `-X importtime` and prints where import time goes, by
top-level package (the sum of each module's own time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "--help": ["--help"],
    "requests": ["requests"],
    "balance CLIENT": ["balance", "Acme"],
    "show ID": ["show", "1"],
}
#: name → arguments to this Python
FLOORS = {
    "python -c pass": ["-c", "pass"],
    "import mailflow.models": ["-c", "import mailflow.models"],
    "import mailflow.models, frozen at exit": [
        "-c", "import atexit, gc; atexit.register(gc.freeze); import mailflow.models"],
}
#: The floor a command is measured against: `--help` opens no database; the
#: others are compared with the models frozen at exit, as `mailflow` freezes.
FLOOR_OF = {name: "python -c pass" if name == "--help"
            else "import mailflow.models, frozen at exit" for name in COMMANDS}
PACKAGES = ("mailflow", "sqlalchemy", "sqlmodel", "pydantic", "pydantic_core", "alembic",
            "jinja2", "yaml", "rich", "click", "markupsafe", "typing_extensions")


def mailflow_script() -> str:
    script = Path(sys.executable).parent / "mailflow"
    if not script.exists():
        sys.exit(f"no mailflow console script next to {sys.executable}: "
                 "run this with the project's .venv/bin/python")
    return str(script)


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run; a failed run stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def make_desk(directory: Path, env: dict[str, str], script: str) -> None:
    """A small database: one client with two lots, three requests, one quoted."""
    config = directory / "mailflow.yaml"
    config.write_text(f"database_url: sqlite:///{directory / 'mailflow.db'}\n"
                      "timezone: Asia/Tokyo\n", encoding="utf-8")
    env["MAILFLOW_CONFIG"] = str(config)
    for argv in (["db", "upgrade"],
                 ["clients", "add", "Acme", "--email", "a@acme.example", "--plan", "5"],
                 ["credits", "grant", "Acme", "5"],
                 ["credits", "buy", "Acme", "3"],
                 ["request", "new", "Acme", "--subject", "Replace the banner"],
                 ["request", "new", "Acme", "--subject", "Fix the contact form"],
                 ["request", "new", "Acme", "--subject", "Add a news page"],
                 ["quote", "1", "--credits", "2", "--due", "2030-01-31"]):
        run_once([script, *argv], env, directory)


def measure(argv: list[str], env: dict[str, str], cwd: Path, runs: int,
            warm_up: bool) -> dict[str, float]:
    if warm_up:
        run_once(argv, env, cwd)
    samples = [run_once(argv, env, cwd) for _ in range(runs)]
    walls, cpus = zip(*samples, strict=True)
    return {"wall": statistics.median(walls), "wall_min": min(walls),
            "cpu": statistics.median(cpus), "runs": runs}


def import_breakdown(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Seconds of import time per top-level package (each module's own time)."""
    done = subprocess.run(argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    totals: dict[str, float] = {}
    modules = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, _, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if not own.isdigit():
            continue  # the header line
        modules += 1
        package = name.split(".")[0]
        key = package if package in PACKAGES else "other"
        totals[key] = totals.get(key, 0.0) + int(own) / 1e6
    totals["modules"] = modules
    return totals


def print_table(results: dict[str, dict], floors: dict[str, dict], cold_runs: int,
                runs: int) -> None:
    print(f"\nStart-up of `mailflow` (median; warm of {runs} runs, cold of {cold_runs})"
          f" — load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    head = ("command", "cold wall", "cold CPU", "warm wall", "warm CPU", "warm min",
            "warm over floor (wall / CPU)")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(" --- " for _ in head) + "|")
    rows = [(f"`mailflow {name}`", result, floors[FLOOR_OF[name]])
            for name, result in results.items()]
    rows += [(f"floor: `{name}`", floor, None) for name, floor in floors.items()]
    for label, result, floor in rows:
        cold, warm = result["cold"], result["warm"]
        over = (f"{warm['wall'] - floor['warm']['wall']:+.2f} s"
                f" / {warm['cpu'] - floor['warm']['cpu']:+.2f} s" if floor else "")
        print(f"| {label} | {cold['wall']:.2f} s | {cold['cpu']:.2f} s | {warm['wall']:.2f} s"
              f" | {warm['cpu']:.2f} s | {warm['wall_min']:.2f} s | {over} |")
    print("\nA command's floor: `python -c pass` for `--help`, `import mailflow.models`"
          " frozen at exit for the others.")


def print_breakdown(results: dict[str, dict]) -> None:
    """One row per command (and floor) of `results`, each with its `imports`."""
    columns = [p for p in (*PACKAGES, "other")
               if any(r["imports"].get(p, 0) >= 0.005 for r in results.values())]
    print("\nImport time by package (seconds of each module's own import time, one warm run)\n")
    print("| command | modules | " + " | ".join(columns) + " |")
    print("|" + "|".join(" --- " for _ in range(len(columns) + 2)) + "|")
    for name, result in results.items():
        imports = result["imports"]
        print(f"| `{name}` | {imports['modules']} | "
              + " | ".join(f"{imports.get(p, 0):.3f}" for p in columns) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="warm runs per command")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold runs per command")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print import time by package")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    script = mailflow_script()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAILFLOW_", "PYTHONPYCACHE", "PYTHONDONTWRITE"))}
    env["COLUMNS"] = "100"
    results: dict[str, dict] = {}
    floors: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mailflow-startup-") as temp:
        directory = Path(temp)
        make_desk(directory, env, script)
        jobs = [(results, name, [script, *argv]) for name, argv in COMMANDS.items()]
        jobs += [(floors, name, [sys.executable, *argv]) for name, argv in FLOORS.items()]
        for into, name, command in jobs:
            with tempfile.TemporaryDirectory(dir=directory) as empty_cache:
                cold_env = {**env, "PYTHONDONTWRITEBYTECODE": "1",
                            "PYTHONPYCACHEPREFIX": empty_cache}
                cold = measure(command, cold_env, directory, args.cold_runs, warm_up=False)
            warm = measure(command, env, directory, args.runs, warm_up=True)
            into[name] = {"cold": cold, "warm": warm}
            if args.breakdown:
                into[name]["imports"] = import_breakdown(command, env, directory)
    if args.json:
        print(json.dumps({"load_average": os.getloadavg()[0], "commands": results,
                          "floors": floors, "floor_of": FLOOR_OF}, indent=2))
        return 0
    print_table(results, floors, args.cold_runs, args.runs)
    if args.breakdown:
        print_breakdown({**results, **{f"floor: {name}": r for name, r in floors.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
