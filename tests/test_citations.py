"""Every "RFC N x.y" in the teaching material, the CLI's output and the code's comments names
a section that exists in that RFC (issue 15 item 5: citations a student can follow).

The RFC texts are not part of the repository: they are looked up in the directory named by
$TCPCRYPT_SPECS, else in the first ``shared/specs`` found beside the repository root or one of
its parents (``../shared/specs`` of the main checkout); without it the test is skipped.  A
document cited here but absent from that directory cannot be checked; such citations are
listed (a warning, and ``python -m tests.test_citations``), not failed.

Headings of an RFC text (:func:`headings`): a line that starts at column 0 with a section
number followed by a dot and the title ("3.10.7.4.  Other States", "4.  Encodings"), an
appendix line ("Appendix A.  Test Vectors") and an appendix subsection ("A.1.  Test Case 1").
RFC 1122 predates that layout: its subsections are indented and have no trailing dot
("      4.2.2.13  Closing a Connection"), so for a text whose column-0 headings are all
top-level, indented numbered lines without a table-of-contents dot leader are headings too.

What counts as a citation (:func:`citations`).  The text searched is each comment block of a
.py file (consecutive comment lines, joined), each string literal (docstrings, printed text)
split into paragraphs at blank lines, test function names, and each paragraph of a .md file.
Within one such unit:

1. Anchored: a document name -- ``RFC 9293`` / ``RFC9293`` or ``draft-ietf-tcpinc-api[-06]``
   -- directly followed (after an optional comma, "'s" or an opening parenthesis, and an
   optional keyword "section(s)", "sec.", "§" or "appendix") by a section number; or by a
   parenthesised name and then the number ("RFC 8985 (RACK-TLP) 5.2", "RFC 9438 (CUBIC,
   sections 4.2-4.10").  A section number is ``3.10.7.4``, ``7``, ``A.1`` or, after
   "appendix", a letter; a bare number must not run on into a word ("RFC 9293 MUST-16",
   "RFC 8548 Table 3" and "RFC 6675 NextSeg() rules 3" are not section citations).
   The number may go on as a list: ``4.2-4.3`` (a range: both ends are checked), and
   ``, 4.5``, ``/ 4.1``, ``and 5.8``, ``or 3.3``, where a list item after the first must be
   dotted (or follow a keyword again), so "RFC 8547 11, table 3" is section 11 only.
   The reversed form "section 3.3 of RFC 8548" counts too.
2. Test names: ``test_..._rfc9293_3_10_7_1`` is RFC 9293 3.10.7.1.
3. Bare references -- "section 5", "§ 4.2", "sections 4.1-4.8", or a dotted number alone in
   parentheses "(3.8.6.2.1)" -- are checked only when unambiguous: they come after an
   anchored citation in the same unit, that unit cites exactly one document (any second
   document, checkable or not, makes them ambiguous and they are skipped), and no section
   number stands before that citation ("(5.8, RFC 7661 4.3) ... (4.2)" speaks of an unnamed
   document too, so its "(4.2)" is skipped).  A parenthesised "(5.3)" right after a citation
   or after "rule(s)"/"step(s)" is a rule's label, not a section: RFC 6298 and RFC 6675
   number their rules "(2.1)" .. "(5.7)" and "(4.3)"; the form "RFC 6298 rule (5.3)" (or
   "RFC 6675 5 step (4.3)") is checked against those labels in the text.  A bare reference
   in a unit that names no document (the "(4.2)" of a module that said "RFC 8547" in its
   docstring) is not attributed at all: that is left to reading.

A failure names file:line, the citation as written and why; all are reported together.
Whether a section that exists is the right one for the sentence is a matter for reading.
"""
from __future__ import annotations

import io
import os
import re
import sys
import tokenize
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("tcpstack", "tcpcrypt", "tun", "examples", "docs", "README.md", "bench", "tests")
SELF = Path(__file__).resolve()


def specs_dir() -> Path | None:
    env = os.environ.get("TCPCRYPT_SPECS")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in (ROOT, *ROOT.parents):
        cand = parent / "shared" / "specs"
        if cand.is_dir():
            return cand
    return None


# ---------------------------------------------------------------- headings of an RFC text

_HEAD_NUM = re.compile(r"^(\d+(?:\.\d+)*)\.\s+\S"                   # 3.10.7.4.  Other States
                       r"|^(\d+\.\d+(?:\.\d+)*)\s{2,}[A-Z]")          # 5.1  Congestion (RFC 2018)
