"""Lightning checkpoint I/O that never leaves half a file behind, and never unpickles code.

Lightning's :class:`TorchCheckpointIO` stages a save in a temporary file of the *system* temp
folder and moves it over; when that folder is on another file system the move is a copy, so a
kill during it can leave a truncated ``last.ckpt`` that a later resume, compare or predict would
read. :class:`AtomicCheckpointIO` writes to a temporary file in the checkpoint's own folder,
fsyncs it and ``os.replace``-s it over the target (atomic on POSIX): readers see the old file or
the new one, nothing in between. Loading (resume, ``validate(ckpt_path=...)``) goes through
:func:`distill.io.checkpoint.safe_load` (``weights_only=True``) unless Lightning is explicitly told
``weights_only=False``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from distill.io.atomic import write_atomic
from distill.io.checkpoint import safe_load


def save_atomic(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save(payload)`` to ``path`` via a temp file in the same folder and a rename."""
    write_atomic(path, lambda handle: torch.save(payload, handle), mode="wb")


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` with same-folder temp file + ``os.replace`` saves and
    ``weights_only`` loads (pass it as ``Trainer(plugins=[AtomicCheckpointIO()])``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:  # an explicit opt-out by the caller
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return safe_load(Path(path))
