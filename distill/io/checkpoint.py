"""The checkpoint format: self-contained, safe Lightning checkpoints of teachers and students.

A Lightning checkpoint of this project carries, under the ``"distill"`` key, everything needed
to rebuild the model in a new process with no access to the original config or model folder: the
encoder config (JSON), the tokenizer files (bytes: a sentencepiece ``.model`` is binary; checkpoints
written before stored them as text, which still loads), the label list, head, data-window and
decode settings. Loading never unpickles arbitrary objects: ``torch.load(weights_only=True)`` (or
safetensors for exported folders) refuses any payload that is not plain tensors and containers.
"""

from __future__ import annotations

import json
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

from distill.errors import CheckpointError
from distill.model.encoders import without_pooler
from distill.model.span_ner import SpanNER

FORMAT = "distill-checkpoint/1"
BEST = "best.ckpt"


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    """The tokenizer's saved files as {file name: bytes} (``torch.load(weights_only=True)``
    reads bytes back)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def load_tokenizer_files(files: dict[str, bytes | str]):
    """The tokenizer of :func:`tokenizer_files`' output (text values: older checkpoints, UTF-8)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            if Path(name).name != name:
                raise CheckpointError(f"tokenizer file name {name!r} is not a plain file name")
            if not isinstance(content, (bytes, str)):
                raise CheckpointError(f"tokenizer file {name!r}: expected bytes or text, found "
                                      f"{type(content).__name__}")
            Path(tmp, name).write_bytes(content.encode("utf-8") if isinstance(content, str)
                                        else content)
        return AutoTokenizer.from_pretrained(tmp)


def metadata(model: SpanNER, tokenizer, data: dict, decode: dict, **extra) -> dict:
    """The ``"distill"`` entry of a checkpoint (plain JSON-able values only)."""
    return {
        "format": FORMAT,
        "encoder_config": model.encoder.config.to_json_string(use_diff=False),
        "labels": list(model.labels),
        "head": dict(model.head_config),
        "tokenizer": tokenizer_files(tokenizer),
        "data": json.loads(json.dumps(data)),
        "decode": dict(decode),
        **json.loads(json.dumps(extra)),
    }


@dataclass
class LoadedModel:
    model: SpanNER
    tokenizer: object
    meta: dict
    path: Path
    extra: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return self.model.labels


def build_from_metadata(meta: dict) -> tuple[SpanNER, object]:
    """An untrained SpanNER and tokenizer with the architecture ``meta`` describes."""
    config_dict = json.loads(meta["encoder_config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    encoder = without_pooler(AutoModel.from_config(config))
    model = SpanNER(encoder, meta["labels"], **meta["head"])
    return model, load_tokenizer_files(meta["tokenizer"])


def safe_load(path: Path) -> dict:
    """``torch.load`` restricted to tensors and plain containers, with one-line errors."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path}: refused to load: it holds pickled Python objects that "
                              f"could run code ({first})") from None
    # IndexError: what the weights_only unpickler raises on bytes that are no pickle at all
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupted or truncated: "
                              f"{first})") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: a folder without {BEST}") from None


def load_checkpoint_file(file: Path) -> LoadedModel:
    """A ``.ckpt`` file of this project, for inference, in eval mode."""
    ckpt = safe_load(file)
    meta = ckpt.get("distill") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a distill checkpoint (no {FORMAT!r} metadata)")
    model, tokenizer = build_from_metadata(meta)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{file}: weights do not match the architecture it declares "
                              f"({str(err).splitlines()[0]})") from None
    model.eval()
    return LoadedModel(model, tokenizer, meta, file)