_HEAD_OLDTOP = re.compile(r"^(\d+)\.\s+[A-Z]")                     # 2. LINK LAYER (RFC 1122)
_HEAD_APPX = re.compile(r"^Appendix\s+([A-Z])\.?\s+\S")            # Appendix A.  Test Vectors
_HEAD_APPSUB = re.compile(r"^([A-Z](?:\.\d+)+)\.\s+\S")            # A.1.  Test Case 1
_HEAD_INDENT = re.compile(r"^\s+(\d+(?:\.\d+)+)\s+[A-Za-z]")       # "   4.2.2.13  Closing ..."
_RULE_LABEL = re.compile(r"^\s+(\(\d+\.\d+\))\s")                   # "   (5.3) When an ACK ..."


def parse_headings(text: str) -> set[str]:
    found: set[str] = set()
    for line in text.splitlines():
        m = _RULE_LABEL.match(line)
        if m:
            found.add(m.group(1))
        for rx in (_HEAD_NUM, _HEAD_OLDTOP, _HEAD_APPX, _HEAD_APPSUB):
            m = rx.match(line)
            if m:
                found.add(next(g for g in m.groups() if g))
                break
    if found and all("." not in h for h in found if not h.startswith("(")):
        # Old layout (RFC 1122): indented subsection headings, no trailing dot.
        for line in text.splitlines():
            m = _HEAD_INDENT.match(line)
            if m and ". ." not in line and "...." not in line:
                found.add(m.group(1))
    return found


def doc_file(doc: str) -> str:
    return f"{doc}.txt" if doc.startswith("draft-") else f"rfc{doc}.txt"


@lru_cache(maxsize=None)
def headings(doc: str) -> frozenset[str] | None:
    """The section numbers of `doc` ("9293" or "draft-ietf-tcpinc-api-06"), None if absent."""
    d = specs_dir()
    if d is None or not (d / doc_file(doc)).is_file():
        return None
    return frozenset(parse_headings((d / doc_file(doc)).read_text(errors="replace")))


# ---------------------------------------------------------------- text units of a file

@dataclass
class Unit:
    text: str
    lines: list[tuple[int, int]]        # (offset in text, line number in the file)

    def line_at(self, off: int) -> int:
        ln = self.lines[0][1]
        for start, n in self.lines:
            if start > off:
                break
            ln = n
        return ln


def _split_paragraphs(text: str, first_line: int) -> list[Unit]:
    units: list[Unit] = []
    cur: list[str] = []
    cur_lines: list[tuple[int, int]] = []
    pos = 0
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            if cur:
                units.append(Unit("\n".join(cur), cur_lines))
            cur, cur_lines, pos = [], [], 0
            continue
        cur_lines.append((pos, first_line + i))
        cur.append(line)
        pos += len(line) + 1
    if cur:
        units.append(Unit("\n".join(cur), cur_lines))
    return units


def _one_unit(text: str, first_line: int) -> Unit:
    lines, pos = [], 0
    for i, line in enumerate(text.split("\n")):
        lines.append((pos, first_line + i))
        pos += len(line) + 1
    return Unit(text, lines)


_TEST_NAME = re.compile(r"rfc(\d{3,4})((?:_\d+)+)(?![A-Za-z0-9])")


def units_of_py(src: str) -> list[Unit]:
    units: list[Unit] = []
    run: list[tuple[int, str]] = []

    def flush() -> None:
        if run:
            text, lines, pos = [], [], 0
            for ln, t in run:
                lines.append((pos, ln))
                text.append(t)
                pos += len(t) + 1
            units.append(Unit("\n".join(text), lines))
            run.clear()

    toks = tokenize.generate_tokens(io.StringIO(src).readline)
    for tok in toks:
        if tok.type == tokenize.COMMENT:
            if run and run[-1][0] != tok.start[0] - 1:
                flush()
            run.append((tok.start[0], tok.string.lstrip("#")))
            continue
        if tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            continue
        flush()
        if tok.type == tokenize.STRING or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            units.append(_one_unit(tok.string, tok.start[0]))
        elif tok.type == tokenize.NAME and _TEST_NAME.search(tok.string):
            m = _TEST_NAME.search(tok.string)
            assert m
            sec = m.group(2)[1:].replace("_", ".")
            units.append(Unit(f"RFC {m.group(1)} {sec}", [(0, tok.start[0])]))
    flush()
    return units


