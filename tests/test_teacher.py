import json
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from conftest import REPO, SAMPLE
from distill.io.load import load_checkpoint
from distill.data.datamodule import NERDataModule
from distill.data.readers import read_jsonl, write_jsonl
from distill.model.encoders import load_encoder, load_tokenizer
from distill.model.span_ner import SpanNER
from distill.train.module import NERModule


def run_cli(module: str, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", module, *overrides], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{module} failed:\n{result.stderr[-3000:]}")
    return result


def test_tiny_model_overfits_twenty_sentences(tiny_bert, tmp_path):
    docs = read_jsonl(SAMPLE / "train.jsonl")[:20]
    write_jsonl(docs, tmp_path / "train.jsonl")
    pl.seed_everything(0)
    dm = NERDataModule(tmp_path, "train.jsonl", "train.jsonl", batch_size=10, max_length=64,
                       stride=16)
    labels = dm.read()
    tokenizer = load_tokenizer(str(tiny_bert))
    dm.encode(tokenizer)
    model = SpanNER(load_encoder(str(tiny_bert)), labels, dropout=0.0)
    module = NERModule(model, tokenizer, dm.config(), {"lr": 3e-3, "head_lr": 3e-3, "warmup": 0.0},
                       {"threshold": 0.0, "flat": False})
    trainer = pl.Trainer(max_epochs=150, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         check_val_every_n_epoch=150, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    assert module.reports["dev"]["f1"] == 1.0
    assert module.reports["dev"]["exact_match"] == 1.0


@pytest.fixture(scope="module")
def teacher_run(tiny_bert, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher")
    run_cli("distill.teacher", f"model.name_or_path={tiny_bert}", "trainer=fast_dev_run",
            "data.limit_train=40", "data.limit_eval=20", f"hydra.run.dir={run_dir}")
    return run_dir


def test_teacher_cli_writes_metrics_and_checkpoint(teacher_run):
    metrics = json.loads((teacher_run / "metrics.json").read_text())
    assert metrics["model"]["layers"] == 2 and metrics["model"]["hidden_size"] == 32
    assert metrics["model"]["params"] > 0
    for split in ("dev", "test"):
        assert set(metrics[split]) >= {"f1", "precision", "recall", "exact_match", "per_type"}
        assert metrics[split]["documents"] == 20
        assert set(metrics[split]["per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    assert metrics["train"]["seconds"] > 0 and metrics["train"]["examples_per_second"] > 0
    assert metrics["checkpoint"] == str((teacher_run / "best.ckpt").resolve())
    assert (teacher_run / "last.ckpt").is_file()


def test_checkpoint_is_self_contained(teacher_run, tiny_bert, tmp_path):
    """A new process with no access to the model folder loads the checkpoint and gets the same
    logits as this one."""
    loaded = load_checkpoint(teacher_run)
    enc = loaded.tokenizer(["Smith visited Paris ."], return_tensors="pt")
    content = torch.tensor([[0] + [1] * (enc["input_ids"].shape[1] - 2) + [0]]).bool()
    with torch.no_grad():
        here = loaded.model(enc["input_ids"], enc["attention_mask"], content)
    script = (
        "import sys, torch; from distill.io.load import load_checkpoint\n"
        f"m = load_checkpoint({str(teacher_run)!r})\n"
        "e = m.tokenizer(['Smith visited Paris .'], return_tensors='pt')\n"
        "c = torch.tensor([[0] + [1] * (e['input_ids'].shape[1] - 2) + [0]]).bool()\n"
        f"torch.save(m.model(e['input_ids'], e['attention_mask'], c).detach(), {str(tmp_path / 'l.pt')!r})\n"
    )
    hidden = tiny_bert.with_name(tiny_bert.name + "_moved")
    tiny_bert.rename(hidden)  # the original model folder is gone
    try:
        subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    finally:
        hidden.rename(tiny_bert)
    there = torch.load(tmp_path / "l.pt")
    assert torch.equal(here, there)
    assert loaded.labels == ["LOC", "MISC", "ORG", "PER"]
    assert loaded.meta["data"]["max_length"] == 128 and "threshold" in loaded.meta["decode"]


def test_teacher_cli_on_a_slice_of_real_conll(tiny_bert, tmp_path):
    from conftest import require_shared

    conll = require_shared("conll2003")
    run_cli("distill.teacher", "data=conll2003", f"data.dir={conll}", f"model.name_or_path={tiny_bert}",
            "trainer=fast_dev_run", "data.limit_train=64", "data.limit_eval=32",
            f"hydra.run.dir={tmp_path}")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["data"]["options"]["tag_columns"] == [-1]
    assert metrics["dev"]["documents"] == 32 and (tmp_path / "best.ckpt").is_file()
    assert load_checkpoint(tmp_path).meta["decode"]["flat"] is True


def test_step_timer_counts_steps_not_validation_or_epoch_starts(monkeypatch):
    from distill.train import run

    clock = iter([0.0, 1.0, 3.0, 100.0, 200.0, 201.5])
    monkeypatch.setattr(run.time, "perf_counter", lambda: next(clock))
    timer = run.StepTimer()
    assert timer.median is None
    timer.on_train_epoch_start(None, None)
    for _ in range(3):  # ends at 0, 1, 3: steps of 1 s and 2 s
        timer.on_train_batch_end(None, None, None, None, 0)
    timer.on_validation_start(None, None)
    timer.on_train_batch_end(None, None, None, None, 0)  # 100: after validation, not a step
    timer.on_train_epoch_start(None, None)
    timer.on_train_batch_end(None, None, None, None, 0)  # 200: the next epoch's first step
    timer.on_train_batch_end(None, None, None, None, 0)  # 201.5
    assert timer.seconds == [1.0, 2.0, 1.5]
    assert timer.median == 1.5


def test_still_rising_warns_only_when_the_last_quarter_improves():
    from distill.train.run import still_rising

    assert still_rising([0.5, 0.6, 0.7]) is None  # too few validations to say
    assert still_rising([0.80, 0.81, 0.812, 0.809, 0.811, 0.81, 0.813, 0.812]) is None  # flat end
    message = still_rising([0.2, 0.5, 0.7, 0.75, 0.78, 0.80, 0.806, 0.811])  # last 2 of 8: +1.1
    assert "80.00 before the last 2 validations, 81.10 in them" in message
    assert "trainer.max_epochs" in message and "\n" not in message
    # the last quarter rounds up (9 validations: the last 3) and needs a 0.5-point gain
    assert still_rising([0.1] * 6 + [0.104, 0.1, 0.1]) is None
    assert still_rising([0.1] * 6 + [0.106, 0.1, 0.1]) is not None
