"""Where `mailflow digest` spends its time: queue (run_digest) and send (send_due)
in-process under cProfile, on SQLite or PostgreSQL.

    .venv/bin/python benchmarks/profile_digest.py [--clients 1000] [--database postgresql]
        [--save /tmp/digest.prof] [--top 30]

Seeds C clients as `run.py`'s digest row does (benchmarks/world.py), starts a
capturing SMTP server, then times the two stages separately (wall time), each
under cProfile, and prints the top functions by own and cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import world  # noqa: E402
from mailflow.db import create_db_engine  # noqa: E402
from mailflow.jobs import run_digest  # noqa: E402
from mailflow.sender import send_due  # noqa: E402
from tests.integration.procs import write_config  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--save", help="write the cProfile stats of both stages here")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--workers", type=int, default=3, help="send_due threads (digest: 3)")
    parser.add_argument("--no-profile", action="store_true", help="wall time only")
    parser.add_argument("--smtp-port", type=int,
                        help="send to this SMTP server on 127.0.0.1 instead of one started "
                             "here (in this process it competes for the interpreter lock)")
    args = parser.parse_args()
    workdir = world.temp_workdir()
    smtp, capture = (None, None) if args.smtp_port else world.start_smtp()
    db = world.new_database(args.database, workdir, "profile_digest")
    try:
        config = write_config(workdir / "digest.yaml", db_url=db.url, imap_port=1,
                              smtp_port=args.smtp_port or smtp.port, smtp__timeout_seconds=30)
        desk = world.load_desk(config, "unused")
        engine = create_db_engine(db.url)
        world.seed_digest_clients(engine, args.clients, random.Random(1))
        profile = None if args.no_profile else cProfile.Profile()
        stages = {}
        for name, work in (("queue (run_digest)", lambda: run_digest(engine, desk)),
                           ("send (send_due)", lambda: send_due(engine, desk, workers=args.workers))):
            started = time.perf_counter()
            if profile is not None:
                profile.enable()
            result = work()
            if profile is not None:
                profile.disable()
            stages[name] = time.perf_counter() - started
            print(f"{name}: {stages[name]:.2f} s  {result}")
        received = capture.wait_count(args.clients, 30) if capture else "?"
        total = sum(stages.values())
        print(f"total {total:.2f} s for {args.clients} clients ({received} received); "
              f"x{10_000 / args.clients:.0f} = {total * 10_000 / args.clients:.0f} s for 10,000")
        if profile is not None:
            if args.save:
                profile.dump_stats(args.save)
            stats = pstats.Stats(profile)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
        engine.dispose()
    finally:
        db.drop()
        if smtp is not None:
            smtp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
