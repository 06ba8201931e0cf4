"""Reuters-21578 article bodies as transfer text: one sentence, paragraph or article a line.

    python tools/reuters_to_text.py --unit sentence -o outputs/reuters/sentences.txt

reads ``../shared/data/reuters21578/reut2-*.sgm`` (``--input`` names another folder) and writes a
plain-text file for ``data.unlabeled`` (one document a line). Standard library only.

* **Bytes.** The files are ASCII except one Latin-1 byte (0xfc, "ü", in reut2-017.sgm, which is
  therefore not valid UTF-8), so every file is decoded as Latin-1; the output is UTF-8.
* **Bodies.** The text of each ``<BODY>`` (records without one are counted and left out), SGML
  entities decoded with :func:`html.unescape` (``&lt;`` ``&amp;`` ``&#3;`` ...); control
  characters (the ``\\x03`` that ends every body, DEL, ESC ..., and 30 carriage returns spelt
  ``^M``) are dropped, and so is the closing signature paragraph ("Reuter", "REUTER...").
* **Paragraphs.** Bodies are hard-wrapped at ~70 columns with indented paragraph starts: a line
  that starts with whitespace or follows a blank line starts a paragraph, the other lines
  continue it, joined with one space (every whitespace run becomes one space; tables, which the
  collection has a few of, become one line of figures).
* **Sentences** (``--unit sentence``): a paragraph is cut after ``.``, ``!`` or ``?`` (and any
  closing quotes or brackets) followed by whitespace and an uppercase letter or an opening quote,
  except after an abbreviation: a single letter or dotted initials (``J.``, ``U.S.``, ``U.K.``),
  or a title-like word of :data:`ABBREVIATIONS` (``Mr.``, ``Dr.``, ``St.``, ``Gen.``, ``vs.``
  ...); "No. 2" or "Feb. 26" never split anyway, as a digit does not start a sentence.
  Company suffixes are not among them: the collection writes "Acme Inc said" mid-sentence, so
  "Inc.", "Corp.", "Co.", "Ltd." followed by a capital end a sentence (of 413 "Inc. X" 131 are
  "Inc. The"), unless the next word is a suffix too ("Co. Ltd"). A rule, not a model:
  "... in the U.S. The ..." stays one sentence (the collection capitalizes words after "U.S.").
* **Units.** ``sentence``, ``paragraph`` or ``article`` (paragraphs joined by one space).
  The counts (articles, units, words = whitespace-separated tokens) are printed to stderr.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "reuters21578"
UNITS = ("sentence", "paragraph", "article")

ABBREVIATIONS = frozenset([  # words that stand before a name (a number never starts a sentence)
    "mr", "mrs", "ms", "messrs", "dr", "prof", "sen", "rep", "gov", "gen", "col", "lt", "sgt",
    "capt", "st", "rev", "ft", "mt", "vs",
])
COMPANY_SUFFIXES = frozenset(["inc", "corp", "co", "cos", "ltd", "plc", "pty", "bhd", "bros"])

_BODY = re.compile(r"<BODY>(.*?)</BODY>", re.DOTALL)
_RECORD = re.compile(r"<REUTERS\b")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\^M")  # and a carriage return spelt "^M"
_SIGNATURE = re.compile(r"(?i)reuters?\W*")
# the end of a sentence: [.!?], closing quotes/brackets, whitespace, then what starts the next one
_BOUNDARY = re.compile(r"""[.!?]['")\]]*(?=\s+['"(]?[A-Z])""")
_LAST_WORD = re.compile(r"(\S+)$")
_NEXT_WORD = re.compile(r"\s+['\"(]?([A-Za-z]+)\b(?!-)")


def bodies(text: str) -> Iterator[str]:
    """The raw text of every ``<BODY>`` of one SGML file."""
    yield from (m.group(1) for m in _BODY.finditer(text))


