"""Readers for the supported data formats, and the canonical JSONL writer.

Every reader takes a path and returns a list of :class:`Document` with character-offset entities
(end exclusive, sorted, de-duplicated). Anything malformed raises a one-line :class:`DataError`
that names the file and the line (or record) and field at fault.

Formats (see :data:`READERS`):

* ``columns`` -- CoNLL-style token-per-line files with one or more tag columns (BIO/BIOES/BMES);
* ``cmeee`` -- CMeEE/CBLUE: one JSON list of ``{"text", "entities": [{"start_idx", "end_idx",
  "type", "entity"}]}`` with inclusive ``end_idx``;
* ``cluener`` -- CLUENER2020 JSON lines ``{"text", "label": {type: {mention: [[start, end]]}}}``
  with inclusive ends;
* ``jsonl`` -- the canonical format ``{"text", "entities": [{"start", "end", "type"}]}`` per line;
* ``text`` -- unlabeled text, one document per line (plain text, or JSON lines with "text").
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from distill.data.document import Document, Entity, join_documents
from distill.errors import ConfigError, DataError

logger = logging.getLogger("distill")

SCHEMES = ("auto", "iob1", "iob2", "bioes", "bmes")
_BIOES_FAMILY = ("bioes", "bmes")
# Prefixes only the BIOES family uses, and how they map onto B/I/E/S.
_BIOES_ONLY = frozenset("ESMLU")
_ALIASES = {"M": "I", "L": "E", "U": "S"}

Span = tuple[int, int, str]
Where = Callable[[int], str]


# --------------------------------------------------------------------------------------------
# Shared helpers


def _error(where: str, message: str) -> DataError:
    """A one-line ``DataError("where: message")``."""
    return DataError(f"{where}: {message}".replace("\r", "\\r").replace("\n", "\\n"))


def _read_text(path: str | os.PathLike, encoding: str | None = None, hint: str = "") -> str:
    """The file decoded as UTF-8, or with the codec ``encoding`` (BOM dropped, CRLF -> LF);
    DataError if missing or not decodable, naming the line and byte offset, then ``hint``."""
    file = Path(path)
    if not file.is_file():
        raise _error(str(path), "file not found" if not file.exists() else "not a regular file")
    data = file.read_bytes()
    try:
        text = data.decode(encoding or "utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end]
        raise _error(
            f"{path}:{line}",
            f"not valid {encoding or 'UTF-8'} ({exc.reason}: byte {bad!r} at offset {exc.start})"
            f"{hint}",
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def _lines(text: str) -> list[str]:
    """Lines split on "\\n" only (not other Unicode breaks), minus a last empty one."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _document(text: str, entities: Iterable[Entity], source: str) -> Document:
    return Document(text=text, entities=sorted(set(entities)), source=source)


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error(where, f"invalid JSON ({exc.msg} at column {exc.colno})") from None


def _require(record: Any, key: str, kind: type, where: str, field: str = "") -> Any:
    """``record[key]``, checked to be an object with that key holding a ``kind`` value."""
    name = f"{field}.{key}" if field else key
    if not isinstance(record, dict):
        found = type(record).__name__
        raise _error(where, f"{field or 'record'} must be a JSON object, found {found}")
    if key not in record:
        found = ", ".join(map(str, record)) or "none"
        raise _error(where, f"missing field '{name}' (found keys: {found})")
    value = record[key]
    # bool is a subclass of int but never a valid offset.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _error(where, f"field '{name}' must be {kind.__name__}, found {value!r}")
    return value


def _list_field(record: dict, key: str, where: str) -> list:
    """``record[key]`` as a list; absent or null means empty."""
    value = record.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _error(where, f"field '{key}' must be a list, found {value!r}")
    return value


def _entity(text: str, start: int, end: int, type_: str, where: str, field: str) -> Entity:
    """An Entity for ``text[start:end]``, checked to be a non-empty in-range span with a type."""
    if end <= start:
        raise _error(where, f"{field}: reversed or empty span")
    if start < 0 or end > len(text):
        raise _error(where, f"{field}: span out of range for text of length {len(text)}")
    if not type_:
        raise _error(where, f"{field}: empty entity type")
    return Entity(start, end, type_)


