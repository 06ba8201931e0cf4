"""``python -m distill.student teacher=<ckpt>``: distill a teacher into a layer-pruned student.

The data config, tokenizer and label set come from the teacher checkpoint unless overridden
(``data=<name>`` or ``data.<key>=...``); the teacher's metrics are measured on the same
evaluation data, so retention compares like with like (once per teacher and evaluation data while
``kd.cache`` is true: later students read them from ``kd.cache_dir``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distill.io.checkpoint import LoadedModel
from distill.io.load import load_checkpoint
from distill.cli import entry, objective, one_line_errors
from distill.data.datamodule import NERDataModule
from distill.errors import ConfigError
from distill.io.atomic import write_atomic
from distill.model.encoders import check_max_length
from distill.train.alignment import CharAlignment, same_tokenization
from distill.train.kd_cache import TeacherCache, eval_key
from distill.model.span_ner import encoder_layers
from distill.train.module import NERModule
from distill.train.students import build_student, select_layers
from distill.train.losses import KD_LOSSES
from distill.train.run import finished_run, fit_and_evaluate, quiet_lightning, model_summary, optimization

log = logging.getLogger("distill")

# Keys of the teacher's stored data config that a student run inherits when its own are null.
# The limits too: a teacher trained on the first N documents has students trained on the same N
# (data.limit_train=<larger number> on the command line lifts it); likewise the teacher's extra
# gold-labelled files (data.extra_train=[] drops them) and its joining (data.join_train=1 undoes it).
INHERITED = ("name", "dir", "format", "options", "flat", "max_length", "stride", "holdout",
             "holdout_seed", "limit_train", "limit_eval", "extra_train", "join_train")


def student_data_config(cfg: DictConfig, teacher: LoadedModel) -> dict:
    """The student's ``data`` config with nulls filled from the teacher's."""
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
    return data


def student_datamodule(cfg: DictConfig, teacher: LoadedModel) -> NERDataModule:
    """The data module of :func:`student_data_config`."""
    return instantiate(student_data_config(cfg, teacher))


def record_resolved_config(cfg: DictConfig, **resolved) -> None:
    """Rewrite the run's ``.hydra/config.yaml`` with the values inherited from the teacher
    (``data``, ``decode``) in place of the nulls that were composed, so the file says what ran;
    the composed form stays beside it as ``config.composed.yaml``."""
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is None or not hydra_cfg.output_subdir or int(os.environ.get("LOCAL_RANK", 0)):
        return
    folder = Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir
    if not (folder / "config.yaml").is_file():
        return
    ran = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key, value in resolved.items():
        ran[key] = value
    composed = folder / "config.composed.yaml"
    if not composed.exists():
        os.replace(folder / "config.yaml", composed)
    write_atomic(folder / "config.yaml", lambda handle: handle.write(OmegaConf.to_yaml(ran)))


def this_rank_device(accelerator: str) -> int | list[int]:
    """The ``devices`` of a one-device Trainer in this process: under DDP (torchrun or Lightning's
    launcher) each rank's own GPU (``LOCAL_RANK``), not every rank on the first; one CPU device."""
    import torch

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return [int(os.environ.get("LOCAL_RANK", 0))] if gpu else 1


