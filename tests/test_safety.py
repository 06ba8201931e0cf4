"""Loading is safe: checkpoints load with ``torch.load(weights_only=True)`` (a pickled payload is
refused with a CheckpointError and never runs), metadata is plain JSON/YAML, and
``trust_remote_code`` stays off unless the user turns it on."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModel, AutoTokenizer

from cli_util import QUIET, call
from distill.io.checkpoint import safe_load
from distill.io.load import load_checkpoint
from distill.io.checkpoint_io import AtomicCheckpointIO
from distill.errors import CheckpointError


class Payload:
    """Unpickling this object would call ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def teacher(tiny_bert, tmp_path_factory):
    """A tiny teacher run (in this process), recording every ``trust_remote_code`` that reaches
    transformers' loaders while it runs."""
    run_dir = tmp_path_factory.mktemp("safety") / "teacher"
    seen = []
    with pytest.MonkeyPatch.context() as mp:
        for cls in (AutoTokenizer, AutoModel, AutoConfig):
            original = cls.from_pretrained

            def spy(*args, _original=original, **kwargs):
                seen.append(kwargs.get("trust_remote_code"))
                return _original(*args, **kwargs)

            mp.setattr(cls, "from_pretrained", spy)
        call("distill.teacher", f"model.name_or_path={tiny_bert}", "trainer=fast_dev_run",
             "data.limit_train=16", "data.limit_eval=8", *QUIET, f"hydra.run.dir={run_dir}")
    return run_dir, seen


@pytest.fixture()
def evil(teacher, tmp_path):
    """A genuine teacher checkpoint with a pickled payload hidden in its metadata."""
    ckpt = safe_load(teacher[0] / "best.ckpt")
    marker = tmp_path / "payload-ran"
    ckpt["distill"]["info"]["note"] = Payload(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path)
    return path, marker


def test_the_payload_is_live(evil, tmp_path):
    """Control: an unrestricted torch.load would run it."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_loader_refuses_a_pickled_payload(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused to load: it holds pickled "
                                              r"Python objects that could run code"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused to load"):  # resume / validate(ckpt_path)
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, overrides", [
    ("distill.student", ["teacher={ckpt}", "student.depth=1", "hydra.run.dir={out}"]),
    ("distill.predict", ["ckpt={ckpt}", "input={docs}", "output={out}/pred.jsonl"]),
    ("distill.teacher", ["resume={ckpt}", "model.name_or_path={bert}", "trainer=fast_dev_run",
                         "data.limit_train=16", "data.limit_eval=8"]),
])
def test_clis_refuse_a_pickled_payload(evil, tiny_bert, tmp_path, module, overrides):
    path, marker = evil
    docs = tmp_path / "docs.txt"
    docs.write_text("John lives in Berlin.\n")
    out = tmp_path / "out"
    args = [o.format(ckpt=path, docs=docs, out=out, bert=tiny_bert) for o in overrides]
    result = call(module, *args, *(QUIET if module != "distill.predict" else ()), check=False)
    assert result.returncode == 2
    assert result.last_line.startswith(f"error: {path}: refused to load"), result.stderr[-2000:]
    assert not marker.exists()
    assert not (out / "pred.jsonl").exists() and not (out / "metrics.json").exists()
    assert not (path.parent / "metrics.json").exists()  # resume= runs in the checkpoint's dir


def test_metadata_is_plain_json_and_yaml(teacher):
    run_dir, _ = teacher
    ckpt = safe_load(run_dir / "best.ckpt")
    files = ckpt["distill"].pop("tokenizer")  # the tokenizer's files, as bytes
    assert files and all(isinstance(v, bytes) for v in files.values())
    for key in ("distill", "hyper_parameters"):
        assert json.loads(json.dumps(ckpt[key])) == ckpt[key]  # no objects, only JSON values
    assert ckpt["distill"]["format"] == "distill-checkpoint/1"
    assert isinstance(yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()), dict)
    json.loads((run_dir / "metrics.json").read_text())


def test_trust_remote_code_is_off_unless_set(teacher, tiny_bert, monkeypatch):
    _, seen = teacher
    assert seen and all(flag is False for flag in seen)
    from distill.model.encoders import load_tokenizer

    calls = []
    monkeypatch.setattr(AutoTokenizer, "from_pretrained",
                        lambda *a, **k: calls.append(k.get("trust_remote_code")) or
                        pytest.fail("stop here"))
    with pytest.raises(pytest.fail.Exception):
        load_tokenizer(str(tiny_bert), trust_remote_code=True)  # model.trust_remote_code=true
    assert calls == [True]
