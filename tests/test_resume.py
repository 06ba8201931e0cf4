"""Resuming: a run killed with SIGKILL mid-epoch continues from its last checkpoint to exactly the
result of an uninterrupted run; a re-run sweep skips finished jobs and resumes the unfinished one;
every checkpoint is written atomically."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch

from cli_util import QUIET, call, popen
from distill.io.checkpoint import safe_load
from distill.io.checkpoint_io import AtomicCheckpointIO

STEPS = 30  # 2 epochs x 60 windows / batch size 4


@pytest.fixture(scope="module")
def nodrop_bert(tiny_bert, tmp_path_factory):
    """The tiny BERT without dropout: training is then a pure function of the data order, so a
    resumed run can be compared bit for bit with an uninterrupted one."""
    folder = tmp_path_factory.mktemp("nodrop_bert")
    for file in tiny_bert.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def args(model) -> list[str]:
    return [f"model.name_or_path={model}", "model.dropout=0.0", "trainer.max_epochs=2",
            "data.limit_train=60", "data.limit_eval=10", "data.batch_size=4",
            "callbacks.last_checkpoint.every_n_train_steps=2", *QUIET]


def saved_step(path) -> int:
    """global_step of a checkpoint (always whole: it is replaced atomically), -1 if none yet."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    except FileNotFoundError:
        return -1


def kill_in_second_epoch(proc, run_dir, timeout=300) -> None:
    """SIGKILL ``proc`` right after its first checkpoint of epoch 1 (epoch 0 was validated and
    wrote best.ckpt): mid-epoch, with best-checkpoint tracking under way."""
    deadline = time.monotonic() + timeout
    while saved_step(run_dir / "last.ckpt") <= STEPS // 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no epoch-1 checkpoint before the run ended:\n"
                                 f"{proc.communicate()[1][-3000:]}")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


