"""The export folder format: ``distill.json`` (checkpoint metadata minus weights), the tokenizer
files (written and read as bytes), and for ``format=hf`` ``model.safetensors`` + ``config.json``,
loaded back by :func:`load_hf_folder` (safetensors and JSON only: nothing is unpickled)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from distill.errors import CheckpointError
from distill.io.checkpoint import (BEST, LoadedModel, build_from_metadata, load_tokenizer_files,
                                   tokenizer_files)

EXPORT_FORMAT = "distill-export/1"
META_FILE = "distill.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
PARITY_FILE = "parity.json"
# Metadata keys of a checkpoint that an export folder keeps (the tokenizer goes to files).
META_KEYS = ("encoder_config", "labels", "head", "data", "decode", "info")
PICKLED = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth", "model.ckpt", BEST)


def read_export_meta(folder: str | os.PathLike) -> dict:
    """The ``distill.json`` of an export folder, checked; CheckpointError if absent/invalid."""
    folder = Path(folder)
    file = folder / META_FILE
    if not file.is_file():
        raise CheckpointError(f"{folder}: not a distill export folder (no {META_FILE}; export "
                              f"one with: python -m distill.export ckpt=<checkpoint>)")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file}: not valid JSON ({' '.join(str(err).split())})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{file}: not distill export metadata (expected format "
                              f"{EXPORT_FORMAT!r})")
    for key in ("labels", "head", "data", "decode"):
        if key not in meta:
            raise CheckpointError(f"{file}: missing field {key!r}")
    return meta


def read_export_tokenizer(folder: Path, meta: dict):
    """The tokenizer saved beside ``distill.json`` (None for a shape export, which has none)."""
    names = meta.get("tokenizer_files") or []
    if not names:
        return None
    files = {}
    for name in names:
        if not isinstance(name, str) or Path(name).name != name:
            raise CheckpointError(f"{folder / META_FILE}: tokenizer file name {name!r} is not a "
                                  "plain file name")
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: tokenizer file {name} is missing")
        files[name] = path.read_bytes()
    return load_tokenizer_files(files)


def load_hf_folder(folder: str | os.PathLike) -> LoadedModel:
    """Load a ``format=hf`` export folder: safetensors weights + JSON metadata, nothing pickled."""
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        onnx = [n for n in ONNX_FILES.values() if (folder / n).is_file()]
        if onnx:
            raise CheckpointError(f"{folder}: an ONNX export folder ({', '.join(onnx)}) has no "
                                  f"PyTorch weights: use runtime=onnx (or runtime=onnx-int8), or "
                                  f"export format=hf for PyTorch")
        pickled = [n for n in PICKLED if (folder / n).exists()]
        if pickled:
            raise CheckpointError(f"{folder}: refused to load {pickled[0]} (pickled weights could "
                                  f"run code); only {WEIGHTS_FILE} folders are loaded")
        raise CheckpointError(f"{folder}: no {BEST} (run folder) and no {WEIGHTS_FILE} "
                              "(exported folder)")
    meta = read_export_meta(folder)
    config = folder / CONFIG_FILE
    encoder_config = (config.read_text(encoding="utf-8") if config.is_file()
                      else meta.get("encoder_config"))
    if not encoder_config:
        raise CheckpointError(f"{folder}: no {CONFIG_FILE} (encoder config)")
    try:
        json.loads(encoder_config)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config}: not valid JSON ({err.msg})") from None
    tokenizer = read_export_tokenizer(folder, meta)
    if tokenizer is None:
        raise CheckpointError(f"{folder}: no tokenizer files listed in {META_FILE}")
    full = {k: v for k, v in meta.items() if k != "tokenizer_files"}
    full.update(encoder_config=encoder_config, tokenizer=tokenizer_files(tokenizer))
    try:
        model, _ = build_from_metadata(full)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{folder}: metadata does not describe a model "
                              f"({type(err).__name__}: {err})") from None
    from safetensors.torch import load_model

    try:
        load_model(model, folder / WEIGHTS_FILE, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: weights do not match the architecture "
                              f"({' '.join(str(err).split())[:300]})") from None
    except Exception as err:  # safetensors' own error for corrupt files
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: not a readable safetensors file "
                              f"({' '.join(str(err).split())[:200]})") from None
    model.eval()
    return LoadedModel(model, tokenizer, full, folder)


def export_meta(meta: dict, kind: str, tokenizer_names: list[str], **extra) -> dict:
    """``distill.json``: the checkpoint metadata minus weights and tokenizer contents."""
    out = {"format": EXPORT_FORMAT, "kind": kind}
    out.update({k: meta[k] for k in META_KEYS if k in meta})
    out["tokenizer_files"] = list(tokenizer_names)
    out.update(extra)
    return json.loads(json.dumps(out))


def write_tokenizer(tokenizer, folder: Path) -> list[str]:
    if tokenizer is None:
        return []
    files = tokenizer_files(tokenizer)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return sorted(files)
