"""Attention heads of a width-pruned encoder: finding the zeroed ones and removing them for real.

Width pruning (:mod:`distill.train.width`) zeroes a pruned head -- its query/key/value rows and
biases and its columns of the attention output projection -- so checkpoints and HF exports keep
the shapes a transformers config can express (transformers 5 has no ``prune_heads``). A zeroed
head adds exactly nothing to the block's output, yet it still costs its matmuls. For inference
(the PyTorch runner, the ONNX export, latency measurements) :func:`without_zeroed_heads` returns a
copy with those heads physically removed -- the same function, fewer FLOPs. Such a copy is not
saved: it does not reload with ``AutoModel``.

BERT-style blocks (``attention.self``: BERT, RoBERTa, ...) only. MPNet adds one relative-position
bias of all heads, shared by every layer, to each layer's scores, so its heads stay zeroed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from distill.model.span_ner import encoder_layers


def block_parts(layer: nn.Module) -> dict | None:
    """The linear maps of one BERT or MPNet block that width pruning touches (None: unknown), with
    where they live: ``qkv_names`` (attributes of ``att``), ``out_owner``.``out_name``."""
    if hasattr(layer.attention, "self"):  # BERT, RoBERTa, ...
        att, names = layer.attention.self, ["query", "key", "value"]
        owner, out_name = layer.attention.output, "dense"
    elif hasattr(layer.attention, "attn"):  # MPNet
        att, names = layer.attention.attn, ["q", "k", "v"]
        owner, out_name = att, "o"
    else:
        return None
    return {"att": att, "qkv": [getattr(att, n) for n in names], "qkv_names": names,
            "out": getattr(owner, out_name), "out_owner": owner, "out_name": out_name,
            "up": layer.intermediate.dense, "down": layer.output.dense, "act": layer.intermediate}


def head_size(encoder: nn.Module) -> int:
    config = encoder.config
    return config.hidden_size // config.num_attention_heads


def remove_heads(layer: nn.Module, keep: list[int], d: int) -> None:
    """Keep only heads ``keep`` (of size ``d``) of one block, physically, in place."""
    from transformers.pytorch_utils import prune_linear_layer

    p = block_parts(layer)
    index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep]).to(p["out"].weight.device)
    for name, lin in zip(p["qkv_names"], p["qkv"]):
        setattr(p["att"], name, prune_linear_layer(lin, index, dim=0))
    setattr(p["out_owner"], p["out_name"], prune_linear_layer(p["out"], index, dim=1))
    p["att"].num_attention_heads = len(keep)
    p["att"].all_head_size = len(keep) * d


@torch.no_grad()
def zeroed_heads(encoder: nn.Module) -> list[list[int]]:
    """Per layer, the heads that contribute exactly nothing: query/key/value rows and biases and
    output-projection columns all zero (what width pruning leaves)."""
    d = head_size(encoder)
    found = []
    for layer in encoder_layers(encoder):
        p = block_parts(layer)
        if p is None:
            found.append([])
            continue
        heads = p["out"].in_features // d
        zero = p["out"].weight.view(p["out"].weight.shape[0], heads, d).eq(0).all(2).all(0)
        for lin in p["qkv"]:
            zero &= lin.weight.view(heads, d, -1).eq(0).flatten(1).all(1)
            if lin.bias is not None:
                zero &= lin.bias.view(heads, d).eq(0).all(1)
        found.append([h for h in range(heads) if zero[h]])
    return found


def without_zeroed_heads(model: nn.Module) -> tuple[nn.Module, list[list[int]]]:
    """(``model``, []) when it has no zeroed heads or is not a BERT-style encoder; else (a copy
    with them removed, the removed heads per layer). The copy's encoder config records them in
    ``pruned_heads`` ({layer: [heads]}, as transformers 4 did)."""
    layers = encoder_layers(model.encoder)
    if not layers or not hasattr(layers[0].attention, "self"):
        return model, []
    removed = zeroed_heads(model.encoder)
    heads = model.encoder.config.num_attention_heads
    # a layer whose heads are all zero keeps them (an empty attention is not worth a special case)
    removed = [r if len(r) < heads else [] for r in removed]
    if not any(removed):
        return model, []
    model = copy.deepcopy(model)
    d = head_size(model.encoder)
    for layer, drop in zip(encoder_layers(model.encoder), removed):
        if drop:
            remove_heads(layer, [h for h in range(heads) if h not in drop], d)
    model.encoder.config.pruned_heads = {k: r for k, r in enumerate(removed) if r}
    return model, removed