@pytest.fixture(scope="module")
def runs(nodrop_bert, tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    killed, whole = base / "killed", base / "whole"
    proc = popen("distill.teacher", *args(nodrop_bert), f"hydra.run.dir={killed}")
    failures = []

    def killer():
        try:
            kill_in_second_epoch(proc, killed)
        except BaseException as err:  # reported below, in the test's thread
            failures.append(err)

    thread = threading.Thread(target=killer)
    thread.start()  # meanwhile, the uninterrupted reference run (in this process)
    call("distill.teacher", *args(nodrop_bert), f"hydra.run.dir={whole}")
    thread.join()
    if failures:
        raise failures[0]
    assert proc.returncode == -signal.SIGKILL
    interrupted = safe_load(killed / "last.ckpt")  # complete and loadable, never half-written
    assert not (killed / "metrics.json").exists()
    # resume=<run dir> alone: writes into that same dir (hydra.run.dir follows resume)
    call("distill.teacher", *args(nodrop_bert), f"resume={killed}")
    return killed, whole, interrupted


def strip(metrics: dict) -> dict:
    drop = {"seconds", "examples_per_second", "step_seconds"}
    return {k: ({kk: vv for kk, vv in v.items() if kk not in drop} if k == "train" else v)
            for k, v in metrics.items() if k not in ("checkpoint", "run")}


def best_tracking(ckpt: dict) -> dict:
    (state,) = [v for k, v in ckpt["callbacks"].items() if "'monitor': 'val/f1'" in k]
    return state


def test_killed_run_resumes_to_the_uninterrupted_result(runs):
    killed, whole, interrupted = runs
    step_at_kill = interrupted["global_step"]
    assert STEPS / 2 < step_at_kill < STEPS and interrupted["epoch"] == 1, "kill mid epoch 1"
    assert best_tracking(interrupted)["best_model_score"] is not None  # epoch 0 was validated
    resumed = json.loads((killed / "metrics.json").read_text())
    reference = json.loads((whole / "metrics.json").read_text())
    assert reference["train"]["steps"] == STEPS and reference["train"]["epochs"] == 2
    assert resumed["run"]["resumed_from"] == str(killed / "last.ckpt")
    assert resumed["run"]["resumed_at_step"] == step_at_kill  # no finished step was redone
    assert resumed["run"]["config"] == reference["run"]["config"]
    assert strip(resumed) == strip(reference)  # same steps, epochs, dev and test metrics
    # the dev curve: one value per epoch, the killed run's epoch 0 restored from last.ckpt
    assert len(reference["train"]["dev_f1"]) == 2 and reference["train"]["best_epoch"] in (0, 1)
    assert resumed["train"]["dev_f1"] == reference["train"]["dev_f1"]
    assert resumed["checkpoint"] == str((killed / "best.ckpt").resolve())
    # the same final weights, scheduler and best-checkpoint tracking: the resumed epoch went on
    # with the batches the killed one had not reached, in the same order
    a, b = safe_load(killed / "last.ckpt"), safe_load(whole / "last.ckpt")
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["lr_schedulers"] == b["lr_schedulers"]
    best_a, best_b = best_tracking(a), best_tracking(b)
    assert best_a["best_model_score"] == best_b["best_model_score"]
    assert best_a["best_model_score"] >= best_tracking(interrupted)["best_model_score"]
    assert list(best_a["best_k_models"]) == [str(killed / "best.ckpt")]


def test_sweep_rerun_skips_finished_jobs_and_resumes_the_unfinished_one(tiny_bert, tmp_path,
                                                                       monkeypatch):
    saved = []  # every checkpoint goes through the atomic CheckpointIO plugin
    original = AtomicCheckpointIO.save_checkpoint
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint",
                        lambda self, ckpt, path, **kw: saved.append(path) or original(self, ckpt, path))
    sweep = tmp_path / "sweep"
    common = [f"model.name_or_path={tiny_bert}", "trainer=fast_dev_run", "data.limit_train=20",
              "data.limit_eval=10", *QUIET]
    command = ["-m", *common, "seed=1,2", f"hydra.sweep.dir={sweep}"]
    call("distill.teacher", *command)
    done, cut = sweep / "0", sweep / "1"
    first = json.loads((done / "metrics.json").read_text())
    assert {str(done / "best.ckpt"), str(done / "last.ckpt"), str(cut / "last.ckpt")} <= set(
        map(str, saved))
    assert first["run"]["resumed_from"] is None
    stamp = (done / "metrics.json").stat().st_mtime_ns
    (cut / "metrics.json").unlink()  # job 1 died after its last checkpoint, before metrics.json
    call("distill.teacher", *command)
    assert (done / "metrics.json").stat().st_mtime_ns == stamp
    assert "already finished, skipping" in (done / "teacher.log").read_text()
    resumed = json.loads((cut / "metrics.json").read_text())
    assert resumed["run"]["resumed_from"] == str(cut / "last.ckpt")
    assert resumed["train"]["steps"] == first["train"]["steps"]

    # the same run dir with another config is refused, before anything is loaded
    result = call("distill.teacher", *common, "seed=1", "optim.lr=0.1", f"hydra.run.dir={done}",
                  check=False)
    assert result.returncode == 2
    assert result.last_line.startswith(f"error: {done}: holds a finished run of another config")


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    io, target = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    before = target.read_bytes()

    def dies_half_way(obj, handle, *a, **k):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a save

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    assert target.read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # and no temp file is left
    monkeypatch.undo()
    assert io.load_checkpoint(target)["step"] == 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_config_digest_ignores_settings_added_later_with_a_null_default(monkeypatch, tmp_path):
    """Re-running a sweep after an upgrade that added a setting (default null) still finds the
    finished jobs; any changed value is another config; digests stamped before nulls were left
    out are still recognised."""
    from omegaconf import OmegaConf
    from distill.train import run
    monkeypatch.setattr(run, "output_dir", lambda: tmp_path)
    old = OmegaConf.create({"seed": 1, "data": {"dir": "d", "unlabeled": None}, "resume": None})
    new = OmegaConf.create({"seed": 1, "data": {"dir": "d", "unlabeled": None, "extra_train": None}})
    assert run.config_digest(new) == run.config_digest(old)
    assert run.same_config(run.config_digest(old), new)
    assert run.same_config(run.config_digest(old, keep_nulls=True), old)  # a legacy stamp
    changed = OmegaConf.create({"seed": 2, "data": {"dir": "d", "unlabeled": None}})
    assert not run.same_config(run.config_digest(old), changed)
    assert not run.same_config(run.config_digest(old, keep_nulls=True), changed)
    assert run.same_config(None, changed)  # nothing stamped: trusted, as before stamps existed
