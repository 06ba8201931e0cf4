"""DDP on CPU (gloo, 2 processes) through Lightning's own launcher: the dev/test metrics of a
distributed run (summed over ranks) equal a single-process evaluation of the same checkpoint;
only rank 0 writes, into the one Hydra run dir; the student's teacher cache is built once."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl

from cli_util import QUIET, run
from distill.io.load import load_checkpoint
from distill.data.datamodule import NERDataModule
from distill.train.module import NERModule

# 21 evaluation documents: 11 on rank 0, 10 on rank 1. One document per evaluation batch keeps
# the arithmetic identical to the single-process run (no batch-shape-dependent rounding).
DATA = ["data.limit_train=24", "data.batch_size=4", "data.limit_eval=21", "data.eval_batch_size=1"]
DDP = ["trainer=ddp", "trainer.devices=2", "trainer.max_epochs=1", *QUIET]


def single_process_reports(checkpoint, data: dict) -> dict:
    """Dev and test reports of ``checkpoint`` evaluated in this process on one device."""
    loaded = load_checkpoint(checkpoint)
    dm = NERDataModule(data["dir"], data["files"]["train"], data["files"]["dev"],
                       data["files"]["test"], format=data["format"], options=data["options"],
                       flat=data["flat"], max_length=data["max_length"], stride=data["stride"],
                       limit_train=24, limit_eval=21, eval_batch_size=1)
    dm.read(labels=loaded.labels)
    dm.encode(loaded.tokenizer)
    module = NERModule(loaded.model, loaded.tokenizer, dm.config(), {"lr": 0.0},
                       loaded.meta["decode"])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.test(module, datamodule=dm, verbose=False)
    return module.reports


@pytest.fixture(scope="module")
def teacher_ddp(tiny_bert, tmp_path_factory):
    """A 2-process teacher run with Hydra's default (timestamped) run dir, from an empty cwd."""
    cwd = tmp_path_factory.mktemp("ddp_cwd")
    result = run("distill.teacher", f"model.name_or_path={tiny_bert}", *DATA, *DDP, cwd=cwd)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    return cwd


def test_ddp_teacher_writes_once_into_one_run_dir(teacher_ddp):
    (run_dir,) = (teacher_ddp / "outputs" / "teacher").iterdir()  # rank 1 made no other dir
    assert [p.name for p in teacher_ddp.iterdir()] == ["outputs"]
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [".hydra", "best.ckpt", "last.ckpt", "metrics.json", "teacher.log",
                     "train_ddp_process_1.log"]
    assert not list(run_dir.glob("**/*.tmp"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3  # 24 windows / 2 ranks / batch size 4


def test_ddp_metrics_equal_a_single_process_evaluation(teacher_ddp):
    (run_dir,) = (teacher_ddp / "outputs" / "teacher").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dev"]["documents"] == metrics["test"]["documents"] == 21  # both ranks counted
    assert metrics["checkpoint"] == str((run_dir / "best.ckpt").resolve())
    reports = single_process_reports(run_dir / "best.ckpt", metrics["data"])
    assert reports["dev"] == metrics["dev"]  # f1, P, R, exact match, per-type P/R/F1 and support
    assert reports["test"] == metrics["test"]
    assert sum(t["support"] for t in reports["dev"]["per_type"].values()) > 0


def test_ddp_student_builds_the_teacher_cache_once(teacher_ddp, tmp_path):
    (teacher_dir,) = (teacher_ddp / "outputs" / "teacher").iterdir()
    run_dir, cache = tmp_path / "student", tmp_path / "cache"
    run("distill.student", f"teacher={teacher_dir}", "student.depth=1", *DATA, *DDP,
        f"kd.cache_dir={cache}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert len(list(cache.glob("*.store"))) == 1  # one store, its chunks labelled by the ranks
    assert len(list(cache.glob("*.teacher_eval.json"))) == 1  # and one entry of the teacher's metrics
    assert len(list(cache.iterdir())) == 2
    assert "teacher logits cached" in (run_dir / "student.log").read_text()
    assert "teacher logits cached" not in (run_dir / "train_ddp_process_1.log").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3 and metrics["kd"]["cache_used"] is True
    reports = single_process_reports(run_dir / "best.ckpt", metrics["data"])
    assert reports["dev"] == metrics["dev"] and reports["test"] == metrics["test"]
    assert metrics["teacher"]["dev"]["documents"] == 21


def test_teacher_cache_is_built_on_the_training_device(tiny_teacher_ckpt, monkeypatch):
    """The cache build runs after Lightning has moved the module to its device (``setup`` runs
    before that, on the CPU, so a GPU run would label every window on the CPU)."""
    from distill.train.kd_cache import TeacherCache

    loaded = load_checkpoint(tiny_teacher_ckpt)
    data = loaded.meta["data"]
    dm = NERDataModule(data["dir"], data["files"]["train"], data["files"]["dev"],
                       format=data["format"], limit_train=8, limit_eval=4, max_length=data["max_length"])
    dm.read(labels=loaded.labels)
    dm.encode(loaded.tokenizer)
    events = []
    strategy_cls = type(pl.Trainer(accelerator="cpu", devices=1, logger=False).strategy)
    original = strategy_cls.model_to_device
    monkeypatch.setattr(strategy_cls, "model_to_device",
                        lambda self: (events.append("model_to_device"), original(self))[1])
    monkeypatch.setattr(TeacherCache, "prepare",
                        lambda self, teacher, device, *a: events.append(("prepare", str(device))))
    cache = TeacherCache.__new__(TeacherCache)
    module = NERModule(loaded.model, loaded.tokenizer, dm.config(), {"lr": 0.0}, loaded.meta["decode"],
                       kd={"alpha": 0.5}, teacher=load_checkpoint(tiny_teacher_ckpt).model,
                       teacher_cache=cache)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert events[:2] == ["model_to_device", ("prepare", "cpu")], events


def test_teacher_evaluation_uses_this_rank_s_own_gpu(monkeypatch):
    """evaluate_teacher's one-device Trainer: under torchrun rank k evaluates on GPU k, not all
    ranks on the first; on the CPU one device."""
    from distill.student import this_rank_device

    monkeypatch.setenv("LOCAL_RANK", "3")
    assert this_rank_device("gpu") == [3] and this_rank_device("cuda") == [3]
    assert this_rank_device("cpu") == 1
    monkeypatch.delenv("LOCAL_RANK")
    assert this_rank_device("gpu") == [0]


def test_ddp_evaluation_with_fewer_documents_than_ranks(tiny_bert, tmp_path):
    """One dev and one test document, two ranks: rank 1 gets no document. It must still take part
    in the metric sync (a padding batch) instead of skipping the loop and leaving rank 0 waiting
    for ever; the document is scored once."""
    data = ["data.limit_train=8", "data.batch_size=4", "data.limit_eval=1"]
    run("distill.teacher", f"model.name_or_path={tiny_bert}", *data, *DDP,
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dev"]["documents"] == metrics["test"]["documents"] == 1
