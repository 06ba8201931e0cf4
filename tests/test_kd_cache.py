"""The teacher-logit cache is keyed by the teacher's weights, not its file: a run's best.ckpt, its
``format=hf`` export and a re-saved checkpoint share one entry, and an HF export folder works as
a cached teacher. best.ckpt holds the weights and metadata only; last.ckpt stays complete."""

from __future__ import annotations

import json

import pytest
import torch

from cli_util import QUIET, call
from distill.data.datamodule import NERDataModule
from distill.deploy.export import export
from distill.io.checkpoint import safe_load
from distill.io.load import load_checkpoint
from distill.train.kd_cache import cache_key
from conftest import SAMPLE


@pytest.fixture(scope="module")
def hf_export(tiny_teacher_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("kd_cache") / "hf"
    export(ckpt=str(tiny_teacher_ckpt / "best.ckpt"), output=str(out), format="hf")
    return out


@pytest.fixture(scope="module")
def train_set(tiny_teacher_ckpt):
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=8, limit_eval=4,
                       max_length=48, stride=12)
    dm.read()
    dm.encode(load_checkpoint(tiny_teacher_ckpt).tokenizer)
    return dm.dataset("train")


def test_best_checkpoint_holds_weights_and_metadata_only(tiny_teacher_ckpt):
    best, last = tiny_teacher_ckpt / "best.ckpt", tiny_teacher_ckpt / "last.ckpt"
    best_ckpt, last_ckpt = safe_load(best), safe_load(last)
    assert "optimizer_states" not in best_ckpt and "lr_schedulers" not in best_ckpt
    assert best_ckpt["distill"]["format"] == "distill-checkpoint/1" and best_ckpt["state_dict"]
    assert last_ckpt["optimizer_states"] and last_ckpt["lr_schedulers"]  # resume needs them
    # AdamW keeps two tensors per parameter: without them best.ckpt is about a third
    assert best.stat().st_size < 0.5 * last.stat().st_size, (best.stat().st_size,
                                                             last.stat().st_size)


def test_cache_key_is_the_teachers_weights(tiny_teacher_ckpt, hf_export, train_set, tmp_path):
    best = tiny_teacher_ckpt / "best.ckpt"
    key = cache_key(best, train_set)
    assert cache_key(hf_export, train_set) == key
    assert cache_key(tiny_teacher_ckpt, train_set) == key  # the run folder
    assert cache_key(load_checkpoint(best).model, train_set) == key
    resaved = safe_load(best)
    resaved["distill"]["info"]["note"] = "re-saved"
    resaved["epoch"] = 99
    torch.save(resaved, tmp_path / "resaved.ckpt")
    assert cache_key(tmp_path / "resaved.ckpt", train_set) == key
    other = load_checkpoint(best).model
    with torch.no_grad():
        next(other.parameters())[0, 0] += 1.0
    assert cache_key(other, train_set) != key


def test_student_distils_from_an_hf_export_with_the_cache(hf_export, tmp_path):
    run_dir, cache = tmp_path / "student", tmp_path / "cache"
    call("distill.student", f"teacher={hf_export}", "student.depth=1", "trainer=fast_dev_run",
         "data.limit_eval=8", "kd.cache=true", f"kd.cache_dir={cache}", *QUIET,
         f"hydra.run.dir={run_dir}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["kd"]["cache_used"] and len(list(cache.glob("*.store"))) == 1
