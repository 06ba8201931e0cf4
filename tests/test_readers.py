"""Tests for distill.data.readers: every format and tag scheme, malformed input, the real data."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.data.document import Document, Entity
from distill.data.readers import (
    READERS,
    read_cluener,
    read_cmeee,
    read_columns,
    read_jsonl,
    read_split,
    read_text,
    tags_to_spans,
    write_jsonl,
)
from distill.errors import ConfigError, DataError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@contextmanager
def data_error(match: str):
    """Expect a one-line DataError matching ``match``."""
    with pytest.raises(DataError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


def at(path: Path, suffix: str = "") -> str:
    """Regex for an error location: the escaped path plus ``suffix`` (e.g. ":3" or "#0")."""
    return re.escape(f"{path}{suffix}: ")


def surfaces(doc: Document) -> list[tuple[str, str]]:
    return [(doc.surface(e), e.type) for e in doc.entities]


def where(i: int) -> str:
    return f"f.txt:{i + 1}"


# --------------------------------------------------------------------------------------------
# columns


def test_columns_conll_style(tmp_path):
    path = write(
        tmp_path,
        "conll.txt",
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\ncall NN I-NP O\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n",
    )
    docs = read_columns(path)
    assert [d.text for d in docs] == ["EU rejects German call", "Peter Blackburn"]
    assert surfaces(docs[0]) == [("EU", "ORG"), ("German", "MISC")]
    assert surfaces(docs[1]) == [("Peter Blackburn", "PER")]
    assert [d.source for d in docs] == [f"{path}:3", f"{path}:9"]


def test_columns_documents_join_the_sentences_of_each_docstart_block(tmp_path):
    path = write(
        tmp_path,
        "conll.txt",
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n"
        "-DOCSTART- -X- -X- O\n\n"
        "In IN B-PP O\nBonn NNP B-NP B-LOC\n",
    )
    sentences = read_columns(path)
    docs = read_columns(path, documents=True)
    assert [d.text for d in docs] == ["EU rejects\nPeter Blackburn", "In Bonn"]
    assert surfaces(docs[0]) == [("EU", "ORG"), ("Peter Blackburn", "PER")]
    assert surfaces(docs[1]) == [("Bonn", "LOC")]
    assert [d.source for d in docs] == [sentences[0].source, sentences[2].source]
    [first, _] = read_columns(path, documents=True, sentence_join=" ")
    assert first.text == "EU rejects Peter Blackburn" and surfaces(first)[1] == ("Peter Blackburn", "PER")
    # Through the data config's reader options, as `data.options.documents=true` passes them.
    assert read_split("columns", path, documents=True) == docs


def test_columns_documents_need_docstart_lines(tmp_path):
    path = write(tmp_path, "plain.txt", "Bonn B-LOC\nist O\n\nBerlin B-LOC\n")
    with data_error(at(path, ":1") + "documents=true needs -DOCSTART- lines"):
        read_columns(path, documents=True)


def test_columns_germeval_nested_union(tmp_path):
    path = write(
        tmp_path,
        "germ.iob2",
        "Bayern\tB-ORG\tB-LOC\nMünchen\tI-ORG\tB-LOC\nist\tO\tO\nin\tO\tO\nBerlin\tB-LOC\tB-LOC\n",
    )
    [doc] = read_columns(path, tag_columns=[1, 2])
    assert doc.text == "Bayern München ist in Berlin"
    # Nested spans from both columns; "Berlin" LOC appears in both columns and is kept once.
    assert surfaces(doc) == [
        ("Bayern", "LOC"),
        ("Bayern München", "ORG"),
        ("München", "LOC"),
        ("Berlin", "LOC"),
    ]
    assert read_columns(path, tag_columns=[2, 1]) == [doc]
    [inner] = read_columns(path)  # default: last column only
    assert surfaces(inner) == [("Bayern", "LOC"), ("München", "LOC"), ("Berlin", "LOC")]


def test_columns_chinese_bmes_joined_without_spaces(tmp_path):
    path = write(
        tmp_path, "resume.bmes", "吴 B-NAME\n重 M-NAME\n阳 E-NAME\n， O\n京 S-LOC\n\n我 O\n"
    )
    docs = read_columns(path, join="")
    assert [d.text for d in docs] == ["吴重阳，京", "我"]
    assert docs[0].entities == [Entity(0, 3, "NAME"), Entity(4, 5, "LOC")]
    assert surfaces(docs[0]) == [("吴重阳", "NAME"), ("京", "LOC")]


def test_columns_multichar_join_offsets(tmp_path):
    path = write(tmp_path, "x.txt", "New B-LOC\nYork I-LOC\nis O\nbig B-ADJ\n")
    [doc] = read_columns(path, join=" | ")
    assert doc.text == "New | York | is | big"
    assert surfaces(doc) == [("New | York", "LOC"), ("big", "ADJ")]


@pytest.mark.parametrize(
    "content, match",
    [
        ("a\tO\nb O\n", r":2: expected 2 tab-separated columns, found 1 \(mixed separators\?\)"),
        ("a O\nb\tO\n", r":2: expected 2 space-separated columns, found a tab"),
        ("a NN O\nb O\n", r":2: expected 3 space-separated columns, found 2"),
        ("a\tO\tO\n\nb\tO\n", r":3: expected 3 tab-separated columns, found 2"),
        ("a O\nb PER\n", r":2: invalid tag 'PER' \(expected O or PREFIX-TYPE"),
        ("a O\nb b-PER\n", r":2: invalid tag 'b-PER'"),
        ("a O\nb B-\n", r":2: invalid tag 'B-'"),
        ("a\t\tO\n", r":1: empty column"),
    ],
)
def test_columns_malformed(tmp_path, content, match):
    path = write(tmp_path, "bad.txt", content)
    with data_error(re.escape(str(path)) + match):
        read_columns(path, tag_columns=[-1])


def test_columns_tag_column_must_fit(tmp_path):
    path = write(tmp_path, "x.txt", "a O\n")
    for columns in ([2], [0], [-2], [1, 5]):
        with data_error(at(path, ":1") + r"tag_columns .* do not fit 2 columns"):
            read_columns(path, tag_columns=columns)
    with pytest.raises(ConfigError):
        read_columns(path, tag_columns=[])
    with pytest.raises(ConfigError, match="unknown tag scheme 'bio'"):
        read_columns(path, scheme="bio")


def test_columns_scheme_is_resolved_per_file(tmp_path, caplog):
    # Sentence 2 only is IOB1-style, so the whole file is read as IOB1, with one info line.
    path = write(tmp_path, "x.txt", "a B-PER\nb I-PER\n\nc I-LOC\nd O\n\ne I-ORG\n")
    with caplog.at_level(logging.INFO, logger="distill"):
        docs = read_columns(path)
    assert [surfaces(d) for d in docs] == [[("a b", "PER")], [("c", "LOC")], [("e", "ORG")]]
    records = [r for r in caplog.records if "IOB1" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert f"{path}:4" in records[0].getMessage()
    with data_error(
        at(path, ":4") + r"I-LOC without a preceding B-LOC \(not valid IOB2; use scheme=iob1"
    ):
        read_columns(path, scheme="iob2")


def test_columns_strict_false_repairs_broken_entities(tmp_path, caplog):
    # resume_ner train has ORG entities cut in two by a blank line; strict reading names the line.
    path = write(tmp_path, "x.bmes", "新 B-ORG\n疆 M-ORG\n\n局 M-ORG\n院 E-ORG\n士 S-TITLE\n")
    with data_error(at(path, ":1") + r"B-ORG is not closed by an E-ORG before the sentence ends"):
        read_columns(path, join="")
    with caplog.at_level(logging.WARNING, logger="distill"):
        docs = read_columns(path, join="", strict=False)
    assert [surfaces(d) for d in docs] == [[("新疆", "ORG")], [("局院", "ORG"), ("士", "TITLE")]]
    [record] = caplog.records
    assert "repaired 2 tag sequence error(s)" in record.getMessage()


# --------------------------------------------------------------------------------------------
# tag schemes


@pytest.mark.parametrize(
    "scheme, tags, spans",
    [
        (
            "iob2",
            ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"],
            [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC")],
        ),
        ("iob2", ["B-PER", "B-ORG", "I-ORG"], [(0, 1, "PER"), (1, 3, "ORG")]),
        (
            "iob1",
            ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"],
            [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC"), (5, 6, "ORG")],
        ),
        ("iob1", ["B-PER", "I-PER", "I-LOC"], [(0, 2, "PER"), (2, 3, "LOC")]),
        (
            "bioes",
            ["B-PER", "I-PER", "E-PER", "S-LOC", "O", "B-ORG", "E-ORG"],
            [(0, 3, "PER"), (3, 4, "LOC"), (5, 7, "ORG")],
        ),
        ("bioes", ["B-PER", "L-PER", "U-LOC", "O"], [(0, 2, "PER"), (2, 3, "LOC")]),
        ("bmes", ["B-NAME", "M-NAME", "E-NAME", "S-LOC", "O"], [(0, 3, "NAME"), (3, 4, "LOC")]),
        ("iob2", [], []),
        ("bioes", ["O", "O"], []),
    ],
)
def test_tags_to_spans(scheme, tags, spans):
    assert tags_to_spans(tags, scheme, where) == (spans, scheme)


@pytest.mark.parametrize(
    "tags, scheme, spans",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], "iob2", [(0, 2, "PER"), (3, 4, "LOC")]),
        (["O", "I-PER", "I-PER", "B-PER"], "iob1", [(1, 3, "PER"), (3, 4, "PER")]),
        (["S-PER", "B-LOC", "E-LOC"], "bioes", [(0, 1, "PER"), (1, 3, "LOC")]),
        (["B-LOC", "M-LOC", "E-LOC"], "bioes", [(0, 3, "LOC")]),
        (["B-LOC", "L-LOC", "U-PER"], "bioes", [(0, 2, "LOC"), (2, 3, "PER")]),
        (["O"], "iob2", []),
    ],
)
def test_auto_detects_scheme(tags, scheme, spans, caplog):
    with caplog.at_level(logging.INFO, logger="distill"):
        assert tags_to_spans(tags, "auto", where) == (spans, scheme)
    iob1_logs = [
        r for r in caplog.records if "read as IOB1 because I- tags start entities" in r.getMessage()
    ]
    assert len(iob1_logs) == (scheme == "iob1")


@pytest.mark.parametrize(
    "scheme, tags, match",
    [
        (
            "iob2",
            ["O", "I-ORG"],
            r"f\.txt:2: I-ORG without a preceding B-ORG "
            r"\(not valid IOB2; use scheme=iob1 to read it as IOB1\)",
        ),
        ("iob2", ["B-PER", "I-ORG"], r"f\.txt:2: I-ORG without a preceding B-ORG"),
        ("iob2", ["E-PER"], r"f\.txt:1: tag 'E-PER' is not valid IOB2"),
        ("iob1", ["O", "S-PER"], r"f\.txt:2: tag 'S-PER' is not valid IOB1"),
        (
            "bioes",
            ["B-PER", "O"],
            r"f\.txt:1: B-PER is not closed by an E-PER before O at f\.txt:2 \(scheme bioes\)",
        ),
        (
            "bioes",
            ["B-PER", "I-PER"],
            r"f\.txt:1: B-PER is not closed by an E-PER before the sentence ends",
        ),
        (
            "bioes",
            ["B-PER", "I-LOC", "E-LOC"],
            r"f\.txt:1: B-PER is not closed .* before I-LOC at f\.txt:2",
        ),
        ("bioes", ["B-PER", "S-PER"], r"f\.txt:1: B-PER is not closed"),
        ("bioes", ["B-PER", "B-PER", "E-PER"], r"f\.txt:1: B-PER is not closed"),
        ("bioes", ["O", "E-PER"], r"f\.txt:2: E-PER without an open B-PER \(scheme bioes\)"),
        ("bioes", ["I-PER", "E-PER"], r"f\.txt:1: I-PER without an open B-PER"),
        ("bioes", ["B-PER", "E-PER", "E-PER"], r"f\.txt:3: E-PER without an open B-PER"),
        ("bmes", ["O", "M-PER", "E-PER"], r"f\.txt:2: M-PER without an open B-PER \(scheme bmes\)"),
        ("bmes", ["B-PER", "M-LOC", "E-LOC"], r"f\.txt:1: B-PER is not closed"),
        ("auto", ["S-PER", "I-PER"], r"f\.txt:2: I-PER without an open B-PER \(scheme bioes\)"),
        ("auto", ["O", "X-PER"], r"f\.txt:2: invalid tag 'X-PER'"),
        ("iob2", ["O", "PER"], r"f\.txt:2: invalid tag 'PER'"),
    ],
)
def test_invalid_tag_sequences(scheme, tags, match):
    with data_error(match):
        tags_to_spans(tags, scheme, where)


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(
        ConfigError, match="unknown tag scheme 'bilou'.*auto, iob1, iob2, bioes, bmes"
    ):
        tags_to_spans(["O"], "bilou", where)


# --------------------------------------------------------------------------------------------
# cmeee


def test_cmeee_nested_and_unlabelled(tmp_path):
    records = [
        {
            "text": "肺内病变程度",
            "entities": [
                {"start_idx": 0, "end_idx": 3, "type": "sym", "entity": "肺内病变"},
                {"start_idx": 0, "end_idx": 0, "type": "bod", "entity": "肺"},
                {"start_idx": 0, "end_idx": 3, "type": "dis", "entity": "肺内病变"},
                {"start_idx": 0, "end_idx": 3, "type": "dis", "entity": "肺内病变"},
                {"start_idx": 5, "end_idx": 5, "type": "x"},
            ],
        },
        {"text": "无实体"},
    ]
    path = write(tmp_path, "dev.json", json.dumps(records, ensure_ascii=False, indent=2))
    docs = read_cmeee(path)
    assert docs[0].entities == [
        Entity(0, 1, "bod"),
        Entity(0, 4, "dis"),
        Entity(0, 4, "sym"),
        Entity(5, 6, "x"),
    ]
    assert surfaces(docs[0])[:2] == [("肺", "bod"), ("肺内病变", "dis")]
    assert docs[1] == Document("无实体", [], f"{path}#1")
    assert docs[0].source == f"{path}#0"


def cmeee_record(**entity) -> str:
    return json.dumps([{"text": "ok", "entities": []}, {"text": "abc", "entities": [entity]}])


@pytest.mark.parametrize(
    "content, match",
    [
        ('[\n  {"text": "a",\n   "entities": [}\n]', r":3:\d+: invalid JSON \("),
        ('{"text": "a"}', r": expected a JSON list of records, found dict"),
        ('["a"]', r"#0: record must be a JSON object, found str"),
        ('[{"entities": []}]', r"#0: missing field 'text' \(found keys: entities\)"),
        ('[{"text": 5}]', r"#0: field 'text' must be str, found 5"),
        ('[{"text": "a", "entities": {}}]', r"#0: field 'entities' must be a list"),
        (
            cmeee_record(start_idx=1, end_idx=3, type="x"),
            r"#1: entities\[0\] start_idx=1, end_idx=3: span out of range",
        ),
        (
            cmeee_record(start_idx=-1, end_idx=0, type="x"),
            r"#1: entities\[0\] start_idx=-1, end_idx=0: span out of range",
        ),
        (
            cmeee_record(start_idx=2, end_idx=0, type="x"),
            r"#1: entities\[0\] start_idx=2, end_idx=0: reversed",
        ),
        (
            cmeee_record(start_idx=0, end_idx=1, type="x", entity="bc"),
            r"#1: entities\[0\]\.entity: text\[0:2\] is 'ab', not 'bc'",
        ),
        (
            cmeee_record(start=0, end_idx=1, type="x"),
            r"#1: missing field 'entities\[0\]\.start_idx'",
        ),
        (
            cmeee_record(start_idx=0, end_idx=1, label="x"),
            r"#1: missing field 'entities\[0\]\.type'",
        ),
        (
            cmeee_record(start_idx="0", end_idx=1, type="x"),
            r"#1: field 'entities\[0\]\.start_idx' must be int",
        ),
        (cmeee_record(start_idx=0, end_idx=1, type=""), r"#1: entities\[0\] .*: empty entity type"),
    ],
)
def test_cmeee_malformed(tmp_path, content, match):
    path = write(tmp_path, "dev.json", content)
    with data_error(re.escape(str(path)) + match):
        read_cmeee(path)


# --------------------------------------------------------------------------------------------
# cluener


def test_cluener_labelled_and_unlabelled(tmp_path):
    lines = [
        {
            "text": "浙商银行企业信贷部叶老桂博士",
            "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}},
        },
        {
            "text": "银行银行",
            "label": {"org": {"银行": [[0, 1], [2, 3]]}, "x": {"银行银行": [[0, 3]]}},
        },
    ]
    content = (
        "\n".join(json.dumps(r, ensure_ascii=False) for r in lines)
        + '\n\n{"id": 0, "text": "无标签"}\n'
    )
    path = write(tmp_path, "train.json", content)
    docs = read_cluener(path)
    assert surfaces(docs[0]) == [("浙商银行", "company"), ("叶老桂", "name")]
    assert docs[1].entities == [Entity(0, 2, "org"), Entity(0, 4, "x"), Entity(2, 4, "org")]
    assert docs[2] == Document("无标签", [], f"{path}:4")
    assert [d.source for d in docs[:2]] == [f"{path}:1", f"{path}:2"]


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"text": "abc", "label": {"x": {"ab": [[0, 1]]}', r":2: invalid JSON \("),
        (
            '{"text": "abc", "label": {"x": {"bc": [[0, 1]]}}}',
            r":2: label\['x'\]\['bc'\]: text\[0:2\] is 'ab', not 'bc'",
        ),
        (
            '{"text": "abc", "label": {"x": {"bc": [[1, 3]]}}}',
            r":2: label\['x'\]\['bc'\] \[1, 3\]: span out of range",
        ),
        (
            '{"text": "abc", "label": {"x": {"bc": [[2, 1]]}}}',
            r":2: label\['x'\]\['bc'\] \[2, 1\]: reversed",
        ),
        (
            '{"text": "abc", "label": {"x": {"bc": [[1]]}}}',
            r":2: label\['x'\]\['bc'\]: expected \[start, end\] integers",
        ),
        (
            '{"text": "abc", "label": {"x": {"bc": [1, 2]}}}',
            r":2: label\['x'\]\['bc'\]: expected \[start, end\] integers",
        ),
        ('{"text": "abc", "label": {"x": ["bc"]}}', r":2: label\['x'\] must be an object"),
        ('{"text": "abc", "label": [1]}', r":2: field 'label' must be an object"),
        ('{"label": {}}', r":2: missing field 'text'"),
    ],
)
def test_cluener_malformed(tmp_path, line, match):
    path = write(tmp_path, "train.json", '{"text": "ok"}\n' + line + "\n")
    with data_error(re.escape(str(path)) + match):
        read_cluener(path)


# --------------------------------------------------------------------------------------------
# jsonl and text


def test_jsonl_nested_extra_keys_blank_lines(tmp_path):
    first = {
        "text": "New York City",
        "id": 7,
        "entities": [
            {"start": 0, "end": 13, "type": "LOC"},
            {"start": 0, "end": 8, "type": "LOC", "score": 0.5},
            {"start": 0, "end": 13, "type": "GPE"},
            {"start": 0, "end": 8, "type": "LOC"},
        ],
    }
    content = json.dumps(first) + '\n\n{"text": ""}\n{"text": "x", "entities": []}\n'
    path = write(tmp_path, "pred.jsonl", content)
    docs = read_jsonl(path)
    assert surfaces(docs[0]) == [
        ("New York", "LOC"),
        ("New York City", "GPE"),
        ("New York City", "LOC"),
    ]
    assert [(d.text, d.entities, d.source) for d in docs[1:]] == [
        ("", [], f"{path}:3"),
        ("x", [], f"{path}:4"),
    ]


def jsonl_entity(**entity) -> str:
    return json.dumps({"text": "abc", "entities": [{"start": 0, "end": 1, "type": "x"}, entity]})


@pytest.mark.parametrize(
    "line, match",
    [
        (
            jsonl_entity(start=0, end=1, label="x"),
            r":2: missing field 'entities\[1\]\.type' \(found keys: start, end, label\)",
        ),
        (jsonl_entity(end=1, type="x"), r":2: missing field 'entities\[1\]\.start'"),
        (jsonl_entity(begin=0, end=1, type="x"), r":2: missing field 'entities\[1\]\.start'"),
        (
            jsonl_entity(start="0", end=1, type="x"),
            r":2: field 'entities\[1\]\.start' must be int, found '0'",
        ),
        (
            jsonl_entity(start=0, end=1.0, type="x"),
            r":2: field 'entities\[1\]\.end' must be int, found 1\.0",
        ),
        (
            jsonl_entity(start=False, end=1, type="x"),
            r":2: field 'entities\[1\]\.start' must be int, found False",
        ),
        (jsonl_entity(start=0, end=1, type=3), r":2: field 'entities\[1\]\.type' must be str"),
        (
            jsonl_entity(start=1, end=4, type="x"),
            r":2: entities\[1\] start=1, end=4: span out of range for text of length 3",
        ),
        (
            jsonl_entity(start=-1, end=2, type="x"),
            r":2: entities\[1\] start=-1, end=2: span out of range",
        ),
        (
            jsonl_entity(start=2, end=1, type="x"),
            r":2: entities\[1\] start=2, end=1: reversed or empty span",
        ),
        (
            jsonl_entity(start=1, end=1, type="x"),
            r":2: entities\[1\] start=1, end=1: reversed or empty span",
        ),
        ('{"text": "abc", "entities": [', r":2: invalid JSON \(.* at column \d+\)"),
        ('["abc"]', r":2: record must be a JSON object, found list"),
        ('{"entities": []}', r":2: missing field 'text'"),
        ('{"text": "abc", "entities": "x"}', r":2: field 'entities' must be a list"),
        (
            '{"text": "abc", "entities": ["x"]}',
            r":2: entities\[0\] must be a JSON object, found str",
        ),
    ],
)
def test_jsonl_malformed(tmp_path, line, match):
    path = write(tmp_path, "data.jsonl", '{"text": "ok"}\n' + line + "\n")
    with data_error(re.escape(str(path)) + match):
        read_jsonl(path)


def test_text_plain_and_jsonl(tmp_path):
    plain = write(tmp_path, "plain.txt", "Peter lives in Berlin.\r\n  indented {not json}\n")
    docs = read_text(plain)
    assert [(d.text, d.entities, d.source) for d in docs] == [
        ("Peter lives in Berlin.", [], f"{plain}:1"),
        ("  indented {not json}", [], f"{plain}:2"),
    ]
    lines = write(
        tmp_path,
        "in.jsonl",
        '{"text": "a b", "entities": [{"start": 0, "end": 9, "type": "X"}]}\n{"text": "c"}\n',
    )
    assert [(d.text, d.entities) for d in read_text(lines)] == [("a b", []), ("c", [])]


@pytest.mark.parametrize(
    "content, match",
    [
        ("a\n\nb\n", r":2: empty line"),
        ("a\n   \n", r":2: empty line"),
        ('{"text": "a"}\n{"txt": "b"}\n', r":2: missing field 'text'"),
        ('{"text": "a"}\nplain\n', r":2: invalid JSON"),
    ],
)
def test_text_malformed(tmp_path, content, match):
    path = write(tmp_path, "in.txt", content)
    with data_error(re.escape(str(path)) + match):
        read_text(path)


# --------------------------------------------------------------------------------------------
# all readers: encoding, dispatch, empty splits


@pytest.mark.parametrize(
    "fmt, content",
    [
        ("columns", b"a O\n\xff O\n"),
        ("cmeee", b'[{"text": "a"},\n {"text": "\xe4\xb8"}]'),
        ("cluener", b'{"text": "a"}\n{"text": "\xc3("}\n'),
        ("jsonl", b'{"text": "a"}\n{"text": "\xff"}\n'),
        ("text", b"fine\nnot \xfe fine\n"),
    ],
)
def test_non_utf8_names_the_line(tmp_path, fmt, content):
    path = write(tmp_path, "bad.data", content)
    with data_error(at(path, ":2") + r"not valid UTF-8 \("):
        READERS[fmt](path)


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    path = write(
        tmp_path,
        "x.jsonl",
        '\ufeff{"text": "ab", "entities": [{"start": 0, "end": 2, "type": "X"}]}\r\n',
    )
    assert read_jsonl(path) == [Document("ab", [Entity(0, 2, "X")], f"{path}:1")]


def test_read_split_dispatch(tmp_path):
    assert set(READERS) == {"columns", "cmeee", "cluener", "jsonl", "text"}
    path = write(tmp_path, "g.tsv", "Bayern\tB-ORG\tB-LOC\nMünchen\tI-ORG\tO\n")
    [doc] = read_split("columns", path, tag_columns=[1, 2])
    assert surfaces(doc) == [("Bayern", "LOC"), ("Bayern München", "ORG")]
    with data_error(r"unknown data format 'conll' \(known: columns, cmeee, cluener, jsonl, text\)"):
        read_split("conll", path)
    with pytest.raises(ConfigError, match="format 'jsonl' does not take options \\['join'\\]"):
        read_split("jsonl", path, join="")


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_read_split_missing_and_empty(tmp_path, fmt):
    missing = tmp_path / "nope.data"
    with data_error(at(missing) + "file not found$"):
        read_split(fmt, missing)
    empty = write(tmp_path, "empty.data", "")
    with data_error(at(empty) + r"no documents \(empty split\)$"):
        read_split(fmt, empty)


@pytest.mark.parametrize(
    "fmt, content",
    [
        ("columns", "-DOCSTART- -X- O\n\n\n"),
        ("cmeee", "[]"),
        ("cluener", "\n\n"),
        ("jsonl", "\n \n"),
    ],
)
def test_read_split_no_documents(tmp_path, fmt, content):
    path = write(tmp_path, "split.data", content)
    with data_error(at(path) + r"no documents \(empty split\)"):
        read_split(fmt, path)


# --------------------------------------------------------------------------------------------
# write_jsonl


def test_write_jsonl_canonical_and_atomic(tmp_path):
    path = tmp_path / "out" / "pred.jsonl"
    docs = [
        Document("北京 Berlin", [Entity(3, 9, "LOC"), Entity(0, 2, "LOC"), Entity(0, 2, "LOC")]),
        Document("", []),
    ]
    write_jsonl(docs, path)
    assert path.read_text(encoding="utf-8") == (
        '{"text": "北京 Berlin", "entities": [{"start": 0, "end": 2, "type": "LOC"}, '
        '{"start": 3, "end": 9, "type": "LOC"}]}\n'
        '{"text": "", "entities": []}\n'
    )

    def failing():
        yield Document("new", [])
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(failing(), path)
    assert [d.text for d in read_jsonl(path)] == ["北京 Berlin", ""]  # old file intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["pred.jsonl"]  # no temp file left


TYPES = st.sampled_from(["PER", "LOC", "ORG", "疾病", "B-x", " "])


@st.composite
def documents(draw) -> Document:
    text = draw(st.text(max_size=40))
    entities = []
    for _ in range(draw(st.integers(0, 8)) if text else 0):
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, len(text)))
        entities.append(Entity(start, end, draw(TYPES)))
        if draw(st.booleans()):  # the same span again, typically with another type
            entities.append(Entity(start, end, draw(TYPES)))
    return Document(text, entities)


@settings(max_examples=150, deadline=None)
@given(st.lists(documents(), min_size=1, max_size=5))
def test_jsonl_round_trip(docs):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "docs.jsonl"
        write_jsonl(docs, path)
        back = read_jsonl(path)
    assert [(d.text, d.entities) for d in back] == [(d.text, sorted(set(d.entities))) for d in docs]
    assert [d.source for d in back] == [f"{path}:{i}" for i in range(1, len(docs) + 1)]


# --------------------------------------------------------------------------------------------
# real data (../shared/data, or $DISTILL_DATA_DIR)


def data_dir() -> Path:
    env = os.environ.get("DISTILL_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@functools.cache
def load(fmt: str, relative: str, **options) -> list[Document]:
    path = data_dir() / relative
    if not path.is_file():
        pytest.skip(f"real data not available: {path}")
    return read_split(fmt, path, **options)


GERMEVAL = {"tag_columns": (1, 2)}
RESUME = {"join": "", "strict": False}  # train cuts 2 ORG entities with a blank line; see below


@pytest.mark.parametrize(
    "fmt, relative, options, sentences, entities",
    [
        ("columns", "conll2003/train.txt", {}, 14041, 23499),
        ("columns", "conll2003/dev.txt", {}, 3250, 5942),
        ("columns", "conll2003/test.txt", {}, 3453, 5648),
        ("columns", "germeval2014/germ.train.iob2", GERMEVAL, 24000, 31545),
        ("columns", "germeval2014/germ.dev.iob2", GERMEVAL, 2200, 2886),
        ("columns", "resume_ner/train.char.bmes", RESUME, 3821, 13440),
        ("columns", "resume_ner/dev.char.bmes", {"join": ""}, 463, 1497),
        ("cmeee", "cmeee/dev.json", {}, 5000, 20300),
        ("cmeee", "cmeee/test.json", {}, 3000, 0),
        ("cluener", "cluener/train.json", {}, 10748, 23971),
        ("cluener", "cluener/dev.json", {}, 1343, 3072),
        ("cluener", "cluener/test.json", {}, 1345, 0),
    ],
)
def test_real_data_counts(fmt, relative, options, sentences, entities):
    docs = load(fmt, relative, **options)
    assert (len(docs), sum(len(d.entities) for d in docs)) == (sentences, entities)


def overlapping(docs: list[Document]) -> int:
    """Entities whose span overlaps another entity of the same document (README's definition)."""
    return sum(
        any(o is not e and o.start < e.end and e.start < o.end for o in d.entities)
        for d in docs
        for e in d.entities
    )


def test_real_data_content():
    conll = load("columns", "conll2003/train.txt")
    assert conll[0].text == "EU rejects German call to boycott British lamb ."
    assert surfaces(conll[0]) == [("EU", "ORG"), ("German", "MISC"), ("British", "MISC")]
    germeval = load("columns", "germeval2014/germ.dev.iob2", **GERMEVAL)
    assert overlapping(germeval) == 407  # README: dev 407 overlapping entities
    cmeee = load("cmeee", "cmeee/dev.json")
    assert overlapping(cmeee) == 2201  # README: 2201 entities overlap another
    resume = load("columns", "resume_ner/train.char.bmes", **RESUME)
    assert all(d.text and " " not in d.text for d in resume[:100])


def test_real_resume_train_strict_names_the_broken_entity():
    """resume_ner train.char.bmes cuts two ORG entities with a blank line (lines 62386-62400 and
    64402-64416); strict reading reports the first, strict=False repairs both (the README's 13440
    counts each half as an entity)."""
    path = data_dir() / "resume_ner" / "train.char.bmes"
    if not path.is_file():
        pytest.skip(f"real data not available: {path}")
    with data_error(
        at(path, ":62386") + "B-ORG is not closed by an E-ORG before the sentence ends"
    ):
        read_columns(path, join="")
