"""Models of a given shape with random weights (``bert-LxH``, for latency measurements) and padded
example inputs that exercise every mask (for tracing and export checks)."""

from __future__ import annotations

import re

import torch
from transformers import AutoModel, BertConfig

from distill.errors import ConfigError
from distill.model.encoders import without_pooler
from distill.model.span_ner import SpanNER

SHAPE = re.compile(r"^bert-(\d+)x(\d+)$")
SHAPE_LABELS = ["LOC", "MISC", "ORG", "PER"]
SHAPE_VOCAB = 30522
SHAPE_HEAD_SIZE = 64


def parse_shape(spec: str) -> tuple[int, int] | None:
    match = SHAPE.match(str(spec))
    return (int(match.group(1)), int(match.group(2))) if match else None


def shape_model(spec: str):
    """(SpanNER, checkpoint-style metadata) of a random-weights ``bert-LxH`` model, eval mode."""
    shape = parse_shape(spec)
    if shape is None:
        raise ConfigError(f"{spec!r}: not a model shape (expected bert-LxH, e.g. bert-4x768)")
    layers, hidden = shape
    heads = max(1, hidden // 64)
    if layers < 1 or hidden < 1 or hidden % heads:
        raise ConfigError(f"{spec!r}: layers and hidden size must be positive, hidden a "
                          "multiple of 64 (or below 64)")
    config = BertConfig(vocab_size=SHAPE_VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=512)
    torch.manual_seed(0)
    encoder = without_pooler(AutoModel.from_config(config))  # same attention as checkpoints
    model = SpanNER(encoder, SHAPE_LABELS, head="global_pointer", head_size=SHAPE_HEAD_SIZE).eval()
    meta = {"format": "distill-checkpoint/1",
            "encoder_config": config.to_json_string(use_diff=False),
            "labels": list(SHAPE_LABELS), "head": dict(model.head_config),
            "data": {"max_length": 512, "stride": 128, "flat": False},
            "decode": {"threshold": 0.0, "flat": False},
            "info": {"shape": str(spec), "random_weights": True}}
    return model, meta


def example_inputs(vocab_size: int, batch: int = 2, tokens: int = 16) -> tuple:
    """Padded example inputs that exercise every mask (dims > 1, so none is specialised)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab_size - 1), vocab_size, (batch, tokens), generator=g)
    attention = torch.ones(batch, tokens, dtype=torch.long)
    content = torch.ones(batch, tokens, dtype=torch.bool)
    content[:, 0] = False
    content[:, -1] = False
    attention[-1, tokens // 2:] = 0
    content[-1, tokens // 2 - 1:] = False
    return ids, attention, content
