"""Teacher logits computed once per dataset and reused by later epochs and later students.

The cache holds, for every training window, the upper triangle (i ≤ j) of the teacher's
(types, n, n) span logits in fp16, in one safetensors file named by a hash of the teacher's
weights and the windows' token ids. Rank 0 writes it (atomically); every rank reads it.

The weights are hashed tensor by tensor (names in sorted order, dtype, shape, values) with the
head settings and encoder config, not the teacher's file bytes: a run's best.ckpt, its
``format=hf`` export folder and a re-saved checkpoint of the same weights share one entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from distill.errors import CheckpointError
from distill.io.atomic import write_atomic
from distill.io.load import load_checkpoint
from distill.model.span_ner import SpanNER

log = logging.getLogger("distill")

# Encoder config entries that do not change what the encoder computes.
VOLATILE_CONFIG = ("transformers_version", "_name_or_path", "architectures", "torch_dtype",
                   "dtype", "_attn_implementation_autoset")


def model_digest(model: SpanNER, digest) -> None:
    """Feed ``digest`` what determines the model's logits: its state-dict tensors in sorted name
    order, its head settings and its encoder config."""
    config = {k: v for k, v in model.encoder.config.to_dict().items() if k not in VOLATILE_CONFIG}
    digest.update(json.dumps([model.head_config, config], sort_keys=True, default=str).encode())
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())


def cache_key(teacher: SpanNER | str | os.PathLike, dataset) -> str:
    """The cache entry of a teacher (the model, or a checkpoint file, run folder or HF export
    folder holding it) on a dataset's windows."""
    digest = hashlib.sha256()
    if isinstance(teacher, SpanNER):
        model_digest(teacher, digest)
    else:
        try:
            model_digest(load_checkpoint(teacher).model, digest)
        except CheckpointError:  # no model of this project (a stand-in file): its bytes
            with open(teacher, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    for window in dataset.windows:
        digest.update(repr((window.input_ids, window.content)).encode())
    return digest.hexdigest()[:24]


class TeacherCache:
    """Lazily built cache of the teacher's training-window logits."""

    def __init__(self, folder: str | os.PathLike, teacher: SpanNER | str | os.PathLike, dataset,
                 batch_size: int = 64):
        self.dataset, self.batch_size = dataset, batch_size
        self.path = Path(folder) / f"{cache_key(teacher, dataset)}.safetensors"
        self.values: torch.Tensor | None = None
        self.starts: torch.Tensor | None = None
        self.build_seconds: float | None = None

    def prepare(self, teacher, device, is_global_zero: bool = True, barrier=lambda: None) -> None:
        """Build the file on rank 0 if it does not exist yet, then load it on every rank."""
        if is_global_zero and not self.path.is_file():
            started = time.perf_counter()
            self._build(teacher, device)
            self.build_seconds = time.perf_counter() - started
            log.info("teacher logits cached in %.1f s: %s", self.build_seconds, self.path)
        barrier()
        tensors = load_file(self.path)
        self.values, self.starts = tensors["values"], tensors["starts"]
        if len(self.starts) != len(self.dataset) + 1:
            raise RuntimeError(f"{self.path}: cache does not match the dataset")

    @torch.no_grad()
    def _build(self, teacher, device) -> None:
        teacher = teacher.to(device).eval()
        order = sorted(range(len(self.dataset)), key=lambda i: len(self.dataset.windows[i]))
        pieces: dict[int, torch.Tensor] = {}
        for lo in range(0, len(order), self.batch_size):
            ids = order[lo : lo + self.batch_size]
            batch = self.dataset.collate(ids)
            logits = teacher(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                             batch["content_mask"].to(device)).float().cpu()
            for row, index in enumerate(ids):
                n = len(self.dataset.windows[index])
                i, j = torch.triu_indices(n, n)
                pieces[index] = logits[row, :, i, j].flatten().half()
        sizes = torch.tensor([len(pieces[i]) for i in range(len(self.dataset))])
        starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        values = torch.cat([pieces[i] for i in range(len(self.dataset))])
        payload = save({"values": values, "starts": starts})
        write_atomic(self.path, lambda handle: handle.write(payload), mode="wb")

    def batch(self, window_ids: torch.Tensor, n: int) -> torch.Tensor:
        """(B, C, n, n) float logits of the given windows, padded with −inf."""
        num_types = self.dataset.num_labels
        out = torch.full((len(window_ids), num_types, n, n), float("-inf"))
        for row, index in enumerate(window_ids.tolist()):
            length = len(self.dataset.windows[index])
            i, j = torch.triu_indices(length, length)
            flat = self.values[self.starts[index] : self.starts[index + 1]].float()
            out[row, :, i, j] = flat.view(num_types, -1)
        return out
