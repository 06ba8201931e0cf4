"""Transfer text: the unlabeled documents that only the distillation term sees (``data.unlabeled``).

:func:`read_transfer` reads them from one or more files and says what it kept and dropped:

* **What to read.** ``data.unlabeled`` is a path or a list of paths. A path holding ``*``, ``?``
  or ``[`` is a glob (``**`` recurses), a folder stands for ``folder/*`` (its files, not its
  subfolders, hidden files left out as by the glob); each expands in sorted order, the entries in
  the order given. A glob or folder matching no file, or a missing file, is an error.
* **Documents.** A file named ``*.jsonl`` or whose first non-empty line starts with ``{`` is JSON
  lines: one document per record, its ``"text"`` field (entities and other keys are ignored).
  Any other file is plain text, cut by ``data.unlabeled_unit``: ``line`` (the default) makes each
  line a document, ``file`` makes the whole file one document (e.g. a folder of articles). Either
  way a long document is cut into overlapping windows exactly as labelled data is.
* **Decoding.** UTF-8 (a BOM is dropped, CRLF read as LF). Other bytes are an error that names the
  file, line and byte offset, unless ``data.unlabeled_encoding`` names the codec to use instead
  (e.g. ``latin-1``).
* **Nothing is dropped silently.** Each unit counts under the first rule it meets: empty (only
  whitespace; ``skipped_empty``), equal to a dev or test text once all whitespace is removed (so a
  tokenized ``"U.S. stocks fell ."`` matches ``"U.S. stocks fell."``; ``dropped_eval_duplicates``:
  the teacher must not label evaluation text for the student), the exact text of an earlier unit
  (``duplicates``), beyond ``data.limit_unlabeled`` (the first N kept, in file order;
  ``limited``). What is left is ``documents``; ``empty_files`` counts files that held no text.
  One log line gives the counts; none left (with a limit other than 0) is an error.
"""

from __future__ import annotations

import codecs
import glob
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from distill.data.document import Document
from distill.data.readers import (
    _document,
    _error,
    _lines,
    _parse_json,
    _read_text,
    _require,
)
from distill.errors import ConfigError, DataError

log = logging.getLogger("distill")

UNITS = ("line", "file")
_GLOB = re.compile(r"[*?[]")
_UTF8_HINT = "; set data.unlabeled_encoding (e.g. latin-1) to read it with another codec"

Spec = str | os.PathLike | Sequence[str | os.PathLike]


def transfer_files(spec: Spec) -> list[Path]:
    """The files ``spec`` names: each entry a file, a folder (its files) or a glob, expanded in
    sorted order; DataError for a folder or glob without files."""
    entries = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    files: list[Path] = []
    for entry in entries:
        if not isinstance(entry, (str, os.PathLike)):
            raise ConfigError(f"data.unlabeled: expected a path or a list of paths, found {entry!r}")
        name = str(entry)
        is_glob = bool(_GLOB.search(name))
        if is_glob or os.path.isdir(name):
            pattern = name if is_glob else os.path.join(glob.escape(name), "*")
            found = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p)]
            if not found:
                raise _error(name, "no files match" if is_glob else "folder holds no files")
            files += found
        else:
            files.append(Path(name))  # a missing file is reported when it is read
    return files


def _units(path: Path, unit: str, encoding: str | None) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of every unit of one file, empty ones included (they are counted)."""
    text = _read_text(path, encoding, "" if encoding else _UTF8_HINT)
    lines = _lines(text)
    first = next((line for line in lines if line.strip()), "")
    if path.suffix.lower() == ".jsonl" or first.lstrip().startswith("{"):
        for number, line in enumerate(lines, start=1):
            where = f"{path}:{number}"
            yield where, _require(_parse_json(line, where), "text", str, where) if line.strip() else ""
    elif unit == "file":
        yield str(path), text
    else:
        yield from ((f"{path}:{number}", line) for number, line in enumerate(lines, start=1))


def _eval_key(text: str) -> str:
    """A text with all whitespace removed: what a transfer text is compared to dev/test by."""
    return "".join(text.split())


def read_transfer(spec: Spec, encoding: str | None = None, limit: int | None = None,
                  eval_texts: Iterable[str] = (), unit: str | None = None,
                  ) -> tuple[list[Document], dict]:
    """The transfer documents of ``spec`` (see the module docstring for every rule) and their
    counts: ``files`` (the paths read), ``documents``, ``skipped_empty``, ``empty_files``,
    ``duplicates``, ``dropped_eval_duplicates`` (equal to one of ``eval_texts``), ``limited``."""
    unit = unit or "line"
    if unit not in UNITS:
        raise ConfigError(f"data.unlabeled_unit={unit!r}: expected one of {', '.join(UNITS)}")
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigError(f"data.unlabeled_encoding={encoding!r}: unknown codec") from None
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ConfigError(f"data.limit_unlabeled={limit!r}: expected a count >= 0 or null")
    files = transfer_files(spec)
    held_out = {_eval_key(text) for text in eval_texts}
    counts = {"files": [str(f) for f in files], "documents": 0, "skipped_empty": 0,
              "empty_files": 0, "duplicates": 0, "dropped_eval_duplicates": 0, "limited": 0}
    docs: list[Document] = []
    seen: set[str] = set()
    for path in files:
        texts = 0
        for where, text in _units(path, unit, encoding):
            if not text.strip():
                counts["skipped_empty"] += 1
                continue
            texts += 1
            if _eval_key(text) in held_out:
                counts["dropped_eval_duplicates"] += 1
            elif text in seen:
                counts["duplicates"] += 1
            else:
                seen.add(text)
                docs.append(_document(text, [], where))
        counts["empty_files"] += texts == 0
    if limit is not None:
        counts["limited"] = max(0, len(docs) - limit)
        docs = docs[:limit]
    counts["documents"] = len(docs)
    summary = (f"{counts['skipped_empty']} empty, {counts['duplicates']} duplicates, "
               f"{counts['dropped_eval_duplicates']} equal to a dev/test text, "
               f"{counts['limited']} beyond data.limit_unlabeled")
    log.info("transfer text: %d documents from %d file(s) (left out: %s; %d file(s) without text)",
             len(docs), len(files), summary, counts["empty_files"])
    if not docs and limit != 0:
        where = str(spec) if isinstance(spec, (str, os.PathLike)) else ", ".join(map(str, spec))
        raise DataError(f"data.unlabeled={where}: no transfer documents left ({summary})")
    return docs, counts