def paragraphs(body: str) -> list[str]:
    """The body's paragraphs, entities decoded, wraps joined, signature and controls dropped."""
    lines = _CONTROL.sub("", html.unescape(body).replace("\r", "")).split("\n")
    found: list[list[str]] = []
    fresh = True  # the next non-blank line starts a paragraph
    for line in lines:
        if not line.strip():
            fresh = True
            continue
        if fresh or line[0].isspace():
            found.append([])
        found[-1].append(line)
        fresh = False
    result = [" ".join(" ".join(p).split()) for p in found]
    while result and _SIGNATURE.fullmatch(result[-1]):
        result.pop()
    return result


def _abbreviation(before: str, after: str) -> bool:
    """Whether the period that ends ``before`` ends an abbreviation rather than a sentence
    (``after``: the text that follows it)."""
    match = _LAST_WORD.search(before)
    word = match.group(1).lstrip("('\"") if match else ""
    if not word.endswith("."):
        return False
    stem = word[:-1]
    if re.fullmatch(r"[A-Za-z](\.[A-Za-z])*", stem) or stem.lower() in ABBREVIATIONS:
        return True
    following = _NEXT_WORD.match(after)
    return stem.lower() in COMPANY_SUFFIXES and bool(following) and (
        following.group(1).lower() in COMPANY_SUFFIXES)


def sentences(paragraph: str) -> list[str]:
    """A paragraph cut into sentences by the rule in the module docstring."""
    found, start = [], 0
    for match in _BOUNDARY.finditer(paragraph):
        end = match.end()
        if paragraph[match.start()] == "." and _abbreviation(
                paragraph[start : match.start() + 1], paragraph[end:]):
            continue
        found.append(paragraph[start:end].strip())
        start = end
    found.append(paragraph[start:].strip())
    return [s for s in found if s]


def units(body: str, unit: str) -> list[str]:
    """One body as units of ``unit`` (see :data:`UNITS`)."""
    paras = paragraphs(body)
    if unit == "article":
        return [" ".join(paras)] if paras else []
    if unit == "paragraph":
        return paras
    return [s for p in paras for s in sentences(p)]


def convert(files: Iterable[Path], unit: str) -> tuple[list[str], dict]:
    """The units of every body in ``files``, and the counts."""
    counts = {"files": 0, "records": 0, "articles": 0, "without_body": 0, "empty_bodies": 0,
              "non_ascii_bytes": 0, "units": 0, "words": 0}
    out: list[str] = []
    for path in files:
        data = path.read_bytes()
        counts["files"] += 1
        counts["non_ascii_bytes"] += sum(b > 0x7F for b in data)
        text = data.decode("latin-1")
        records = len(_RECORD.findall(text))
        found = 0
        for body in bodies(text):
            found += 1
            got = units(body, unit)
            counts["empty_bodies"] += not got
            out += got
        counts["records"] += records
        counts["articles"] += found
        counts["without_body"] += records - found
    counts["units"] = len(out)
    counts["words"] = sum(len(u.split()) for u in out)
    return out, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT,
                        help="folder with reut2-*.sgm (default: %(default)s)")
    parser.add_argument("--unit", choices=UNITS, default="sentence")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the text file to write")
    args = parser.parse_args(argv)
    files = sorted(args.input.glob("reut2-*.sgm"))
    if not files:
        print(f"error: {args.input}: no reut2-*.sgm files", file=sys.stderr)
        return 2
    lines, counts = convert(files, args.unit)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temp = args.output.with_name(f".{args.output.name}.tmp")
    temp.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")
    os.replace(temp, args.output)
    print(f"{args.output}: {counts['articles']} articles ({counts['records']} records, "
          f"{counts['without_body']} without a body, {counts['empty_bodies']} empty) from "
          f"{counts['files']} files -> {counts['units']} {args.unit} lines, {counts['words']} words; "
          f"{counts['non_ascii_bytes']} non-ASCII byte(s) read as Latin-1", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
