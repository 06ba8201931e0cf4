"""The model, top to bottom: a transformers encoder and a GlobalPointer span head.

GlobalPointer (Su Jianlin, 2021, https://spaces.ac.cn/archives/8373) scores every span (i, j)
of every entity type α as

    s_α(i, j) = (R_i q_{i,α})ᵀ (R_j k_{j,α}) / √d

where q and k are linear maps of the encoder output h and R_i is the rotary position embedding
(RoPE) of position i, which makes the score depend on the relative distance j − i. A span is an
entity of type α iff s_α(i, j) > 0. Efficient GlobalPointer (Su, 2022,
https://spaces.ac.cn/archives/8877) shares one (q, k) pair across types and adds per-type start
and end biases: s_α(i, j) = (R_i q_i)ᵀ(R_j k_j)/√d + b_α(i) + e_α(j).

Invalid spans (j < i, padding and special tokens) get −inf, so every consumer (loss, decoding,
distillation, ONNX) sees one masked tensor of shape (batch, types, n, n).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to ``x`` of shape (B, n, ..., d) along the position axis 1 (d even).

    Pairs (x[2k], x[2k+1]) are rotated by angle p · 10000^(−2k/d) at position p.
    """
    n, d = x.shape[1], x.shape[-1]
    position = torch.arange(n, device=x.device, dtype=torch.float32)
    inv_freq = torch.pow(10000.0, -torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angle = position[:, None] * inv_freq[None, :]  # (n, d/2)
    shape = (1, n) + (1,) * (x.dim() - 3) + (d,)
    cos = angle.cos().repeat_interleave(2, dim=-1).reshape(shape).to(x.dtype)
    sin = angle.sin().repeat_interleave(2, dim=-1).reshape(shape).to(x.dtype)
    rotated = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return x * cos + rotated * sin


def span_mask(content_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, n, n) bool: span (i, j) is valid iff i ≤ j and both ends are content tokens."""
    content = content_mask.bool()
    n = content.shape[1]
    upper = torch.ones(n, n, dtype=torch.bool, device=content.device).triu()
    return (content[:, :, None] & content[:, None, :] & upper)[:, None]


class GlobalPointer(nn.Module):
    """Per-type query/key projections with RoPE; returns unmasked scores (B, C, n, n)."""

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, rope: bool = True):
        super().__init__()
        self.num_types, self.head_size, self.rope = num_types, head_size, rope
        self.qk = nn.Linear(hidden_size, num_types * head_size * 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, n, _ = hidden.shape
        qk = self.qk(hidden).view(b, n, self.num_types, 2, self.head_size)
        if self.rope:  # q and k rotated in one pass (fewer ops in an exported graph)
            qk = rotary(qk)
        qk = qk.permute(0, 2, 3, 1, 4)  # (B, C, 2, n, d)
        q, k = qk[:, :, 0], qk[:, :, 1]
        return torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)


class EfficientGlobalPointer(nn.Module):
    """Shared query/key with RoPE plus per-type start/end biases (fewer parameters, faster)."""

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, rope: bool = True):
        super().__init__()
        self.num_types, self.head_size, self.rope = num_types, head_size, rope
        self.qk = nn.Linear(hidden_size, head_size * 2)
        self.bias = nn.Linear(head_size * 2, num_types * 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        qk = self.qk(hidden)  # (B, n, 2d)
        q, k = qk[..., ::2], qk[..., 1::2]
        if self.rope:
            q, k = rotary(q), rotary(k)
        scores = torch.einsum("bmd,bnd->bmn", q, k) / math.sqrt(self.head_size)
        bias = self.bias(qk).transpose(1, 2) / 2  # (B, 2C, n)
        return scores[:, None] + bias[:, 0::2, :, None] + bias[:, 1::2, None, :]


HEADS = {"global_pointer": GlobalPointer, "efficient_global_pointer": EfficientGlobalPointer}


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a transformers encoder (BERT, RoBERTa, MPNet, ...)."""
    for path in ("encoder.layer", "transformer.layer", "layer", "encoder.layers", "layers"):
        module = encoder
        for attr in path.split("."):
            module = getattr(module, attr, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise TypeError(f"cannot find the transformer layers of {type(encoder).__name__}")


class SpanNER(nn.Module):
    """Encoder + span head. ``labels`` are the entity types, in the order of the type axis.

    ``head_config`` holds the head settings (``head``, ``head_size``, ``rope``, ``dropout``) so a
    checkpoint can rebuild the module without the original Hydra config.
    """

    def __init__(self, encoder: nn.Module, labels: list[str], head: str = "global_pointer",
                 head_size: int = 64, rope: bool = True, dropout: float = 0.1):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"model.head={head!r}: expected one of {sorted(HEADS)}")
        self.encoder = encoder
        self.labels = list(labels)
        self.head_config = {"head": head, "head_size": head_size, "rope": rope, "dropout": dropout}
        self.dropout = nn.Dropout(dropout)
        self.head = HEADS[head](encoder.config.hidden_size, len(labels), head_size, rope)

    @property
    def num_layers(self) -> int:
        return len(encoder_layers(self.encoder))

    def forward(self, input_ids, attention_mask, content_mask, output_hidden_states: bool = False):
        """Masked span logits (B, C, n, n); with ``output_hidden_states`` also the encoder's
        hidden states (embeddings + one per layer)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=output_hidden_states)
        logits = self.head(self.dropout(out.last_hidden_state))
        logits = logits.masked_fill(~span_mask(content_mask), float("-inf"))
        return (logits, out.hidden_states) if output_hidden_states else logits