def units_of_md(src: str) -> list[Unit]:
    return _split_paragraphs(src, 1)


# ---------------------------------------------------------------- citations in a unit

_DOC = r"(?:RFC\s?(?P<rfc>\d{3,4})(?!\d)|(?P<draft>draft-ietf-tcpinc-api)(?:-06)?)"
_KW = r"(?:[Ss]ections?|[Ss]ec\.|§|[Aa]ppendix|App\.)"
_NUM = r"(?:\d+(?:\.\d+)*|[A-H](?:\.\d+)+)(?!\w|\.\d|-[A-Za-z])"
_DOTTED = r"(?:\d+(?:\.\d+)+|[A-H](?:\.\d+)+)(?!\w|\.\d|-[A-Za-z])"
_LETTER = r"[A-H](?!\w|\.\d|-[A-Za-z])"
_RANGE = r"\s*[-–]\s*"
_MORE = r"(?:\s*(?:,|/|\band\b|\bor\b)\s*)"
# A list: first item, then ranges and further items (dotted, or after a keyword again).
_ITEM_KW = rf"(?:{_KW}\s*{_NUM}|(?:[Aa]ppendix|App\.)\s*{_LETTER})"
_LIST = (rf"(?P<list>(?:{_ITEM_KW}|{_NUM})(?:{_RANGE}{_NUM})?"
         rf"(?:{_MORE}(?:{_ITEM_KW}|{_DOTTED})(?:{_RANGE}{_NUM})?)*)")
_NAME = r"[A-Za-z][\w+.-]*(?:\s[A-Za-z][\w+.-]*){0,3}"
ANCHORED = re.compile(
    rf"{_DOC}(?:'s)?"
    rf"(?:\s*\(?\s*|,\s*(?={_KW})|\s*\({_NAME}\)\s*|\s*\({_NAME},\s*)"
    rf"{_LIST}")
_LABEL = r"\((?:\d+\.\d+)\)"
RULES = re.compile(rf"{_DOC}(?:\s+{_NUM})?,?\s+(?:rules?|steps?)\s+"
                   rf"(?P<labels>{_LABEL}(?:(?:{_RANGE}|{_MORE}){_LABEL})*)")
_RULE_WORD = re.compile(r"(?:rules?|steps?)\s*$")
REVERSED = re.compile(rf"(?P<list>{_ITEM_KW}(?:{_RANGE}{_NUM})?)\s+of\s+{_DOC}")
DOC_ANY = re.compile(_DOC)
BARE = re.compile(
    rf"(?P<list>{_ITEM_KW}(?:{_RANGE}{_NUM})?(?:{_MORE}(?:{_ITEM_KW}|{_DOTTED}))*)"
    rf"|\((?P<plist>{_DOTTED}(?:{_RANGE}{_DOTTED})?(?:{_MORE}{_DOTTED})*)\)")
_SECTIONISH = re.compile(rf"{_KW}\s*\d|(?<![\w.])\d+\.\d+(?:\.\d+)*(?![\w.])")
_SECTION_TOKEN = re.compile(rf"(?:[Aa]ppendix|App\.)\s*(?P<l>[A-H])(?!\w|\.\d|-[A-Za-z])|(?P<n>\d+(?:\.\d+)*|[A-H](?:\.\d+)+)")


def _doc_of(m: re.Match[str]) -> str:
    return m.group("rfc") or "draft-ietf-tcpinc-api-06"


def _sections(listing: str) -> list[str]:
    out = []
    for t in _SECTION_TOKEN.finditer(listing):
        out.append(t.group("l") or t.group("n"))
    return out


