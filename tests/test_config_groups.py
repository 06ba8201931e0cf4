"""The model, optimizer, schedule and KD loss are config groups that Hydra builds (``_target_``):
swapping one from the command line changes the object the run uses."""

from __future__ import annotations

import types

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import distill.cli  # noqa: F401  (registers the ${pkgdir:...} resolver)
from conftest import REPO
from distill.model.encoders import load_tokenizer
from distill.model.span_ner import SpanNER
from distill.student import kd_loss_fn
from distill.train import losses
from distill.train.module import NERModule
from distill.train.run import optimization
from distill.errors import ConfigError


def composed(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def optimizers_of(cfg, model: SpanNER):
    module = NERModule(model, None, {}, decode={"threshold": 0.0}, **optimization(cfg))
    module._trainer = types.SimpleNamespace(estimated_stepping_batches=100)  # what it reads
    out = module.configure_optimizers()
    return out["optimizer"], out["lr_scheduler"]["scheduler"]


def test_model_config_builds_the_span_ner(tiny_bert):
    cfg = composed("teacher", f"model.name_or_path={tiny_bert}", "model.head_size=16",
                   "model.head=efficient_global_pointer")
    model = instantiate(cfg.model, labels=["LOC", "PER"], tokenizer=load_tokenizer(str(tiny_bert)),
                        _convert_="all")
    assert isinstance(model, SpanNER) and model.labels == ["LOC", "PER"]
    assert model.head_config["head"] == "efficient_global_pointer" and model.head_config["head_size"] == 16


@pytest.mark.parametrize("overrides, kind, lr_at_end", [
    ((), torch.optim.AdamW, 0.0),                               # linear decay to 0
    (("optim=sgd",), torch.optim.SGD, 0.0),
    (("scheduler=constant",), torch.optim.AdamW, None),        # constant after warm-up
])
def test_optimizer_and_schedule_come_from_their_groups(tiny_bert, overrides, kind, lr_at_end):
    from distill.model.encoders import load_encoder

    cfg = composed("teacher", f"model.name_or_path={tiny_bert}", "optim.lr=0.01",
                   "optim.head_lr=0.02", *overrides)
    model = SpanNER(load_encoder(str(tiny_bert)), ["LOC"])
    optimizer, scheduler = optimizers_of(cfg, model)
    assert type(optimizer) is kind
    lrs = sorted({g["initial_lr"] for g in optimizer.param_groups})
    assert lrs == [0.01, 0.02]  # encoder and head groups keep their learning rates
    for _ in range(100):
        optimizer.step()
        scheduler.step()
    final = max(g["lr"] for g in optimizer.param_groups)
    assert final == pytest.approx(lr_at_end if lr_at_end is not None else 0.02)


def test_kd_loss_group_and_the_old_string_form():
    assert kd_loss_fn(composed("student", "teacher=x").kd.loss).func is losses.kd_softmax_kl
    assert kd_loss_fn(composed("student", "teacher=x", "kd/loss=mse").kd.loss).func is losses.kd_mse
    assert kd_loss_fn(composed("student", "teacher=x", "kd.loss=bce").kd.loss) is losses.kd_sigmoid_kl
    with pytest.raises(ConfigError, match="kd.loss='nope'"):
        kd_loss_fn("nope")
    assert losses.loss_name(kd_loss_fn(composed("student", "teacher=x", "kd/loss=mse").kd.loss)) == "mse"
