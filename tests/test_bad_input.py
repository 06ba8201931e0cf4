"""Malformed input, through every reader and command: one clear ``error: ...`` line on stderr
that names the file/line/field (or the config key), a non-zero exit, and no partial output.

The commands run in this process through the same entry point as ``python -m`` (config
composition, one-line errors, exit status) -- interpreter start-up would cost ~10 s a case --
and a handful of cases also run as real subprocesses. Data errors must come before any model is
loaded: the teacher cases name a model folder that does not exist. Last, property tests: any
valid span set read from columns / CMeEE / CLUENER files round-trips exactly through canonical
JSONL (the JSONL reader's own round trip is in test_readers.py)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_util import QUIET, call, run_many
from distill.data.document import Entity
from distill.data.readers import read_cluener, read_cmeee, read_columns, read_jsonl, write_jsonl

NO_MODEL = "model.name_or_path=/nonexistent/model"  # reached only if the data passed


def doc(text: str, *spans: tuple[int, int, str]) -> str:
    return json.dumps({"text": text, "entities": [{"start": s, "end": e, "type": t}
                                                  for s, e, t in spans]})


TRAIN = [doc("John lives in Berlin.", (0, 4, "PER"), (14, 20, "LOC")),
         doc("Mary works for Acme.", (0, 4, "PER"), (15, 19, "ORG"))]
DEV = [doc("Paul visited Paris.", (0, 4, "PER"), (13, 18, "LOC"))]
GOOD = {"train.jsonl": TRAIN, "dev.jsonl": DEV, "test.jsonl": DEV}


def write(folder: Path, files: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else "\n".join(content) + "\n",
                            encoding="utf-8")
    return folder


COLUMNS = ["data.format=columns", "data.train=train.txt", "data.dev=dev.txt", "data.test=null"]
GOOD_COLUMNS = "Paul B-PER\nvisited O\nParis B-LOC\n"

# (id, files written into the data dir, extra overrides, what the error line must contain)
TEACHER_CASES = [
    ("broken-json", {"train.jsonl": [TRAIN[0], '{"text": "Mary", "entities": [}']}, [],
     "{data}/train.jsonl:2: invalid JSON (Expecting value at column"),
    ("wrong-key-text", {"train.jsonl": ['{"txt": "Mary"}']}, [],
     "{data}/train.jsonl:1: missing field 'text' (found keys: txt)"),
    ("wrong-key-entity", {"train.jsonl": ['{"text": "Mary", "entities": [{"begin": 0, "end": 4, '
                                          '"type": "PER"}]}']}, [],
     "{data}/train.jsonl:1: missing field 'entities[0].start' (found keys: begin, end, type)"),
    ("span-out-of-range", {"dev.jsonl": [doc("Paul", (0, 9, "PER"))]}, [],
     "{data}/dev.jsonl:1: entities[0] start=0, end=9: span out of range for text of length 4"),
    ("span-reversed", {"test.jsonl": [doc("Paul visited Paris.", (4, 0, "PER"))]}, [],
     "{data}/test.jsonl:1: entities[0] start=4, end=0: reversed or empty span"),
    ("entities-not-a-list", {"train.jsonl": ['{"text": "Mary", "entities": {"PER": [0, 4]}}']}, [],
     "{data}/train.jsonl:1: field 'entities' must be a list"),
    ("non-utf8", {"dev.jsonl": DEV[0].encode() + b'\n{"text": "Caf\xe9"}\n'}, [],
     "{data}/dev.jsonl:2: not valid UTF-8 (invalid continuation byte: byte b'\\xe9'"),
    ("empty-split", {"test.jsonl": ""}, [], "{data}/test.jsonl: no documents (empty split)"),
    ("label-unseen-in-train", {"test.jsonl": [doc("Paul visited Paris.", (13, 18, "CITY"))]}, [],
     "{data}/test.jsonl:1: label 'CITY' does not occur in the training data "
     "(known: ['LOC', 'ORG', 'PER'])"),
    ("missing-file", {}, ["data.dev=nope.jsonl"], "{data}/nope.jsonl: file not found"),
    ("unknown-format", {}, ["data.format=xml"], "{data}/train.jsonl: unknown data format 'xml' (known:"),
    ("unknown-reader-option", {}, ["+data.options.scheme=bioes"],
     "format 'jsonl' does not take options ['scheme'] (it takes: none)"),
    ("unknown-data-name", {}, ["data=nope"], "config: In 'teacher': Could not find 'data/nope' "
                                             "Available options in 'data': cluener"),
    ("unknown-config-key", {}, ["data.batchsize=4"], "config: Could not override 'data.batchsize'"),
    ("bioes-not-closed", {"train.txt": "John B-PER\nSmith O\n", "dev.txt": GOOD_COLUMNS},
     [*COLUMNS, "+data.options.scheme=bioes"],
     "{data}/train.txt:1: B-PER is not closed by an E-PER before O at"),
    ("iob2-stray-inside", {"train.txt": "John O\nSmith I-PER\n", "dev.txt": GOOD_COLUMNS},
     [*COLUMNS, "+data.options.scheme=iob2"],
     "{data}/train.txt:2: I-PER without a preceding B-PER (not valid IOB2"),
    ("bioes-tag-in-iob2", {"train.txt": "John S-PER\n", "dev.txt": GOOD_COLUMNS},
     [*COLUMNS, "+data.options.scheme=iob2"], "{data}/train.txt:1: tag 'S-PER' is not valid IOB2"),
    ("mixed-tab-space", {"train.txt": "John B-PER\nlives\tO\n", "dev.txt": GOOD_COLUMNS}, COLUMNS,
     "{data}/train.txt:2: expected 2 space-separated columns, found a tab (mixed separators)"),
    ("wrong-column-count", {"train.txt": "John\tB-PER\nlives\tO\tX\n", "dev.txt": GOOD_COLUMNS},
     COLUMNS, "{data}/train.txt:2: expected 2 tab-separated columns, found 3"),
    ("invalid-tag", {"train.txt": "John X-PER\n", "dev.txt": GOOD_COLUMNS}, COLUMNS,
     "{data}/train.txt:1: invalid tag 'X-PER' (expected O or PREFIX-TYPE"),
    ("cmeee-surface-mismatch",
     {"train.json": '[{"text": "John", "entities": [{"start_idx": 0, "end_idx": 3, '
                    '"type": "PER", "entity": "Joan"}]}]'},
     ["data.format=cmeee", "data.train=train.json", "data.dev=train.json", "data.test=null"],
     "{data}/train.json#0: entities[0].entity: text[0:4] is 'John', not 'Joan'"),
    ("cluener-bad-span",
     {"train.json": '{"text": "John", "label": {"PER": {"John": [[0]]}}}'},
     ["data.format=cluener", "data.train=train.json", "data.dev=train.json", "data.test=null"],
     "{data}/train.json:1: label['PER']['John']: expected [start, end] integers, found [0]"),
    # (empty lines of transfer text are skipped and counted, not errors: tests/test_transfer.py)
    ("unlabeled-no-match", {}, ["data.unlabeled={data}/nothing/*.txt"], "{data}/nothing/*.txt: no files match"),
    ("unlabeled-non-utf8", {"extra.txt": b"Caf\xe9\n"}, ["data.unlabeled={data}/extra.txt"],
     "{data}/extra.txt:1: not valid UTF-8 (invalid continuation byte: byte b'\\xe9' at offset 3); set data.unlabeled_encoding"),
    ("spawn-strategy", {}, ["trainer=ddp", "trainer.strategy=ddp_spawn"],
     "trainer.strategy=ddp_spawn: not supported"),
    ("resume-without-checkpoint", {}, ["resume={data}"],
     "resume={data}: no checkpoint to resume from ({data}/last.ckpt not found)"),
]


def assert_clean_failure(result, expected: str, run_dir: Path | None) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.last_line], result.stderr[-2000:]  # exactly one, and it is last
    assert expected in result.last_line, result.last_line
    if run_dir is not None and run_dir.exists():  # nothing but Hydra's own config and log
        assert not {p.name for p in run_dir.iterdir()} & {"metrics.json", "best.ckpt", "last.ckpt"}


@pytest.mark.parametrize("files, overrides, expected", [c[1:] for c in TEACHER_CASES],
                         ids=[c[0] for c in TEACHER_CASES])
def test_teacher_rejects(tmp_path, files, overrides, expected):
    data = write(tmp_path / "data", GOOD | files)
    run_dir = tmp_path / "run"
    overrides = [o.format(data=data) for o in overrides]
    if not any(o.startswith("resume=") for o in overrides):  # resume=<dir> runs in <dir>
        overrides.append(f"hydra.run.dir={run_dir}")
    result = call("distill.teacher", "data=jsonl", f"data.dir={data}", NO_MODEL, *QUIET, *overrides,
                  check=False)
    assert_clean_failure(result, "error: " + expected.format(data=data), run_dir)


@pytest.fixture()
def corrupted(tiny_teacher_ckpt, tmp_path) -> Path:
    data = (tiny_teacher_ckpt / "best.ckpt").read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])  # what a kill during a non-atomic save leaves
    return path


@pytest.fixture()
def foreign(tmp_path) -> Path:
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    return path


STUDENT_CASES = [
    ("other-label-set", "{teacher}",
     ["data=jsonl", "data.dir={other}"], "{other}/train.jsonl: labels ['FOOD'] are not in the model's "
                                         "label set"),
    ("corrupted-checkpoint", "{corrupted}", [],
     "{corrupted}: not a readable checkpoint (corrupted or truncated"),
    ("not-a-distill-checkpoint", "{foreign}", [],
     "{foreign}: not a distill checkpoint (no 'distill-checkpoint/1' metadata)"),
    ("missing-teacher", "{tmp}/no-such-run", [], "{tmp}/no-such-run: no such checkpoint file or folder"),
    ("no-teacher", None, [], "teacher: required"),
    ("depth-larger-than-teacher", "{teacher}", ["student.depth=5"],
     "student.depth=5 is larger than the teacher's 2 layers"),
    ("layers-out-of-range", "{teacher}", ["student.layers=[0,5]"],
     "student.layers=[0, 5]: indices must be in 0..1 (the teacher has 2 layers)"),
    ("layers-not-increasing", "{teacher}", ["student.layers=[1,0]"],
     "student.layers=[1, 0]: must be strictly increasing"),
    ("bad-init", "{teacher}", ["student.init=magic"], "student.init='magic': expected one of"),
    ("transfer-text-without-kd", "{teacher}", ["kd=none", "data.unlabeled={tmp}/text.txt"],
     "data.unlabeled={tmp}/text.txt: transfer text is learnt only from the teacher (kd.alpha > 0 "
     "or kd.pseudo_labels=true); with kd.alpha=0.0 its windows would fill batches and teach nothing"),
    ("max-length-above-positions", "{teacher}", ["data.max_length=600"],
     "data.max_length=600 is more than the encoder of teacher={teacher} takes: 512 tokens "
     "(max_position_embeddings=512)"),
]


@pytest.mark.parametrize("teacher, overrides, expected", [c[1:] for c in STUDENT_CASES],
                         ids=[c[0] for c in STUDENT_CASES])
def test_student_rejects(tiny_teacher_ckpt, corrupted, foreign, tmp_path, teacher, overrides,
                         expected):
    other = write(tmp_path / "other", {
        "train.jsonl": [doc("Rice and beans.", (0, 4, "FOOD"))], "dev.jsonl": DEV,
        "test.jsonl": DEV})
    fill = dict(teacher=tiny_teacher_ckpt, corrupted=corrupted, foreign=foreign, tmp=tmp_path,
                other=other)
    run_dir = tmp_path / "run"
    args = ([f"teacher={teacher.format(**fill)}"] if teacher else []) + [
        o.format(**fill) for o in overrides]
    if not any(a.startswith("student.depth") for a in args):
        args.append("student.depth=1")
    result = call("distill.student", *args, *QUIET, f"hydra.run.dir={run_dir}", check=False)
    assert_clean_failure(result, "error: " + expected.format(**fill), run_dir)


def test_teacher_rejects_max_length_above_the_encoders_positions(tiny_bert, tmp_path):
    run_dir = tmp_path / "run"
    result = call("distill.teacher", f"model.name_or_path={tiny_bert}", "trainer=fast_dev_run",
                  "data.limit_train=8", "data.limit_eval=4", "data.max_length=600", *QUIET,
                  f"hydra.run.dir={run_dir}", check=False)
    assert_clean_failure(result, f"error: data.max_length=600 is more than the encoder of "
                         f"model.name_or_path={tiny_bert} takes: 512 tokens "
                         "(max_position_embeddings=512)", run_dir)


def test_roberta_style_encoders_reserve_padding_positions():
    from transformers import BertConfig, XLMRobertaConfig

    from distill.errors import ConfigError
    from distill.model.encoders import check_max_length

    xlmr = XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)
    check_max_length(512, xlmr, "xlmr")
    check_max_length(512, BertConfig(max_position_embeddings=512), "bert")
    with pytest.raises(ConfigError, match=r"^data.max_length=513 is more than the encoder of xlmr "
                                          r"takes: 512 tokens \(max_position_embeddings=514, 2 of "
                                          r"them reserved"):
        check_max_length(513, xlmr, "xlmr")


def test_predict_rejects_an_empty_line(tiny_teacher_ckpt, tmp_path):
    pytest.importorskip("distill.predict")
    docs, out = tmp_path / "docs.txt", tmp_path / "pred.jsonl"
    docs.write_text("John lives in Berlin.\n\nMary works for Acme.\n")
    result = call("distill.predict", f"ckpt={tiny_teacher_ckpt}", f"input={docs}",
                  f"output={out}", check=False)
    assert_clean_failure(result, f"error: {docs}:2: empty line", None)
    assert not out.exists() and list(tmp_path.iterdir()) == [docs]


def test_real_processes_fail_cleanly(tiny_teacher_ckpt, tmp_path):
    """The same through fresh interpreters (concurrently): exit status, last stderr line."""
    pytest.importorskip("distill.predict")
    data = write(tmp_path / "data", GOOD | {"train.jsonl": [TRAIN[0], "{oops"]})
    docs = tmp_path / "docs.txt"
    docs.write_text("John lives in Berlin.\n\n")
    teacher = ["distill.teacher", "data=jsonl", f"data.dir={data}", NO_MODEL, *QUIET]
    commands = {
        f"error: {data}/train.jsonl:2: invalid JSON": (*teacher, f"hydra.run.dir={tmp_path / 'a'}"),
        "error: config: In 'teacher': Could not find 'data/nope'": (
            *teacher, "data=nope", f"hydra.run.dir={tmp_path / 'b'}"),
        f"error: {docs}:2: empty line": (
            "distill.predict", f"ckpt={tiny_teacher_ckpt}", f"input={docs}",
            f"output={tmp_path / 'pred.jsonl'}"),
    }
    results = run_many(*commands.values(), cwd=tmp_path)
    for (expected, command), result in zip(commands.items(), results):
        assert result.returncode == 2, (command, result.stderr[-2000:])
        assert result.last_line.startswith(expected), (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
    for name in "ab":
        assert not (tmp_path / name / "metrics.json").exists()
    assert not (tmp_path / "pred.jsonl").exists()


# --------------------------------------------------------------------------------------------
# Property tests: columns / CMeEE / CLUENER -> canonical JSONL -> the same spans

WORDS = st.text(st.characters(whitelist_categories=("L", "N"), max_codepoint=0x24F),
                min_size=1, max_size=6)
TYPES = st.sampled_from(["PER", "LOC", "ORG", "疾病"])


@st.composite
def token_spans(draw, n: int) -> list[tuple[int, int, str]]:
    """Non-overlapping token spans over ``n`` tokens (one tag column's entities)."""
    spans, i = [], 0
    while i < n:
        if draw(st.booleans()):
            j = draw(st.integers(i + 1, min(n, i + 3)))
            spans.append((i, j, draw(TYPES)))
            i = j
        else:
            i += 1
    return spans


def tags(spans, n: int, scheme: str) -> list[str]:
    out = ["O"] * n
    for s, e, t in spans:
        if scheme == "bioes" and e - s == 1:
            out[s] = f"S-{t}"
            continue
        out[s] = f"B-{t}"
        for k in range(s + 1, e):
            out[k] = f"E-{t}" if scheme == "bioes" and k == e - 1 else f"I-{t}"
    return out


def through_jsonl(docs) -> list:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "docs.jsonl"
        write_jsonl(docs, path)
        return [(d.text, d.entities) for d in read_jsonl(path)]


@st.composite
def column_sentences(draw):
    n = draw(st.integers(1, 8))
    tokens = draw(st.lists(WORDS, min_size=n, max_size=n))
    first = draw(token_spans(n))
    # a second tag column: nested spans, or the very same spans with other types
    second = ([(s, e, draw(TYPES)) for s, e, _ in first] if draw(st.booleans())
              else draw(token_spans(n)))
    return tokens, first, second


@settings(max_examples=60, deadline=None)
@given(st.lists(column_sentences(), min_size=1, max_size=4), st.sampled_from(["iob2", "bioes"]),
       st.sampled_from([" ", ""]))
def test_columns_round_trip_through_jsonl(sentences, scheme, join):
    lines, expected = [], []
    for tokens, first, second in sentences:
        starts = [sum(len(t) + len(join) for t in tokens[:k]) for k in range(len(tokens))]
        for token, a, b in zip(tokens, tags(first, len(tokens), scheme),
                               tags(second, len(tokens), scheme)):
            lines.append(f"{token}\t{a}\t{b}")
        lines.append("")
        spans = {Entity(starts[s], starts[e - 1] + len(tokens[e - 1]), t) for s, e, t in first + second}
        expected.append((join.join(tokens), sorted(spans)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.txt"
        path.write_text("\n".join(lines), encoding="utf-8")
        docs = read_columns(path, tag_columns=[1, 2], scheme=scheme, join=join)
    assert [(d.text, d.entities) for d in docs] == expected
    assert through_jsonl(docs) == expected


@st.composite
def char_spans(draw):
    text = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
    spans = []
    for _ in range(draw(st.integers(0, 6))):
        s = draw(st.integers(0, len(text) - 1))
        e = draw(st.integers(s + 1, len(text)))
        spans.append((s, e, draw(TYPES)))
        if draw(st.booleans()):
            spans.append((s, e, draw(TYPES)))  # the identical span, maybe with another type
    return text, spans


@settings(max_examples=60, deadline=None)
@given(st.lists(char_spans(), min_size=1, max_size=4))
def test_cmeee_and_cluener_round_trip_through_jsonl(records):
    expected = [(t, sorted({Entity(s, e, ty) for s, e, ty in spans})) for t, spans in records]
    cmeee = [{"text": t, "entities": [{"start_idx": s, "end_idx": e - 1, "type": ty,
                                       "entity": t[s:e]} for s, e, ty in spans]}
             for t, spans in records]
    cluener = []
    for t, spans in records:
        label: dict = {}
        for s, e, ty in spans:
            label.setdefault(ty, {}).setdefault(t[s:e], []).append([s, e - 1])
        cluener.append(json.dumps({"text": t, "label": label}, ensure_ascii=False))
    with tempfile.TemporaryDirectory() as folder:
        a, b = Path(folder) / "cmeee.json", Path(folder) / "cluener.json"
        a.write_text(json.dumps(cmeee, ensure_ascii=False), encoding="utf-8")
        b.write_text("\n".join(cluener) + "\n", encoding="utf-8")
        for docs in (read_cmeee(a), read_cluener(b)):
            assert [(d.text, d.entities) for d in docs] == expected
            assert through_jsonl(docs) == expected