@dataclass(frozen=True)
class Citation:
    path: str
    line: int
    doc: str            # "9293" or "draft-ietf-tcpinc-api-06"
    section: str
    written: str        # the citation as written (one line)
    bare: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def citations_in(unit: Unit, path: str) -> list[Citation]:
    found: list[Citation] = []
    spans: list[tuple[int, int]] = []
    text = unit.text

    def add(m: re.Match[str], listing: str, doc: str, bare: bool = False) -> None:
        written = " ".join(m.group(0).split())
        for sec in _sections(listing):
            found.append(Citation(path, unit.line_at(m.start()), doc, sec, written, bare))
        spans.append(m.span())

    for m in ANCHORED.finditer(text):
        add(m, m.group("list"), _doc_of(m))
    for m in RULES.finditer(text):
        written = " ".join(m.group(0).split())
        for lab in re.findall(_LABEL, m.group("labels")):
            found.append(Citation(path, unit.line_at(m.start()), _doc_of(m), lab, written))
        spans.append(m.span())
    for m in REVERSED.finditer(text):
        if not any(a <= m.start() < b for a, b in spans):
            add(m, m.group("list"), _doc_of(m))
    docs = {_doc_of(m) for m in DOC_ANY.finditer(text)}
    if len(docs) == 1 and spans:
        (doc,) = docs
        first = min(a for a, _ in spans)
        if _SECTIONISH.search(text[:first]):
            return found        # a section number before the citation: another document is implied
        anchored = list(spans)
        for m in BARE.finditer(text):
            if m.start() < first or any(a <= m.start() < b for a, b in anchored):
                continue
            if m.group("plist") and (_RULE_WORD.search(text[:m.start()])
                                     or any(not text[b:m.start()].strip() for _, b in anchored)):
                continue            # "rule (5.3)", "RFC 6675 5 (4.3)": a rule's label, not a section
            add(m, m.group("list") or m.group("plist"), doc, bare=True)
    return found


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        p = ROOT / name
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in (".py", ".md") and f.is_file())
    return [f for f in files if f.resolve() != SELF and "egg-info" not in f.parts]


def all_citations() -> list[Citation]:
    out: list[Citation] = []
    for f in scanned_files():
        src = f.read_text(errors="replace")
        rel = str(f.relative_to(ROOT))
        units = units_of_py(src) if f.suffix == ".py" else units_of_md(src)
        for u in units:
            out += citations_in(u, rel)
    return out


def check(cites: list[Citation]) -> tuple[list[str], dict[str, list[Citation]]]:
    """(failures as "file:line: citation: why", unchecked citations by document)."""
    failures: list[str] = []
    unchecked: dict[str, list[Citation]] = {}
    for c in cites:
        heads = headings(c.doc)
        if heads is None:
            unchecked.setdefault(c.doc, []).append(c)
            continue
        if c.section not in heads:
            name = c.doc if c.doc.startswith("draft") else f"RFC {c.doc}"
            kind = "bare reference attributed to " if c.bare else ""
            failures.append(f"{c.where}: {c.written!r}: {kind}{name} has no section "
                            f"{c.section} (its text in {specs_dir()})")
    return failures, unchecked


# ---------------------------------------------------------------- tests

needs_specs = pytest.mark.skipif(specs_dir() is None,
                                 reason="no shared/specs directory with the RFC texts")


def _cites(text: str) -> list[tuple[str, str, bool]]:
    return [(c.doc, c.section, c.bare) for c in citations_in(Unit(text, [(0, 1)]), "x")]


def test_matcher_forms() -> None:
    assert _cites("RFC 9293 3.10.7.4: other states") == [("9293", "3.10.7.4", False)]
    assert _cites("RFC 9293 section 3.10.7.4") == [("9293", "3.10.7.4", False)]
    assert _cites("(RFC 8548, Section 4.1)") == [("8548", "4.1", False)]
    assert _cites("RFC 8547 4.2-4.3") == [("8547", "4.2", False), ("8547", "4.3", False)]
    assert _cites("RFC 9293 (3.8.6.2.1)") == [("9293", "3.8.6.2.1", False)]
    assert _cites("RFC 1122 4.2.2.13") == [("1122", "4.2.2.13", False)]
    assert _cites("draft-ietf-tcpinc-api-06 section 3") == [("draft-ietf-tcpinc-api-06", "3", False)]
    assert _cites("RFC 8547 4, 4.5, 4.8).") == [("8547", s, False) for s in ("4", "4.5", "4.8")]
    assert _cites("RFC 8547 11, table 3") == [("8547", "11", False)]
    assert _cites("RFC 8985 (RACK-TLP) 5.2 per-segment") == [("8985", "5.2", False)]
    assert _cites("RFC 9438 (CUBIC, sections 4.2-4.10 and 5.8)") == [
        ("9438", "4.2", False), ("9438", "4.10", False), ("9438", "5.8", False)]
    assert _cites("RFC 8201 4 / RFC 1191 3") == [("8201", "4", False), ("1191", "3", False)]
    assert _cites("RFC 9293 appendix A.2 and Appendix B") == [("9293", "A.2", False),
                                                               ("9293", "B", False)]
    assert _cites("section 3.3 of RFC 8548") == [("8548", "3.3", False)]
    assert _cites("test_rst_is_rfc9293_3_10_7_1") == []        # only NAME tokens of .py files
    assert units_of_py("def test_x_rfc9293_3_10_7_1(): pass\n")[0].text == "RFC 9293 3.10.7.1"


