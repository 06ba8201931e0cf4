"""One function loads any teacher or student: a checkpoint file, a run folder holding ``best.ckpt``,
or a ``format=hf`` export folder."""

from __future__ import annotations

import os
from pathlib import Path

from distill.errors import CheckpointError
from distill.io.checkpoint import BEST, LoadedModel, load_checkpoint_file
from distill.io.export_format import load_hf_folder


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder holding ``best.ckpt``."""
    p = Path(path)
    if p.is_dir() and (p / BEST).is_file():
        return p / BEST
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file or folder")
    return p


def load_checkpoint(path: str | os.PathLike) -> LoadedModel:
    """Load a teacher or student (checkpoint file, run folder or HF export folder) for
    inference, in eval mode."""
    file = resolve(path)
    if file.is_dir():
        return load_hf_folder(file)
    return load_checkpoint_file(file)
