"""``python -m distill.export ckpt=<ckpt>``: an ONNX (or Hugging Face-style) folder for serving
(Hydra config: conf/export.yaml; the export itself is :mod:`distill.deploy.export`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from distill.cli import entry, one_line_errors
from distill.deploy.export import export


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@one_line_errors
def main(cfg: DictConfig) -> None:
    summary = export(ckpt=cfg.get("ckpt"), output=cfg.get("output"), format=cfg.format,
                     quantize=cfg.get("quantize"), shape=cfg.get("shape"),
                     parity_docs=int(cfg.parity_docs), atol=float(cfg.atol), opset=int(cfg.opset),
                     threads=cfg.get("threads"), optimize=cfg.get("optimize") or "int8",
                     reduce_range=cfg.get("reduce_range", "auto"),
                     int8_embeddings=bool(cfg.get("int8_embeddings")),
                     attention=cfg.get("attention") or "plain")
    print(f"exported to {summary['output']}", flush=True)


if __name__ == "__main__":
    entry(main)
