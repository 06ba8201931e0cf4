"""Building a student: which teacher layers to keep, and the shallower model itself."""

from __future__ import annotations

import copy
import logging
import math

from torch import nn

from distill.model.encoders import load_encoder
from distill.errors import ConfigError
from distill.model.span_ner import SpanNER, encoder_layers

log = logging.getLogger("distill")

PRUNING = ("uniform", "bottom", "top")
INITS = ("teacher", "pretrained", "random")


def select_layers(num_layers: int, depth: int | None = None, pruning: str = "uniform",
                  layers=None) -> list[int]:
    """Teacher layer indices (0-based) the student keeps.

    ``uniform``: evenly spaced, always including the last layer (PKD-skip; 12 -> 4 gives
    [2, 5, 8, 11]); ``bottom``: the first ``depth``; ``top``: the last ``depth``; or an explicit
    strictly increasing ``layers`` list."""
    if layers is not None:
        layers = list(layers)
        if not layers or not all(isinstance(k, int) and not isinstance(k, bool) for k in layers):
            raise ConfigError(f"student.layers={layers}: expected a non-empty list of integers")
        if any(k < 0 or k >= num_layers for k in layers):
            raise ConfigError(f"student.layers={layers}: indices must be in 0..{num_layers - 1} "
                              f"(the teacher has {num_layers} layers)")
        if any(b <= a for a, b in zip(layers, layers[1:])):
            raise ConfigError(f"student.layers={layers}: must be strictly increasing")
        return layers
    if not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"student.depth={depth}: expected a positive integer")
    if depth > num_layers:
        raise ConfigError(f"student.depth={depth} is larger than the teacher's {num_layers} layers")
    if pruning == "uniform":
        return [math.ceil((k + 1) * num_layers / depth) - 1 for k in range(depth)]
    if pruning == "bottom":
        return list(range(depth))
    if pruning == "top":
        return list(range(num_layers - depth, num_layers))
    raise ConfigError(f"student.pruning={pruning!r}: expected one of {list(PRUNING)}")


def keep_layers(encoder: nn.Module, layers: list[int]) -> nn.Module:
    """``encoder`` cut down, in place, to the given layers (config updated to match)."""
    blocks = encoder_layers(encoder)
    kept = nn.ModuleList(blocks[k] for k in layers)
    blocks._modules.clear()
    for k, block in enumerate(kept):
        blocks.add_module(str(k), block)
    encoder.config.num_hidden_layers = len(layers)
    return encoder


def build_student(teacher: SpanNER, layers: list[int], init: str = "teacher",
                  name_or_path: str | None = None, vocab_size: int | None = None,
                  pruning: str = "uniform") -> SpanNER:
    """A student SpanNER with ``len(layers)`` layers.

    ``teacher``: copy of the teacher's embeddings, the chosen layers and its head;
    ``pretrained``: encoder ``name_or_path`` cut to the same number of layers, chosen among its own
    by ``pruning`` (:func:`select_layers`), fresh head; ``random``: the teacher's architecture at
    the student depth, fresh weights."""
    head = dict(teacher.head_config)
    if init == "teacher":
        student = copy.deepcopy(teacher)
        keep_layers(student.encoder, layers)
        return student.train()
    if init == "pretrained":
        if not name_or_path:
            raise ConfigError("student.init=pretrained needs student.name_or_path")
        # Its own tokenizer may differ from the teacher's (vocab_size is only a hint): the caller
        # compares the tokenizations (distill.train.alignment.same_tokenization) and, where they
        # differ, distils over character-aligned spans.
        encoder = load_encoder(name_or_path)
        depth = len(layers)
        own = select_layers(len(encoder_layers(encoder)), depth, pruning)
        log.info("student encoder: %s, %d of its %d layers %s (student.pruning=%s)", name_or_path,
                 depth, len(encoder_layers(encoder)), own, pruning)
        keep_layers(encoder, own)
        return SpanNER(encoder, teacher.labels, **head)
    if init == "random":
        from transformers import AutoModel

        from distill.model.encoders import without_pooler

        config = copy.deepcopy(teacher.encoder.config)
        config.num_hidden_layers = len(layers)
        return SpanNER(without_pooler(AutoModel.from_config(config)), teacher.labels, **head)
    raise ConfigError(f"student.init={init!r}: expected one of {list(INITS)}")
