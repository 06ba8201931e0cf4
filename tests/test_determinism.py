"""Same seed and config on CPU: the same metrics.json (and the same weights) twice, in two
different processes, with dropout on and shuffling across epochs."""

from __future__ import annotations

import json

import torch

from cli_util import QUIET, call, popen
from distill.io.checkpoint import safe_load

TIMING = {"seconds", "examples_per_second", "step_seconds"}


def normalized(run_dir) -> dict:
    """metrics.json without timing fields, with the run dir replaced by a placeholder."""
    text = (run_dir / "metrics.json").read_text().replace(str(run_dir.resolve()), "<run>")
    metrics = json.loads(text.replace(str(run_dir), "<run>"))
    metrics["train"] = {k: v for k, v in metrics["train"].items() if k not in TIMING}
    return metrics


def test_same_seed_same_metrics_twice(tiny_bert, tmp_path):
    args = [f"model.name_or_path={tiny_bert}", "trainer.max_epochs=2", "data.limit_train=24",
            "data.batch_size=8", "data.limit_eval=20", "seed=7", *QUIET]
    first, second = tmp_path / "first", tmp_path / "second"
    proc = popen("distill.teacher", *args, f"hydra.run.dir={first}")  # a separate process...
    call("distill.teacher", *args, f"hydra.run.dir={second}")  # ...and this one, meanwhile
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]

    a, b = normalized(first), normalized(second)
    assert a["train"]["steps"] == 6 and a["dev"]["documents"] == 20
    assert a == b
    wa = safe_load(first / "last.ckpt")["state_dict"]
    wb = safe_load(second / "last.ckpt")["state_dict"]
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_another_seed_gives_other_weights(tiny_bert, tmp_path):
    """The comparison above is not vacuous: the seed does reach the weights."""
    args = [f"model.name_or_path={tiny_bert}", "trainer=fast_dev_run", "data.limit_train=16",
            "data.limit_eval=4", *QUIET]
    call("distill.teacher", *args, "seed=1", f"hydra.run.dir={tmp_path / 'a'}")
    call("distill.teacher", *args, "seed=2", f"hydra.run.dir={tmp_path / 'b'}")
    wa = safe_load(tmp_path / "a" / "last.ckpt")["state_dict"]
    wb = safe_load(tmp_path / "b" / "last.ckpt")["state_dict"]
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
