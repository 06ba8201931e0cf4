"""Fit, evaluate the best checkpoint on dev and test, write ``metrics.json``: shared by the
teacher and student commands."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from distill.checkpoint import BEST
from distill.cli import write_json_atomic
from distill.data.datamodule import NERDataModule
from distill.errors import ConfigError
from distill.module import NERModule

log = logging.getLogger("distill")

METRICS = "metrics.json"
LAST = "last.ckpt"


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def model_summary(module: NERModule, name: str) -> dict:
    model = module.model
    return {"name": name, "layers": model.num_layers,
            "hidden_size": model.encoder.config.hidden_size,
            "params": sum(p.numel() for p in model.parameters())}


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def resume_path(resume: str | None) -> str | None:
    if not resume:
        return None
    path = Path(resume)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no checkpoint to resume from ({path} not found)")
    return str(path)


def fit_and_evaluate(cfg: DictConfig, module: NERModule, datamodule: NERDataModule,
                     model_name: str, extra: dict | None = None, finalize=None) -> dict:
    """Train ``module``; evaluate its best checkpoint; write metrics.json (rank 0). Returns the
    metrics dict."""
    run_dir = output_dir()
    trainer = build_trainer(cfg)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path(cfg.get("resume")))
    seconds = time.perf_counter() - started
    best = run_dir / BEST
    ckpt_path = str(best) if best.is_file() else None
    if ckpt_path is None:
        log.warning("no %s was written (no validation ran?); evaluating the final weights", BEST)
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if "test" in datamodule.splits:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    windows = len(datamodule.splits["train"].windows)
    epochs = max(trainer.current_epoch, 1)
    metrics = {
        "model": model_summary(module, model_name),
        "dev": module.reports.get("dev"),
        **({"test": module.reports["test"]} if "test" in module.reports else {}),
        "train": {"seconds": round(seconds, 2), "epochs": trainer.current_epoch,
                  "steps": trainer.global_step,
                  "examples_per_second": round(windows * epochs / seconds, 2) if seconds else None},
        "data": datamodule.config() | {"alignment": _alignment(datamodule)},
        "checkpoint": str(best.resolve()) if ckpt_path else None,
        **(extra or {}),
    }
    if finalize is not None:
        finalize(metrics)
    if trainer.is_global_zero:
        write_json_atomic(run_dir / METRICS, metrics)
        _print_summary(metrics, run_dir)
    return metrics


def _alignment(datamodule: NERDataModule) -> dict:
    return {name: {"entities": s.report.entities, "misaligned": s.report.misaligned,
                   "unwindowed": s.report.unwindowed,
                   "unknown_token_share": round(s.report.unknown_share, 4)}
            for name, s in datamodule.splits.items() if s.report}


def _print_summary(metrics: dict, run_dir: Path) -> None:
    for split in ("dev", "test"):
        if metrics.get(split):
            m = metrics[split]
            log.info("%s: F1 %.2f  P %.2f  R %.2f  exact-match %.2f", split, 100 * m["f1"],
                     100 * m["precision"], 100 * m["recall"], 100 * m["exact_match"])
    log.info("run dir: %s", run_dir)
