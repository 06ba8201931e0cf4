"""distill.predict: the Predictor API and the command (stdin/stdout, files, errors)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from distill.io.load import load_checkpoint
from distill.eval.decode import decode_batch
from distill.errors import CheckpointError
from distill.deploy.predict import Predictor

SENTENCE = "EU rejects German call to boycott British lamb."
LONG = " ".join(["Peter Blackburn reported from Brussels on Tuesday about the European Union."] * 12)
TEXTS = [SENTENCE, LONG, "Barack Obama visited Paris.", "x", "中国人民大学位于北京。"]


@pytest.fixture(scope="module")
def predictor(tiny_teacher_ckpt):
    return Predictor.from_path(tiny_teacher_ckpt)


def run_cli(args, monkeypatch, capsys, stdin: bytes | None = None):
    """The predict command in-process (config composed by Hydra, errors by one_line_errors):
    (exit code, stdout, stderr). test_cli_stdin_to_stdout runs the real process."""
    import io

    from hydra import compose, initialize_config_dir

    from distill.cli import one_line_errors
    from distill.deploy.predict import run

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("predict", overrides=list(args))
    code = 0
    try:
        one_line_errors(run)(cfg)
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def same(a, b) -> bool:
    """Same spans, scores equal up to float noise (padding changes the kernels' sums)."""
    return ([(p.start, p.end, p.type) for p in a] == [(p.start, p.end, p.type) for p in b]
            and [p.score for p in a] == pytest.approx([p.score for p in b], abs=1e-4))


def check_spans(text, predictions, labels):
    for p in predictions:
        assert 0 <= p.start < p.end <= len(text)
        surface = text[p.start : p.end]
        assert surface and surface == surface.strip()
        assert p.type in labels


def test_predict_keeps_order_and_windows_long_texts(predictor):
    windows = predictor.encode(TEXTS)
    per_doc = [sum(w.doc_index == d for w in windows) for d in range(len(TEXTS))]
    assert per_doc[1] > 1 and all(n == 1 for k, n in enumerate(per_doc) if k != 1)

    batched = predictor.predict(TEXTS, batch_size=2)
    assert len(batched) == len(TEXTS)
    for text, predictions in zip(TEXTS, batched):
        check_spans(text, predictions, predictor.labels)
        assert same(predictions, predictor.predict([text])[0])  # batching and order change nothing
    assert max(p.end for p in batched[1]) > len(LONG) // 2  # later windows are decoded too
    assert predictor.predict([]) == []


def test_predict_decodes_like_evaluation(predictor):
    """Same windows, same decode as training-time evaluation (decode_batch)."""
    windows = [w for w in predictor.encode(TEXTS) if w.doc_index in (0, 1)]
    arrays = predictor.collate(windows)
    logits = predictor.runner(**arrays)
    expected = decode_batch(logits, [w.offsets for w in windows], [w.doc_index for w in windows],
                            predictor.labels, predictor.threshold, predictor.flat)
    got = predictor.predict(TEXTS[:2], batch_size=3)
    assert same(got[0], expected[0]) and same(got[1], expected[1])


def test_predictor_settings_come_from_the_checkpoint(tiny_teacher_ckpt, predictor):
    meta = load_checkpoint(tiny_teacher_ckpt).meta
    assert predictor.max_length == meta["data"]["max_length"]
    assert predictor.stride == meta["data"]["stride"]
    assert predictor.threshold == meta["decode"]["threshold"]
    assert predictor.flat == meta["decode"]["flat"]
    strict = Predictor.from_path(tiny_teacher_ckpt, threshold=1e9)
    assert strict.predict([SENTENCE]) == [[]]


def test_onnx_runtime_on_a_checkpoint_says_what_to_do(tiny_teacher_ckpt):
    with pytest.raises(CheckpointError, match="needs an ONNX export folder.*(distill.export|ckpt=)"):
        Predictor.from_path(tiny_teacher_ckpt, runtime="onnx")


def test_cli_stdin_to_stdout(tiny_teacher_ckpt):
    """The documented one-liner, as a real process."""
    done = subprocess.run([sys.executable, "-m", "distill.predict", f"ckpt={tiny_teacher_ckpt}"],
                          input=f"{SENTENCE}\n{TEXTS[2]}\n", capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["text"] for r in records] == [SENTENCE, TEXTS[2]]
    labels = set(load_checkpoint(tiny_teacher_ckpt).labels)
    for r in records:
        assert set(r) == {"text", "entities"}
        for e in r["entities"]:
            assert set(e) == {"start", "end", "type", "score"}
            assert isinstance(e["start"], int) and isinstance(e["end"], int)
            assert e["type"] in labels and isinstance(e["score"], float) and e["score"] > 0
            assert r["text"][e["start"]:e["end"]].strip()


def test_cli_file_in_file_out(tiny_teacher_ckpt, tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs.jsonl"
    lines = [{"text": t, "id": k} for k, t in enumerate(TEXTS)]
    docs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
    out = tmp_path / "sub" / "entities.jsonl"
    code, stdout, err = run_cli([f"ckpt={tiny_teacher_ckpt}", f"input={docs}", f"output={out}"],
                              monkeypatch, capsys)
    assert code == 0 and stdout == "", err
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == TEXTS
    expected = Predictor.from_path(tiny_teacher_ckpt).predict(TEXTS)
    assert [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in records] == \
        [[(p.start, p.end, p.type) for p in doc] for doc in expected]
    assert sorted(p.name for p in out.parent.iterdir()) == ["entities.jsonl"]  # no temp files


def test_cli_bad_input_names_the_line_and_writes_nothing(tiny_teacher_ckpt, tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text(f"{SENTENCE}\n\n{TEXTS[2]}\n", encoding="utf-8")
    out = tmp_path / "entities.jsonl"
    code, stdout, stderr = run_cli([f"ckpt={tiny_teacher_ckpt}", f"input={docs}", f"output={out}"],
                                   monkeypatch, capsys)
    assert code != 0 and stdout == ""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{docs}:2" in errors[0] and "empty line" in errors[0]
    assert list(tmp_path.iterdir()) == [docs]

    code, stdout, stderr = run_cli([f"ckpt={tiny_teacher_ckpt}"], monkeypatch, capsys,
                                   stdin=b"fine\n\xff\xfe broken\n")
    assert code != 0 and stdout == ""
    assert "<stdin>:2" in stderr and "UTF-8" in stderr


def _peak_bytes(n_lines, ckpt, tmp_path, monkeypatch, capsys) -> int:
    """Python's peak allocation while predicting ``n_lines`` lines of ~200 characters file to
    file (a threshold no span reaches: the records stay small, the input is what is measured)."""
    import tracemalloc

    docs = tmp_path / f"docs{n_lines}.txt"
    words = ["Peter", "Blackburn", "reported", "from", "Brussels", "on", "Tuesday", "about", "the",
             "European", "Union"]
    docs.write_text("".join(" ".join(words[(k + i) % len(words)] for i in range(30)) + f" {k}.\n"
                            for k in range(n_lines)), encoding="utf-8")
    out = tmp_path / f"out{n_lines}.jsonl"
    tracemalloc.start()
    try:
        code, _, err = run_cli([f"ckpt={ckpt}", f"input={docs}", f"output={out}", "batch_size=64",
                                "progress=false", "threshold=1e4"], monkeypatch, capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, err
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == n_lines and json.loads(lines[-1])["text"].endswith(f" {n_lines - 1}.")
    return peak


def test_cli_streams_memory_does_not_grow_with_the_input(tiny_teacher_ckpt, tmp_path, monkeypatch, capsys):
    """10,000 lines in, 10,000 records out; Python's peak allocation stays that of 1,000 lines
    (a predict that holds just the 10,000 texts peaks 1.48x higher at 10,000 lines than at 1,000)."""
    _peak_bytes(10, tiny_teacher_ckpt, tmp_path, monkeypatch, capsys)  # one-off loading costs
    small = _peak_bytes(1_000, tiny_teacher_ckpt, tmp_path, monkeypatch, capsys)
    large = _peak_bytes(10_000, tiny_teacher_ckpt, tmp_path, monkeypatch, capsys)
    assert large < 1.25 * small, (small, large)  # measured: 1.08x; holding the texts: 1.48x


def test_cli_bad_line_late_in_a_large_input_fails_before_any_output(tiny_teacher_ckpt, tmp_path,
                                                                   monkeypatch, capsys):
    docs = tmp_path / "docs.txt"
    lines = [f"text {k}\n".encode() for k in range(10_000)]
    lines[8_999] = b"caf\xe9 au lait\n"  # Latin-1, not UTF-8, on line 9,000
    docs.write_bytes(b"".join(lines))
    out = tmp_path / "entities.jsonl"
    code, stdout, stderr = run_cli([f"ckpt={tiny_teacher_ckpt}", f"input={docs}", f"output={out}"],
                                   monkeypatch, capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code != 0 and stdout == "" and len(errors) == 1, stderr
    offset = sum(map(len, lines[:8_999])) + 3
    assert f"{docs}:9000" in errors[0] and f"offset {offset}" in errors[0]
    assert list(tmp_path.iterdir()) == [docs]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present")
def test_cli_device_cuda_without_a_gpu_is_one_line(tiny_teacher_ckpt, monkeypatch, capsys):
    code, stdout, stderr = run_cli([f"ckpt={tiny_teacher_ckpt}", "device=cuda"], monkeypatch, capsys,
                                   stdin=b"fine\n")
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code != 0 and stdout == "" and len(errors) == 1
    assert "device=cuda" in errors[0] and "no CUDA device" in errors[0]
    code, _, stderr = run_cli([f"ckpt={tiny_teacher_ckpt}", "device=tpu"], monkeypatch, capsys,
                              stdin=b"fine\n")
    assert code != 0 and "expected cpu, cuda or cuda:N" in stderr
