"""``python -m distill.predict ckpt=<ckpt>``: entities of new text, as canonical JSONL (Hydra config:
conf/predict.yaml; the Python API is :class:`distill.deploy.predict.Predictor`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from distill.cli import entry, one_line_errors
from distill.deploy.predict import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    entry(main)
