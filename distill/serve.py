"""``python -m distill.serve ckpt=<ckpt> host=127.0.0.1 port=8000``: an HTTP prediction server
(Hydra config: conf/serve.yaml; the app is :mod:`distill.deploy.server`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from distill.cli import entry, one_line_errors
from distill.deploy.server import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    entry(main)