def test_matcher_is_conservative() -> None:
    for text in ("RFC 9293 MUST-16", "RFC 8548 Table 3", "RFC 6675 NextSeg() rules 3 and 4",
                 "RFC 768: a computed zero", "RFC 8548 Figure 1", "RFC 6675 SetPipe()",
                 "RFC 9293 with 2 segments", "RFC 8548 3.3x"):
        assert _cites(text) == [], text
    # Bare references: only after a citation, only with one document in the unit.
    assert _cites("RFC 8548 3.3 ... see section 4.1 and (4.2.1)") == [
        ("8548", "3.3", False), ("8548", "4.1", True), ("8548", "4.2.1", True)]
    assert _cites("see section 4.1, RFC 8548 3.3") == [("8548", "3.3", False)]
    assert _cites("RFC 8548 3.3 and RFC 7748; section 5") == [("8548", "3.3", False)]
    assert _cites("RFC 8548 3.3 and (4)") == [("8548", "3.3", False)]
    assert _cites("(5.8, RFC 7661 4.3) ... (4.2)") == [("7661", "4.3", False)]
    assert _cites("RFC 6675 5 (4.3)") == [("6675", "5", False)]
    assert _cites("RFC 6298 rules (2.4), (2.5) and (5.5)") == [
        ("6298", "(2.4)", False), ("6298", "(2.5)", False), ("6298", "(5.5)", False)]
    assert _cites("RFC 6298 rules (5.4)-(5.6)") == [("6298", "(5.4)", False), ("6298", "(5.6)", False)]
    assert _cites("RFC 6675 5 step (4.3)") == [("6675", "5", False), ("6675", "(4.3)", False)]


def test_headings_parser() -> None:
    text = ("1.  Introduction\n   1.  not a heading (indented)\n3.10.7.4.  Other States\n"
            "Appendix A.  Test Vectors\nA.1.  Test Case 1\nW    = max\n")
    assert parse_headings(text) == {"1", "3.10.7.4", "A", "A.1"}
    assert parse_headings("5.1  Congestion Control Issues\n   (2.1) Until a\n") == {"5.1", "(2.1)"}
    old = ("1.  INTRODUCTION\n      1.1  The Internet ......   6\n   1.1  The Internet\n"
           "         4.2.2.13  Closing a Connection\n")
    assert parse_headings(old) == {"1", "1.1", "4.2.2.13"}


@needs_specs
def test_specs_parse() -> None:
    h = headings("9293")
    assert h is not None and {"3.10.7.4", "3.8.6.2.1", "A.2", "B"} <= h
    assert "5.1" in (headings("2018") or ())
    h = headings("1122")
    assert h is not None and {"4.2.2.13", "4.2.3.4", "4"} <= h
    h = headings("draft-ietf-tcpinc-api-06")
    assert h is not None and {"2.1", "3", "3.1"} <= h


@needs_specs
def test_every_citation_resolves() -> None:
    cites = all_citations()
    assert len(cites) > 100          # the matcher still finds the citations
    failures, unchecked = check(cites)
    if unchecked:
        warnings.warn("citations of documents not in shared/specs, unchecked: " + ", ".join(
            f"RFC {d} ({len(cs)})" for d, cs in sorted(unchecked.items(), key=lambda kv: int(kv[0])
                                                       if kv[0].isdigit() else 0)),
            stacklevel=1)
    assert not failures, "citations that name no section of the cited text:\n" + "\n".join(failures)


def main() -> int:
    if specs_dir() is None:
        print("no shared/specs directory: set TCPCRYPT_SPECS", file=sys.stderr)
        return 2
    cites = all_citations()
    failures, unchecked = check(cites)
    print(f"{len(cites)} section citations, specs in {specs_dir()}")
    for f in failures:
        print("FAIL", f)
    for doc, cs in sorted(unchecked.items()):
        print(f"unchecked RFC {doc}: " + ", ".join(f"{c.where} {c.section}" for c in cs))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
