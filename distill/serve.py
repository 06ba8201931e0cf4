"""``python -m distill.serve ckpt=<ckpt> host=127.0.0.1 port=8000``: an HTTP prediction server
(Hydra config: conf/serve.yaml; the app is :mod:`distill.deploy.server`).

PyTorch's OpenMP threads sleep between calls here (``OMP_WAIT_POLICY=PASSIVE`` unless set):
spinning after each model call takes the cores from the event loop and the clients -- a 6-layer
teacher on 2 cores, 8 clients: 30.9 texts/s with OMP_WAIT_POLICY=ACTIVE, 78.0 passive
(docs/results.md) -- as onnxruntime's threads do not spin either (:class:`distill.deploy.runners.OnnxRunner`)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from distill.cli import entry, one_line_errors  # noqa: E402
from distill.deploy.server import run  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    entry(main)
