"""``python -m distill.teacher``: train a BERT + GlobalPointer teacher (Hydra config: conf/teacher.yaml)."""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from distill.cli import entry, objective, one_line_errors
from distill.model.encoders import check_max_length, load_tokenizer, unknown_eval_pieces
from distill.train.module import NERModule
from distill.train.run import finished_run, fit_and_evaluate, quiet_lightning, optimization

log = logging.getLogger("distill")


def train_teacher(cfg: DictConfig) -> dict:
    if (finished := finished_run(cfg)) is not None:  # this run dir holds it already
        return finished
    quiet_lightning()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    labels = datamodule.read()
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.get("trust_remote_code", False))
    train_texts = [d.text for d in datamodule.splits["train"].docs]
    unlabeled = datamodule.unlabeled_split
    model = instantiate(cfg.model, labels=labels, tokenizer=tokenizer, train_texts=train_texts,
                        unlabeled_texts=[d.text for d in unlabeled.docs] if unlabeled else [],
                        _convert_="all")
    built = getattr(model, "vocabulary_report", None)  # what extension and adaptation did
    unknown = unknown_eval_pieces(tokenizer, {name: [d.text for d in split.docs] for name, split
                                              in datamodule.splits.items() if name != "train"})
    if any(unknown.values()):
        log.info("unknown tokens first seen at evaluation (still [UNK]): %s",
                 ", ".join(f"{k} {v}" for k, v in unknown.items()))
    check_max_length(datamodule.max_length, model.encoder.config,
                     f"model.name_or_path={cfg.model.name_or_path}")
    datamodule.encode(tokenizer)
    module = NERModule(model, tokenizer, datamodule.config(), decode=cfg.decode,
                       info={"role": "teacher", "model": str(cfg.model.name_or_path)},
                       **optimization(cfg))

    def finalize(metrics: dict) -> None:
        metrics["data"]["unknown_eval_chars"] = unknown
        if built:
            metrics["model"]["vocabulary"] = built

    return fit_and_evaluate(cfg, module, datamodule, str(cfg.model.name_or_path),
                            finalize=finalize)


@hydra.main(version_base="1.3", config_path="../conf", config_name="teacher")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    return objective(cfg, train_teacher(cfg))


if __name__ == "__main__":
    entry(main)
