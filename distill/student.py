"""``python -m distill.student teacher=<ckpt>``: distill a teacher into a layer-pruned student.

The data config, tokenizer and label set come from the teacher checkpoint unless overridden
(``data=<name>`` or ``data.<key>=...``); the teacher's metrics are measured in this run on the
same evaluation data, so retention compares like with like.
"""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distill.io.checkpoint import LoadedModel
from distill.io.load import load_checkpoint
from distill.cli import entry, objective, one_line_errors
from distill.data.datamodule import NERDataModule
from distill.errors import ConfigError
from distill.train.kd_cache import TeacherCache
from distill.model.span_ner import encoder_layers
from distill.train.module import NERModule
from distill.train.students import build_student, select_layers
from distill.train.run import finished_run, fit_and_evaluate, model_summary

log = logging.getLogger("distill")

# Keys of the teacher's stored data config that a student run inherits when its own are null.
# The limits too: a teacher trained on the first N documents has students trained on the same N
# (data.limit_train=<larger number> on the command line lifts it); likewise the teacher's extra
# gold-labelled files (data.extra_train=[] drops them).
INHERITED = ("name", "dir", "format", "options", "flat", "max_length", "stride", "holdout",
             "holdout_seed", "limit_train", "limit_eval", "extra_train")


def student_datamodule(cfg: DictConfig, teacher: LoadedModel) -> NERDataModule:
    """The data module: the student's ``data`` config with nulls filled from the teacher's."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    stored = teacher.meta.get("data", {})
    for key in INHERITED:
        if data.get(key) is None and key in stored:
            data[key] = stored[key]
    for split, name in (stored.get("files") or {}).items():
        if data.get(split) is None and name is not None:
            data[split] = name
    if data.get("dir") is None or data.get("train") is None:
        raise ConfigError(f"{teacher.path}: the teacher checkpoint names no data; pass data=<name>")
    return instantiate(data)


def evaluate_teacher(cfg: DictConfig, teacher: LoadedModel, datamodule: NERDataModule,
                     decode: dict) -> dict:
    """Dev/test metrics of the teacher on this run's evaluation data."""
    module = NERModule(teacher.model, teacher.tokenizer, datamodule.config(), cfg.optim, decode)
    trainer = pl.Trainer(accelerator=cfg.trainer.get("accelerator", "cpu"), devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    if "test" in datamodule.splits:
        trainer.test(module, datamodule=datamodule, verbose=False)
    teacher.model.eval()
    return {"checkpoint": str(teacher.path.resolve()),
            "model": model_summary(module, teacher.meta.get("info", {}).get("model", "teacher")),
            **module.reports}


def train_student(cfg: DictConfig) -> dict:
    if not cfg.get("teacher"):
        raise ConfigError("teacher: required, e.g. teacher=outputs/teacher/<run>/best.ckpt")
    if (finished := finished_run(cfg)) is not None:  # this run dir holds it already
        return finished
    pl.seed_everything(cfg.seed, workers=True)
    teacher = load_checkpoint(cfg.teacher)
    datamodule = student_datamodule(cfg, teacher)
    datamodule.read(labels=teacher.labels)
    datamodule.encode(teacher.tokenizer)

    s = cfg.student
    teacher_layers = len(encoder_layers(teacher.model.encoder))
    layers = select_layers(teacher_layers, s.depth, s.pruning,
                           OmegaConf.to_container(s.layers) if s.get("layers") is not None else None)
    student = build_student(teacher.model, layers, s.init, s.get("name_or_path"),
                            vocab_size=len(teacher.tokenizer))
    hidden_map = layers if s.init == "teacher" else select_layers(teacher_layers, len(layers), "uniform")
    log.info("student: %d of the teacher's %d layers %s (init=%s)", len(layers), teacher_layers,
             layers, s.init)

    decode = {k: (v if v is not None else teacher.meta.get("decode", {}).get(k))
              for k, v in OmegaConf.to_container(cfg.decode, resolve=True).items()}
    teacher_report = evaluate_teacher(cfg, teacher, datamodule, decode)
    kd = OmegaConf.to_container(cfg.kd, resolve=True)
    cache = None
    if kd.get("cache") and kd.get("alpha", 0) > 0:
        cache = TeacherCache(kd["cache_dir"], teacher.path, datamodule.dataset("train"))
    module = NERModule(
        student, teacher.tokenizer, datamodule.config(), cfg.optim, decode, kd=kd,
        teacher=teacher.model if kd.get("alpha", 0) > 0 or kd.get("beta", 0) > 0 else None,
        layer_map=hidden_map, teacher_cache=cache,
        info={"role": "student", "teacher": str(teacher.path.resolve()),
              "model": f"{teacher.meta.get('info', {}).get('model', 'teacher')} -> {len(layers)} layers"})
    extra = {"teacher": teacher_report,
             "student": {"depth": len(layers), "layers": layers, "pruning": s.pruning
                         if s.get("layers") is None else "explicit", "init": s.init},
             "kd": dict(kd)}
    extra["kd"]["cache_used"] = cache is not None  # kd.cache is moot without a KD term
    metrics = fit_and_evaluate(cfg, module, datamodule, module.info["model"], extra,
                               finalize=_add_retention)
    if cache is not None and cache.build_seconds is not None:
        log.info("teacher cache built in %.1f s", cache.build_seconds)
    return metrics


def _add_retention(metrics: dict) -> None:
    teacher = metrics["teacher"]
    metrics["retention"] = {
        split: metrics[split]["f1"] / teacher[split]["f1"] if teacher.get(split, {}).get("f1") else None
        for split in ("dev", "test") if metrics.get(split) and teacher.get(split)}


@hydra.main(version_base="1.3", config_path="../conf", config_name="student")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    return objective(cfg, train_student(cfg))


if __name__ == "__main__":
    entry(main)