def evaluate_teacher(cfg: DictConfig, teacher: LoadedModel, datamodule: NERDataModule,
                     decode: dict) -> dict:
    """Dev/test metrics of the teacher on this run's evaluation data. With ``kd.cache`` they are
    measured once per (teacher weights, evaluation documents and windows, decoding, device) and
    kept in ``kd.cache_dir`` next to the teacher-logit stores: a sweep of students evaluates its
    teacher once (``from_cache`` says which)."""
    module = NERModule(teacher.model, teacher.tokenizer, datamodule.config(), {}, decode)
    accelerator = cfg.trainer.get("accelerator", "cpu")
    report = {"checkpoint": str(teacher.path.resolve()),
              "model": model_summary(module, teacher.meta.get("info", {}).get("model", "teacher"))}
    path = None
    if cfg.kd.get("cache"):
        splits = {s: datamodule.splits[s] for s in ("dev", "test") if s in datamodule.splits}
        settings = {"decode": decode, "accelerator": accelerator, "labels": list(teacher.labels),
                    "batch_size": datamodule.eval_batch_size}
        path = Path(cfg.kd.cache_dir) / f"{eval_key(teacher.model, splits, settings)}.teacher_eval.json"
        if path.is_file():
            log.info("teacher metrics on this evaluation data: %s (measured by an earlier run; "
                     "kd.cache=false measures them again)", path)
            return {**report, **json.loads(path.read_text(encoding="utf-8")), "from_cache": True}
    trainer = pl.Trainer(accelerator=accelerator, devices=this_rank_device(accelerator),
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    if "test" in datamodule.splits:
        trainer.test(module, datamodule=datamodule, verbose=False)
    teacher.model.eval()
    if path is not None:
        write_atomic(path, lambda h: json.dump(module.reports, h, indent=1))
    return {**report, **module.reports, "from_cache": False}


def learns_from_teacher_labels(kd) -> bool:
    """Whether the ``kd`` config trains on the teacher's span scores (the KL term, kd.alpha > 0)
    or its decoded spans (kd.pseudo_labels): the only ways transfer text teaches a student."""
    return kd.get("alpha", 0) > 0 or bool(kd.get("pseudo_labels"))


def train_student(cfg: DictConfig) -> dict:
    if not cfg.get("teacher"):
        raise ConfigError("teacher: required, e.g. teacher=outputs/teacher/<run>/best.ckpt")
    if (finished := finished_run(cfg)) is not None:  # this run dir holds it already
        return finished
    if cfg.data.get("unlabeled") and not learns_from_teacher_labels(cfg.kd):
        raise ConfigError(
            f"data.unlabeled={cfg.data.unlabeled}: transfer "
            "text is learnt only from the teacher (kd.alpha > 0 or kd.pseudo_labels=true); with "
            f"kd.alpha={cfg.kd.get('alpha', 0)} its windows would fill batches and teach nothing "
            "(set data.unlabeled=null for the gold-only student)")
    quiet_lightning()
    pl.seed_everything(cfg.seed, workers=True)
    teacher = load_checkpoint(cfg.teacher)
    data = student_data_config(cfg, teacher)
    datamodule = instantiate(data)
    check_max_length(datamodule.max_length, teacher.model.encoder.config,
                     f"teacher={cfg.teacher}")
    datamodule.read(labels=teacher.labels)
    student_tokenizer, teacher_datamodule = teacher.tokenizer, datamodule
    if cfg.student.init != "pretrained":  # else encoded below, with the student's tokenizer
        datamodule.encode(teacher.tokenizer)

    s = cfg.student
    teacher_layers = len(encoder_layers(teacher.model.encoder))
    layers = select_layers(teacher_layers, s.depth, s.pruning,
                           OmegaConf.to_container(s.layers) if s.get("layers") is not None else None)
    student = build_student(teacher.model, layers, s.init, s.get("name_or_path"),
                            vocab_size=len(teacher.tokenizer), pruning=s.pruning)
    width = {}
    if s.get("heads") is not None or s.get("ffn") is not None:  # width pruning (init=teacher)
        from distill.train.width import narrow
        if s.init != "teacher":
            raise ConfigError(f"student.heads/student.ffn: need student.init=teacher, not {s.init}")
        started = time.perf_counter()
        width = narrow(student, datamodule.dataset("train"), s.get("heads"), s.get("ffn"),
                       s.get("importance", "gradient"), s.get("importance_batches", 32),
                       datamodule.batch_size)
        if width:
            config = teacher.model.encoder.config
            scored = (f"{width['importance_batches']} training batches, " if width["importance"] == "gradient"
                      else "weights only, ")
            log.info("student width: %s heads of %d and %s FFN neurons of %d kept per layer, by %s "
                     "importance (%s%.1f s); %.1f M parameters without the pruned heads",
                     width["heads"] or "all", config.num_attention_heads, width["ffn"] or "all",
                     config.intermediate_size, width["importance"], scored,
                     time.perf_counter() - started, width["params"] / 1e6)
    if s.init == "pretrained":  # another encoder, with its own position limit and tokenizer
        check_max_length(datamodule.max_length, student.encoder.config,
                         f"student.name_or_path={s.name_or_path}")
        student_tokenizer = _student_tokenizer(s.name_or_path, teacher.tokenizer, datamodule)
        datamodule.encode(student_tokenizer)
    vocab = None
    if s.get("prune_vocab"):  # the tokens of the training and transfer text (then KD is aligned)
        from distill.train.vocab import prune_vocabulary
        texts = [d.text for d in datamodule.splits["train"].docs]
        if datamodule.unlabeled_split is not None:
            texts += [d.text for d in datamodule.unlabeled_split.docs]
        student_tokenizer, vocab = prune_vocabulary(student, student_tokenizer,
                                                    datamodule.dataset("train").windows, texts)
        datamodule.encode(student_tokenizer, again=True)
    aligned = student_tokenizer is not teacher.tokenizer
    if aligned:  # the teacher is evaluated on its own tokenization of the same documents
        if cfg.kd.get("beta", 0) > 0:
            why = ("student.prune_vocab=true gives the student other token ids" if vocab else
                   f"student.name_or_path={s.name_or_path} tokenizes differently")
            raise ConfigError(f"kd.beta={cfg.kd.beta}: hidden-state matching needs the teacher's "
                              f"tokenizer; {why} (set kd.beta=0)")
        teacher_datamodule = instantiate(data)
        teacher_datamodule.read(labels=teacher.labels)
        teacher_datamodule.encode(teacher.tokenizer)
    hidden_map = layers if s.init == "teacher" else select_layers(teacher_layers, len(layers), "uniform")
    if s.init == "teacher":
        log.info("student: %d of the teacher's %d layers %s (init=teacher)", len(layers),
                 teacher_layers, layers)
    else:  # its layers are the pretrained or random encoder's own; hidden states pair with these
        log.info("student: %d layers (init=%s), paired with the teacher's layers %s for hidden-state "
                 "matching", len(layers), s.init, hidden_map)

    decode = {k: (v if v is not None else teacher.meta.get("decode", {}).get(k))
              for k, v in OmegaConf.to_container(cfg.decode, resolve=True).items()}
    record_resolved_config(cfg, data=data, decode=decode)
    teacher_report = evaluate_teacher(cfg, teacher, teacher_datamodule, decode)
    kd = OmegaConf.to_container(cfg.kd, resolve=True)
    kd_loss = kd_loss_fn(kd.pop("loss", None))
    cache = None
    uses_teacher = learns_from_teacher_labels(kd)
    alignment = None
    if aligned and (uses_teacher or kd.get("beta", 0) > 0):
        alignment = CharAlignment(teacher.tokenizer, datamodule.dataset("train"),
                                  teacher.model.encoder.config.max_position_embeddings)
        alignment.log()
        if kd.get("cache") and uses_teacher and kd.get("store_floor") is not None:
            raise ConfigError(f"kd.store_floor={kd['store_floor']}: the store of a student with "
                              "another tokenizer than the teacher's is dense (set kd.store_floor=null)")
    if kd.get("cache") and uses_teacher:
        cache = TeacherCache(kd["cache_dir"], teacher.model, datamodule.dataset("train"),
                             floor=kd.get("store_floor"), alignment=alignment)
    module = NERModule(
        student, student_tokenizer, datamodule.config(), decode=decode, kd=kd, kd_loss=kd_loss,
        alignment=alignment,
        teacher=teacher.model if uses_teacher or kd.get("beta", 0) > 0 else None,
        layer_map=hidden_map, teacher_cache=cache,
        info={"role": "student", "teacher": str(teacher.path.resolve()),
              "model": f"{teacher.meta.get('info', {}).get('model', 'teacher')} -> {len(layers)} layers"},
        **optimization(cfg))
    extra = {"teacher": teacher_report,
             "student": {"depth": len(layers), "layers": layers, "pruning": s.pruning
                         if s.get("layers") is None else "explicit", "init": s.init, **width,
                         **({"vocab": vocab} if vocab else {})},
             "kd": dict(module.kd)}
    extra["kd"]["cache_used"] = cache is not None  # kd.cache is moot without a KD term
    if alignment is not None:
        extra["kd"]["alignment"] = alignment.report()
    if cache is not None:
        datamodule.train_batch_hook = cache.collate  # the train loader reads the teacher's logits

    def finalize(metrics: dict) -> None:
        _add_retention(metrics)
        if cache is not None:
            metrics["kd"]["store"] = cache.report()

    return fit_and_evaluate(cfg, module, datamodule, module.info["model"], extra, finalize=finalize)


def _student_tokenizer(name_or_path, teacher_tokenizer, datamodule):
    """The teacher's tokenizer when ``name_or_path``'s tokenizes the training texts the same way
    (same vocabulary, same ids), else its own: then KD pairs spans by characters
    (:mod:`distill.train.alignment`)."""
    from distill.model.encoders import load_tokenizer

    own = load_tokenizer(str(name_or_path))
    texts = [d.text for d in datamodule.splits["train"].docs]
    if same_tokenization(teacher_tokenizer, own, texts):
        return teacher_tokenizer
    log.info("student.name_or_path=%s tokenizes differently from the teacher (vocabulary %d vs "
             "%d): the student reads its own tokenization, KD pairs spans by characters",
             name_or_path, len(own), len(teacher_tokenizer))
    return own


def kd_loss_fn(loss):
    """The KD term the ``kd/loss`` group builds (a node with ``_target_``), or a name of
    :data:`~distill.train.losses.KD_LOSSES` (``kd.loss=bce``, as before the group existed)."""
    if loss is None or isinstance(loss, str):
        name = loss or "softmax"
        if name not in KD_LOSSES:
            raise ConfigError(f"kd.loss={name!r}: expected one of {', '.join(KD_LOSSES)} (or "
                              "kd/loss=<name> for a loss config in conf/kd/loss/)")
        return KD_LOSSES[name]
    return instantiate(loss)


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
