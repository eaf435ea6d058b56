"""Reading a client list for `clients import`: encodings, the header, and one
error per bad line with its line number."""

from __future__ import annotations

import re

import pytest

from mailflow.core.clientcsv import ClientRow, LineError, UndecodableFile, decode, read_rows

SAKURA = "name,emails,plan,lang\r\nさくら商事,info@sakura.example,3,ja\r\n"


@pytest.mark.parametrize(
    ("data", "encoding", "used"),
    [
        pytest.param(SAKURA.encode("utf-8"), None, "utf-8-sig", id="utf8"),
        pytest.param(b"\xef\xbb\xbf" + SAKURA.encode("utf-8"), None, "utf-8-sig",
                     id="utf8-bom-excel"),
        pytest.param(SAKURA.encode("cp932"), None, "cp932", id="shift-jis-excel-japan"),
        pytest.param(SAKURA.replace("さくら商事", "①さくら").encode("cp932"), None, "cp932",
                     id="cp932-nec-special-character"),
        pytest.param(SAKURA.encode("cp932"), "shift_jis", "shift_jis", id="named-shift-jis"),
        pytest.param(b"\xef\xbb\xbf" + SAKURA.encode("utf-8"), "UTF-8", "utf-8-sig",
                     id="named-utf8-drops-bom"),
        pytest.param(SAKURA.encode("euc-jp"), "euc-jp", "euc_jp", id="named-euc-jp"),
    ],
)
def test_decode_reads_what_excel_saves(data, encoding, used):
    text, name = decode(data, encoding)
    assert name == used
    assert text.lstrip("\ufeff") == text and "さくら" in text


@pytest.mark.parametrize(
    ("data", "encoding", "message"),
    [
        pytest.param(SAKURA.encode("utf-16"), None, "--encoding", id="utf16-not-detected"),
        pytest.param(SAKURA.encode("cp932"), "utf-8", "not utf-8 text (line 2: invalid start byte)",
                     id="named-wrong-encoding"),
    ],
)
def test_decode_says_what_is_wrong(data, encoding, message):
    with pytest.raises(UndecodableFile, match=re.escape(message)):
        decode(data, encoding)


def test_decode_of_an_unknown_encoding_is_a_lookup_error():
    with pytest.raises(LookupError):
        decode(b"name,emails\n", "klingon")


def row(line, name, emails, plan=None, lang=None):
    return ClientRow(line, name, tuple(emails), plan, lang)


@pytest.mark.parametrize(
    ("text", "rows", "errors"),
    [
        pytest.param("name,emails,plan,lang\nAcme,a@acme.example,5,en\n",
                     [row(2, "Acme", ["a@acme.example"], 5, "en")], [], id="all-columns"),
        pytest.param("Lang , EMAILS,Name\nJA, a@x.example;b@x.example  c@x.example ,X\n",
                     [row(2, "X", ["a@x.example", "b@x.example", "c@x.example"], None, "ja")],
                     [], id="any-order-any-case-separators"),
        pytest.param("name,email\nAcme,\"a@x.example, b@x.example\"\n",
                     [row(2, "Acme", ["a@x.example", "b@x.example"])], [],
                     id="alias-email-quoted-comma"),
        pytest.param("name,emails,plan\nAcme,a@x.example,\nBeta,b@x.example,0\n"
                     "Gamma,g@x.example,none\nDelta,d@x.example,５\n",
                     [row(2, "Acme", ["a@x.example"]), row(3, "Beta", ["b@x.example"], 0),
                      row(4, "Gamma", ["g@x.example"], 0), row(5, "Delta", ["d@x.example"], 5)],
                     [], id="plan-empty-keeps-zero-or-none-ends-full-width-digit"),
        pytest.param("\nname,emails\n\n\"Acme\nWest\",a@x.example\nBeta,b@x.example\n",
                     [row(4, "Acme\nWest", ["a@x.example"]), row(6, "Beta", ["b@x.example"])],
                     [], id="blank-lines-and-a-quoted-newline-keep-line-numbers"),
        pytest.param("name,emails\nAcme,a@x.example,extra\n,b@x.example\nGamma,\n",
                     [], [LineError(2, "3 cells, the header has 2"), LineError(3, "no name"),
                          LineError(4, "Gamma: no e-mail address")], id="bad-lines"),
        pytest.param("name,emails,plan,lang\nA,a@x.example,-1,\nB,b@x.example,lots,\n"
                     "C,c@x.example,,fr\n",
                     [], [LineError(2, "A: plan '-1' is not a number of credits (0 = no plan)"),
                          LineError(3, "B: plan 'lots' is not a number of credits (0 = no plan)"),
                          LineError(4, "C: language 'fr' is not supported (use en or ja)")],
                     id="bad-plan-and-lang"),
        pytest.param("name,emails\nAcme,a@x.example\nACME,z@x.example\nBeta,A@X.example\n",
                     [row(2, "Acme", ["a@x.example"])],
                     [LineError(3, "ACME: the same client is on line 2"),
                      LineError(4, "Beta: A@X.example is also on line 2")],
                     id="a-name-or-address-twice"),
        pytest.param("name,emails,plna\nAcme,a@x.example,5\n", [],
                     [LineError(1, "unknown column 'plna' (columns: name, emails, plan, lang)")],
                     id="misspelt-column"),
        pytest.param("name,plan\nAcme,5\n", [],
                     [LineError(1, "the header row needs the column emails"
                                   " (columns: name, emails, plan, lang)")],
                     id="missing-column"),
        pytest.param("Acme,a@x.example\n", [],
                     [LineError(1, "unknown columns 'Acme', 'a@x.example'"
                                   " (columns: name, emails, plan, lang)")],
                     id="no-header-row"),
        pytest.param("", [], [LineError(1, "no header row (columns: name, emails, plan, lang)")],
                     id="empty-file"),
        pytest.param("name,emails\n", [], [], id="header-only"),
    ],
)
def test_read_rows(text, rows, errors):
    assert read_rows(text) == (rows, errors)
