"""One reply case through the pure core: raw MIME → parse → trim → read."""

from __future__ import annotations

from dataclasses import dataclass

from mailflow.core.decisions import Reading, read_reply
from mailflow.core.message import parse_message
from mailflow.core.trim import trim_reply
from tests.replies.cases import Case, is_wrong_action, outcome_of
from tests.replies.generator import SAMPLE_QUOTES, QuoteMail, make_reply


def raw_reply(case: Case, quote: QuoteMail | None = None, **kwargs) -> bytes:
    quote = quote or SAMPLE_QUOTES[case.quote_lang]
    kwargs.setdefault("subject", case.subject)
    return make_reply(case.text, quote, layout=case.layout, encoding=case.encoding,
                      signature=case.signature, **kwargs)


@dataclass(frozen=True)
class Result:
    case: Case
    got: str
    new_text: str
    reading: Reading

    @property
    def wrong_action(self) -> bool:
        return is_wrong_action(self.case.expected, self.got)

    @property
    def recognised(self) -> bool:
        return self.got == self.case.expected

    def describe(self) -> str:
        return (f"{self.case.id}: expected {self.case.expected}, got {self.got} "
                f"[{', '.join(self.reading.reasons)}] new text {self.new_text!r}")


def read_case(case: Case) -> Result:
    msg = parse_message(raw_reply(case))
    new_text = trim_reply(msg.text)
    reading = read_reply(new_text, msg.subject)
    return Result(case, outcome_of(reading.command, reading.count_text), new_text, reading)


def figures(results: list[Result]) -> dict[str, object]:
    """The issue's figures: wrong actions, and recall of clear decisions."""
    clear = [r for r in results if r.case.clear_decision]
    return {
        "replies": len(results),
        "wrong_actions": [r for r in results if r.wrong_action],
        "clear_decisions": len(clear),
        "recognised": sum(r.recognised for r in clear),
        "recall": sum(r.recognised for r in clear) / len(clear) if clear else 1.0,
        "exact": sum(r.recognised for r in results),
        "misses": [r for r in results if not r.recognised],
    }
