"""How well replies are read: the reply table of tests/replies through the core.

Run: ``.venv/bin/python benchmarks/replies_report.py [--pipeline]``

Prints the table's size by language and layout, the number of **wrong
actions** (an approval, rejection or purchase the client did not clearly
state: must be 0), the share of **clear decisions recognised** (must be
≥ 97 %), and every reply whose outcome differs from the expected one. With
``--pipeline`` the same replies also go through ``handle_message`` on a
temporary SQLite database (slower) and the request's state is compared too.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.replies.cases import all_cases  # noqa: E402
from tests.replies.reading import figures, read_case  # noqa: E402


def _counts(title: str, counter: Counter) -> str:
    return f"{title}: " + ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


def main(argv: list[str]) -> int:
    cases = all_cases()
    print(f"replies: {len(cases)}")
    print(_counts("by language", Counter(c.lang for c in cases)))
    print(_counts("by layout", Counter(c.layout for c in cases)))
    print(_counts("by encoding", Counter(c.encoding for c in cases)))
    print(_counts("by expected outcome", Counter(c.expected.split()[0] for c in cases)))
    result = figures([read_case(c) for c in cases])
    print(f"\ncore (parse -> trim -> read): wrong actions {len(result['wrong_actions'])}; "
          f"clear decisions recognised {result['recognised']}/{result['clear_decisions']} "
          f"({100 * result['recall']:.1f} %); outcome as expected "
          f"{result['exact']}/{result['replies']}")
    for miss in result["misses"]:
        print(("  WRONG ACTION " if miss.wrong_action else "  miss ") + miss.describe())
    if "--pipeline" in argv:
        from tests.replies.pipeline import run_pipeline

        outcomes = run_pipeline(cases)
        wrong = [o for o in outcomes if o.wrong_action]
        clear = [o for o in outcomes if o.case.clear_decision]
        recognised = sum(o.as_expected for o in clear)
        print(f"\npipeline (handle_message, SQLite): wrong actions {len(wrong)}; clear decisions "
              f"recognised {recognised}/{len(clear)} ({100 * recognised / len(clear):.1f} %)")
        for outcome in outcomes:
            if not outcome.as_expected:
                print(("  WRONG ACTION " if outcome.wrong_action else "  miss ")
                      + outcome.describe())
    return 1 if result["wrong_actions"] else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
