"""``python -m distill.bench models=[<ckpt>,<ckpt>,<export dir>,bert-4x768]``: CPU latency
(Hydra config: conf/bench.yaml; the measuring is :mod:`distill.report.bench`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from distill.cli import entry, one_line_errors
from distill.report.bench import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    entry(main)
