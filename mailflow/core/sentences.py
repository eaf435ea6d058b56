"""Split a reply's new text into the sentences people wrote (EN and JA).

Text is NFKC-normalised first (full-width ＡＰＰＲＯＶＥ, ５, ？ and the
ideographic space read as ASCII) and curly apostrophes become straight ones,
so "don’t" and "don't" are one word. Case is kept here: the decision reader
folds it; the line joining below needs it.

A sentence ends at 。！？!? or a full stop (not one between digits: "1.5"
stays one number), and at a line break, except where the line break is only
a wrap inside a sentence:

* the next line starts with a lower-case letter ("We approve\\nif you can
  finish by Friday" is one sentence, so the condition is not lost);
* a bracketed aside and a " / " alternative are sentences of their own;
* a Japanese concessive clause (…ましたが、 …けど、) ends a sentence too;
* the line ends with a comma, a colon or a Japanese connecting particle or
  form (が、て、で、は、を、に、の、と、も、ので、けど、ば、たら、なら …:
  "お見積りの件は\\n承認いたします").

A blank line always ends a sentence. Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalise", "split_sentences"]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'",
                              "\u201c": '"', "\u201d": '"'})

#: A sentence's last characters: Japanese and ASCII terminators; a full stop
#: only when no digit follows it (a decimal number is not two sentences).
_PIECE = re.compile(r"(?:[^。！？!?.]|\.(?=\d))*(?:[。！？!?]+|\.(?!\d)|$)")

#: A line ending like this continues on the next line.
_CONTINUES = re.compile(
    r"(?:[,、，:：;；(（「『]|"
    r"(?:が|て|で|は|を|に|の|と|も|や|へ|から|ので|けど|けれど|けれども|ば|たら|なら|"
    r"し|つつ|ながら|ものの|のに|より|について|につき|につきまして|として))$"
)
_STARTS_LOWER = re.compile(r"^[a-z]")


def normalise(text: str) -> str:
    """NFKC (full width to ASCII, compatibility forms folded) and straight quotes."""
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)


#: 「検討しましたが、今回は見送ります」: a concessive clause is a sentence of its own,
#: so that what follows it is read alone; "承認しますが、" keeps its reservation.
_CONCESSIVE = re.compile(r"((?:が|けど|けれど|けれども|ものの)[、,])")


#: An aside in brackets and a " / " alternative are read as sentences of their own:
#: "承認 (APPROVE)", "Approve (only the first banner)", "却下 / REJECT".
_ASIDE = re.compile(r"[()（）]|\s[/／]\s|／")


def _pieces(line: str) -> list[str]:
    pieces = []
    for piece in _PIECE.findall(line):
        for part in _ASIDE.split(piece):
            parts = _CONCESSIVE.split(part)
            pieces += ["".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]
    return [p.strip() for p in pieces if p.strip()]


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, NFKC-normalised, case kept, stripped."""
    sentences: list[str] = []
    open_sentence = ""  # the last piece of the previous line, when it had no terminator
    for raw_line in normalise(text).replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw_line.strip()
        if not line:
            if open_sentence:
                sentences.append(open_sentence)
            open_sentence = ""
            continue
        pieces = _pieces(line)
        if open_sentence:
            if _CONTINUES.search(open_sentence) or _STARTS_LOWER.match(line):
                pieces[0] = f"{open_sentence} {pieces[0]}" if _needs_space(
                    open_sentence, pieces[0]) else open_sentence + pieces[0]
            else:
                sentences.append(open_sentence)
        open_sentence = ""
        if pieces and not re.search(r"[。！？!?.]$", pieces[-1]):
            open_sentence = pieces.pop()
        sentences.extend(pieces)
    if open_sentence:
        sentences.append(open_sentence)
    return sentences


def _needs_space(left: str, right: str) -> bool:
    """Japanese wraps need no space; words in Latin script do."""
    return left[-1:].isascii() or right[:1].isascii()