def _check_surface(text: str, entity: Entity, surface: Any, where: str, field: str) -> None:
    if text[entity.start : entity.end] != surface:
        raise _error(
            where,
            f"{field}: text[{entity.start}:{entity.end}] is {text[entity.start : entity.end]!r}, "
            f"not {surface!r}",
        )


# --------------------------------------------------------------------------------------------
# Tag schemes


@functools.lru_cache(maxsize=4096)
def _split_tag(tag: str) -> tuple[str, str] | None:
    """``(prefix, type)`` of a ``PREFIX-TYPE`` tag, ``("O", "")`` for O, None if malformed."""
    if tag == "O":
        return "O", ""
    prefix, dash, type_ = tag.partition("-")
    if dash and type_ and prefix in ("B", "I", "E", "S", "M", "L", "U"):
        return prefix, type_
    return None


def _parse_tag(tag: str, where: Where, i: int) -> tuple[str, str]:
    parsed = _split_tag(tag)
    if parsed is None:
        raise _error(where(i), f"invalid tag {tag!r} (expected O or PREFIX-TYPE, e.g. B-PER)")
    return parsed


def _resolve_scheme(scheme: str, sequences: Sequence[tuple[Sequence[str], Where]]) -> str:
    """The concrete scheme for ``scheme`` given all tag sequences of a file.

    "auto": BIOES if any E-/S-/M-/L-/U- tag appears, else IOB2 if it decodes cleanly, else IOB1.
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown tag scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    if scheme != "auto":
        return scheme
    for tags, where in sequences:
        for i, tag in enumerate(tags):
            if _parse_tag(tag, where, i)[0] in _BIOES_ONLY:
                return "bioes"
    for tags, where in sequences:
        problems: list[str] = []
        _decode(tags, "iob2", where, problems)
        if problems:
            logger.info("read as IOB1 because I- tags start entities, e.g. %s", problems[0])
            return "iob1"
    return "iob2"


def _decode(
    tags: Sequence[str], scheme: str, where: Where, problems: list[str] | None = None
) -> list[Span]:
    """Token spans of one tag sequence under a concrete scheme; the one decoder for all schemes.

    B-X starts an entity and I-X continues an open X entity under every scheme. IOB1: an I-X
    without one starts an entity (IOB2: error). BIOES/BMES (M = I, L = E, U = S accepted in both):
    an entity must be B-X (I-X)* E-X or S-X, anything else is an error. With ``problems`` given,
    sequence errors are collected there and repaired IOB1-style instead of raised: an open entity
    ends where the next tag does not continue it, and a stray I-X/E-X starts an entity.
    """
    bioes = scheme in _BIOES_FAMILY
    spans: list[Span] = []
    start, kind = -1, ""  # the open entity, if start >= 0

    def invalid(i: int, message: str) -> None:
        error = _error(where(i), f"{message} (scheme {scheme})" if bioes else message)
        if problems is None:
            raise error
        problems.append(str(error))

    for i, tag in enumerate(tags):
        prefix, type_ = _parse_tag(tag, where, i)
        if bioes:
            prefix = _ALIASES.get(prefix, prefix)
        elif prefix in _BIOES_ONLY:
            message = f"tag {tag!r} is not valid {scheme.upper()} (use scheme=bioes or bmes)"
            raise _error(where(i), message)
        if start >= 0 and type_ == kind and prefix in ("I", "E"):  # continues the open entity
            if prefix == "E":
                spans.append((start, i + 1, kind))
                start = -1
            continue
        if start >= 0:  # anything else ends it
            if bioes:
                invalid(
                    start, f"{tags[start]} is not closed by an E-{kind} before {tag} at {where(i)}"
                )
            spans.append((start, i, kind))
            start = -1
        if prefix in ("I", "E"):  # without an open entity of its type
            if scheme == "iob2":
                invalid(
                    i,
                    f"{tag} without a preceding B-{type_} "
                    "(not valid IOB2; use scheme=iob1 to read it as IOB1)",
                )
            elif bioes:
                invalid(i, f"{tag} without an open B-{type_}")
        if prefix in ("B", "I"):
            start, kind = i, type_
        elif prefix in ("S", "E"):
            spans.append((i, i + 1, type_))
    if start >= 0:
        if bioes:
            invalid(start, f"{tags[start]} is not closed by an E-{kind} before the sentence ends")
        spans.append((start, len(tags), kind))
    return spans


def tags_to_spans(tags: list[str], scheme: str, where: Where) -> tuple[list[Span], str]:
    """Token-index spans ``(start, end_exclusive, type)`` of a tag sequence, and the scheme used.

    ``scheme`` is one of :data:`SCHEMES`; ``where(i)`` names tag ``i`` ("file:line") in errors.
    """
    used = _resolve_scheme(scheme, [(tags, where)])
    return _decode(tags, used, where), used


# --------------------------------------------------------------------------------------------
# Readers


def read_columns(
    path: str | os.PathLike,
    tag_columns: Sequence[int] | int = (-1,),
    join: str = " ",
    scheme: str = "auto",
    strict: bool = True,
    documents: bool = False,
    sentence_join: str = "\n",
) -> list[Document]:
    """CoNLL-style columns: token first, tags in ``tag_columns`` (spans of all columns unioned).

    Sentences are separated by blank lines; ``-DOCSTART-`` blocks are skipped. The separator (tab
    or spaces) and the number of columns are fixed by the first data line. Tokens are joined with
    ``join`` ("" for character-per-line Chinese). The scheme is resolved once for the whole file.
    ``strict=False`` repairs invalid tag sequences (see :func:`_decode`) with one warning per file
    instead of raising, for published files with a few broken entities (e.g. resume_ner train).
    ``documents=True`` returns one document per ``-DOCSTART-`` block instead of one per sentence,
    its sentences joined with ``sentence_join`` (so the model trains on multi-sentence windows,
    as long documents are predicted); the file must have ``-DOCSTART-`` lines.
    """
    if isinstance(tag_columns, int):
        tag_columns = (tag_columns,)
    if not tag_columns or not all(type(c) is int for c in tag_columns):
        raise ConfigError(f"tag_columns must be a non-empty list of column indexes: {tag_columns}")
    if not isinstance(join, str):
        raise ConfigError(f"join must be a string, got {join!r}")
    if not isinstance(sentence_join, str):
        raise ConfigError(f"sentence_join must be a string, got {sentence_join!r}")
    sentences, doc_ids = _column_sentences(path)  # [(line numbers, rows)], the DOCSTART block of each
    if not sentences:
        return []
    if documents and doc_ids[-1] < 0:
        raise _error(f"{path}:1", "documents=true needs -DOCSTART- lines between documents, found none")
    width = len(sentences[0][1][0])
    if any(not -width <= c < width or c % width == 0 for c in tag_columns):
        raise _error(
            f"{path}:{sentences[0][0][0]}",
            f"tag_columns {list(tag_columns)} do not fit {width} columns "
            "(column 0 is the token; tags must be in columns 1..N-1)",
        )
    columns = sorted({c % width for c in tag_columns})

    def where_in(numbers: list[int]) -> Where:
        return lambda i: f"{path}:{numbers[i]}"

    tagged = [
        (numbers, rows, [[row[c] for row in rows] for c in columns], where_in(numbers))
        for numbers, rows in sentences
    ]
    used = _resolve_scheme(scheme, [(tags, where) for _, _, seqs, where in tagged for tags in seqs])

    problems: list[str] | None = None if strict else []
    out = []
    for numbers, rows, seqs, where in tagged:
        tokens = [row[0] for row in rows]
        starts, offset = [], 0
        for token in tokens:
            starts.append(offset)
            offset += len(token) + len(join)
        entities = [
            Entity(starts[s], starts[e - 1] + len(tokens[e - 1]), type_)
            for tags in seqs
            for s, e, type_ in _decode(tags, used, where, problems)
        ]
        out.append(_document(join.join(tokens), entities, f"{path}:{numbers[0]}"))
    if problems:
        logger.warning(
            "%s: repaired %d tag sequence error(s) (strict=False); first: %s",
            path,
            len(problems),
            problems[0],
        )
    return _join_blocks(out, doc_ids, sentence_join) if documents else out


def _join_blocks(sentences: list[Document], block_ids: list[int], sep: str) -> list[Document]:
    """Consecutive sentences with the same block id as one document, offsets shifted."""
    runs = groupby(zip(block_ids, sentences), key=lambda pair: pair[0])
    return [join_documents([sentence for _, sentence in run], sep) for _, run in runs]


def _column_sentences(
    path: str | os.PathLike,
) -> tuple[list[tuple[list[int], list[list[str]]]], list[int]]:
    """Blank-line separated blocks of split rows and their line numbers, minus DOCSTART blocks;
    and for each, how many DOCSTART blocks came before it minus one (-1 before the first)."""
    sentences: list[tuple[list[int], list[list[str]]]] = []
    doc_ids: list[int] = []
    numbers: list[int] = []
    rows: list[list[str]] = []
    in_docstart = False
    doc = -1
    separator = width = None
    for number, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            if rows:
                sentences.append((numbers, rows))
                doc_ids.append(doc)
            numbers, rows, in_docstart = [], [], False
            continue
        if in_docstart or line.startswith("-DOCSTART-"):
            doc += 0 if in_docstart else 1
            in_docstart = True
            continue
        where = f"{path}:{number}"
        if separator is None:
            separator = "tab" if "\t" in line else "space"
        if separator == "tab":
            row = line.rstrip(" ").split("\t")
        elif "\t" in line:
            message = f"expected {width} space-separated columns, found a tab (mixed separators)"
            raise _error(where, message)
        else:
            row = re.split(r" +", line.strip(" "))
        width = width or len(row)
        if len(row) != width:
            hint = " (mixed separators?)" if separator == "tab" and " " in line else ""
            message = f"expected {width} {separator}-separated columns, found {len(row)}{hint}"
            raise _error(where, message)
        if not all(row):
            raise _error(where, f"empty column in {line!r}")
        numbers.append(number)
        rows.append(row)
    if rows:
        sentences.append((numbers, rows))
        doc_ids.append(doc)
    return sentences, doc_ids


def read_cmeee(path: str | os.PathLike) -> list[Document]:
    """CMeEE: a JSON list of ``{"text", "entities": [{"start_idx", "end_idx" (inclusive), "type",
    "entity"}]}``; records without "entities" (the test split) have none.

    Sources and error locations are "path#index" (0-based record index).
    """
    text = _read_text(path)
    if not text.strip():
        return []
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error(f"{path}:{exc.lineno}:{exc.colno}", f"invalid JSON ({exc.msg})") from None
    if not isinstance(records, list):
        raise _error(str(path), f"expected a JSON list of records, found {type(records).__name__}")
    documents = []
    for index, record in enumerate(records):
        where = f"{path}#{index}"
        body = _require(record, "text", str, where)
        entities = _listed_entities(record, body, where, "start_idx", "end_idx", inclusive_end=True,
                                    surface="entity")
        documents.append(_document(body, entities, where))
    return documents


def read_cluener(path: str | os.PathLike) -> list[Document]:
    """CLUENER2020 JSON lines ``{"text", "label": {type: {mention: [[start, end], ...]}}}`` with
    inclusive ends; lines without "label" (the test split) have none. Blank lines are skipped."""
    documents = []
    for number, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        record = _parse_json(line, where)
        body = _require(record, "text", str, where)
        label = record.get("label") or {}
        if not isinstance(label, dict):
            raise _error(where, f"field 'label' must be an object, found {label!r}")
        entities = []
        for type_, mentions in label.items():
            if not isinstance(mentions, dict):
                message = f"label[{type_!r}] must be an object of spans by mention: {mentions!r}"
                raise _error(where, message)
            for mention, spans in mentions.items():
                field = f"label[{type_!r}][{mention!r}]"
                if not isinstance(spans, list):
                    message = f"{field} must be a list of [start, end] pairs, found {spans!r}"
                    raise _error(where, message)
                for span in spans:
                    if not (isinstance(span, list) and [type(v) for v in span] == [int, int]):
                        message = f"{field}: expected [start, end] integers, found {span!r}"
                        raise _error(where, message)
                    entity = _entity(body, span[0], span[1] + 1, type_, where, f"{field} {span}")
                    _check_surface(body, entity, mention, where, field)
                    entities.append(entity)
        documents.append(_document(body, entities, where))
    return documents


def read_jsonl(path: str | os.PathLike) -> list[Document]:
    """The canonical format: ``{"text", "entities": [{"start", "end" (exclusive), "type"}]}`` per
    line. "entities" is optional, other keys are ignored, blank lines are skipped."""
    documents = []
    for number, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        record = _parse_json(line, where)
        body = _require(record, "text", str, where)
        entities = _listed_entities(record, body, where, "start", "end", inclusive_end=False)
        documents.append(_document(body, entities, where))
    return documents


def _listed_entities(record: dict, body: str, where: str, start_key: str, end_key: str,
                     inclusive_end: bool, surface: str | None = None) -> list:
    """The record's ``entities`` list of ``{start_key, end_key, "type"}`` objects as entities
    (an inclusive end is made exclusive); with ``surface``, an item's mention text under that key,
    when present, must be the text it spans."""
    entities = []
    for k, item in enumerate(_list_field(record, "entities", where)):
        field = f"entities[{k}]"
        start = _require(item, start_key, int, where, field)
        end = _require(item, end_key, int, where, field)
        type_ = _require(item, "type", str, where, field)
        what = f"{field} {start_key}={start}, {end_key}={end}"
        entity = _entity(body, start, end + 1 if inclusive_end else end, type_, where, what)
        if surface is not None and surface in item:
            _check_surface(body, entity, item[surface], where, f"{field}.{surface}")
        entities.append(entity)
    return entities


def iter_text(path: str | os.PathLike) -> Iterator[Document]:
    """:func:`read_text`, one line at a time: the file is read line by line (memory does not grow
    with it), with the same checks and messages (UTF-8 errors name the line and the byte offset
    in the file; a BOM is dropped, CRLF read as LF). Errors come when the bad line is reached."""
    file = Path(path)
    if not file.is_file():
        raise _error(str(path), "file not found" if not file.exists() else "not a regular file")
    as_json = False
    with open(file, "rb") as handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:  # with its "\n": a sequence cut by it fails exactly as in the whole file
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.end]
                raise _error(where, f"not valid UTF-8 ({exc.reason}: byte {bad!r} at offset "
                                    f"{offset + exc.start})") from None
            offset += len(raw)
            line = line.removesuffix("\n").removesuffix("\r") if line.endswith("\n") else line
            if number == 1:
                line = line.removeprefix("\ufeff")
                as_json = line.lstrip().startswith("{")
            if not line.strip():
                raise _error(where, "empty line (unlabeled text files hold one document per line)")
            body = _require(_parse_json(line, where), "text", str, where) if as_json else line
            yield _document(body, [], where)


def read_text(path: str | os.PathLike) -> list[Document]:
    """Unlabeled text, one document per line: plain text, or (when the first line starts with "{")
    JSON lines whose "text" field is used and whose entities are ignored. Empty lines are errors.
    :func:`iter_text` reads the same one line at a time."""
    return list(iter_text(path))


def write_jsonl(docs: Iterable[Document], path: str | os.PathLike) -> None:
    """Write documents as canonical JSONL (sorted, de-duplicated entities), atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "x", encoding="utf-8", newline="\n") as out:
            for doc in docs:
                spans = sorted(set(doc.entities))
                entities = [{"start": e.start, "end": e.end, "type": e.type} for e in spans]
                record = {"text": doc.text, "entities": entities}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


READERS: dict[str, Callable[..., list[Document]]] = {
    "columns": read_columns,
    "cmeee": read_cmeee,
    "cluener": read_cluener,
    "jsonl": read_jsonl,
    "text": read_text,
}


def read_split(fmt: str, path: str | os.PathLike, **options: Any) -> list[Document]:
    """Read one split with the reader for ``fmt``; an empty split is an error."""
    reader = READERS.get(fmt)
    if reader is None:
        raise DataError(f"{path}: unknown data format {fmt!r} (known: {', '.join(READERS)})")
    try:
        inspect.signature(reader).bind(path, **options)
    except TypeError:
        allowed = ", ".join(list(inspect.signature(reader).parameters)[1:]) or "none"
        raise ConfigError(
            f"format {fmt!r} does not take options {sorted(options)} (it takes: {allowed})"
        ) from None
    documents = reader(path, **options)
    if not documents:
        raise _error(str(path), "no documents (empty split)")
    return documents
