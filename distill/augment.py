"""``python -m distill.augment data=<dataset> output=<file.jsonl>``: the training split with swapped
mentions, as JSONL for ``data.unlabeled`` or ``data.extra_train`` (Hydra config: conf/augment.yaml;
the method is :mod:`distill.data.augment`)."""

from __future__ import annotations

import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from distill.cli import entry, one_line_errors
from distill.data.augment import mention_swap
from distill.data.readers import write_jsonl
from distill.errors import ConfigError, DataError

log = logging.getLogger("distill")


@hydra.main(version_base="1.3", config_path="../conf", config_name="augment")
@one_line_errors
def main(cfg: DictConfig) -> None:
    if not cfg.get("output"):
        raise ConfigError("output: required (the JSONL file to write)")
    datamodule = instantiate(cfg.data)
    datamodule.read()
    train = datamodule.splits["train"]
    docs, counts = mention_swap(train.docs, copies=int(cfg.copies), seed=int(cfg.seed))
    if not docs:
        raise DataError(f"{train.path}: no document with non-overlapping entities to rewrite")
    write_jsonl(docs, cfg.output)
    log.info("mention swap: %d documents from %d of %s (%d mentions replaced); not rewritten: "
             "%d without entities, %d with overlapping entities -> %s", counts["written"],
             counts["documents"], train.path, counts["mentions_swapped"],
             counts["without_entities"], counts["overlapping_entities"], cfg.output)


if __name__ == "__main__":
    entry(main)
