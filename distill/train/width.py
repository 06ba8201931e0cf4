"""Width pruning of a student: attention heads and FFN neurons kept by importance on training data.

Importance (Michel et al. 2019): a mask of ones multiplies each head's context vector (the input
of the attention output projection) and each FFN neuron's activation; the score of a head or a
neuron is Σ_batches |∂L/∂mask| with L the gold GlobalPointer loss (multilabel categorical
cross-entropy) of the student on training batches (``gradient``), or the L2 norm of the weights
that read and write it (``magnitude``). Scores are computed on the student after layer pruning.

FFN neurons are removed (``intermediate_size`` becomes ``ffn``: an HF export reloads with
``AutoModel``). transformers 5.x has neither ``head_mask`` nor ``prune_heads`` nor
``config.pruned_heads``, and a BERT config cannot express fewer heads of the same head size, so a
pruned head is zeroed instead (its query/key/value rows and output-projection columns): exactly
the same function as removing it, the same shapes (checkpoints and exports reload), and a fixed
point of training (every gradient into a zeroed head is 0). ``physical=True`` removes the heads
for real, in memory only; such a model does not reload. Inference removes them the same way
(:func:`distill.model.heads.without_zeroed_heads`: the PyTorch runner and the ONNX export).
"""

from __future__ import annotations

import torch
from torch import nn

from distill.errors import ConfigError
from distill.model.heads import block_parts, head_size, remove_heads
from distill.model.span_ner import SpanNER, encoder_layers, span_mask

IMPORTANCE = ("gradient", "magnitude")


def _parts(layer: nn.Module) -> dict:
    parts = block_parts(layer)
    if parts is None:
        raise ConfigError(f"student.heads: unsupported encoder block {type(layer).__name__}")
    return parts


def _int_or_none(value, key: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: expected an integer (or null for all)")
    if not low <= value <= high:
        raise ConfigError(f"{key}={value}: expected {low}..{high} (the teacher's per-layer count)")
    return value


def check_width(config, heads, ffn, importance: str = "gradient", batches: int = 32):
    """Validated (heads, ffn): ``ConfigError`` naming ``student.heads`` / ``student.ffn``."""
    heads = _int_or_none(heads, "student.heads", 1, config.num_attention_heads)
    ffn = _int_or_none(ffn, "student.ffn", 1, config.intermediate_size)
    if importance not in IMPORTANCE:
        raise ConfigError(f"student.importance={importance!r}: expected one of {list(IMPORTANCE)}")
    if not isinstance(batches, int) or isinstance(batches, bool) or batches < 1:
        raise ConfigError(f"student.importance_batches={batches!r}: expected a positive integer")
    return heads, ffn


def head_dim(model: SpanNER) -> int:
    return head_size(model.encoder)


def importance(model: SpanNER, batches, kind: str = "gradient"):
    """(heads (L, H), ffn (L, I)) scores of every head and FFN neuron of ``model``."""
    layers = [_parts(layer) for layer in encoder_layers(model.encoder)]
    d = head_dim(model)
    if kind == "magnitude":
        heads, ffn = [], []
        for p in layers:
            w = torch.cat([m.weight for m in p["qkv"]], dim=0)  # (3·H·d, hidden)
            rows = w.view(3, -1, d, w.shape[1]).pow(2).sum(dim=(0, 2, 3))
            cols = p["out"].weight.view(p["out"].weight.shape[0], -1, d).pow(2).sum(dim=(0, 2))
            heads.append((rows + cols).sqrt())
            ffn.append((p["up"].weight.pow(2).sum(1) + p["down"].weight.pow(2).sum(0)).sqrt())
        return torch.stack(heads).detach(), torch.stack(ffn).detach()
    from distill.train.losses import multilabel_categorical_crossentropy

    n_heads = layers[0]["out"].in_features // d
    device = next(model.parameters()).device
    head_mask = torch.ones(len(layers), n_heads, device=device, requires_grad=True)
    ffn_mask = torch.ones(len(layers), layers[0]["up"].out_features, device=device, requires_grad=True)
    hooks = []
    for k, p in enumerate(layers):
        def pre(module, args, k=k):
            x = args[0]
            return (x.view(*x.shape[:-1], n_heads, d).mul(head_mask[k][:, None]).flatten(-2),) + args[1:]

        def post(module, args, output, k=k):
            return output * ffn_mask[k]
        hooks += [p["out"].register_forward_pre_hook(pre), p["act"].register_forward_hook(post)]
    was_training = model.training
    model.eval()  # no dropout: the scores are deterministic
    heads = torch.zeros(len(layers), n_heads, device=device)
    ffn = torch.zeros_like(ffn_mask)
    try:
        for batch in batches:
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                           batch["content_mask"].to(device))
            loss = multilabel_categorical_crossentropy(
                logits, batch["targets"].to(device), span_mask(batch["content_mask"].to(device)),
                batch["labeled"].to(device))
            gh, gf = torch.autograd.grad(loss, [head_mask, ffn_mask])
            heads += gh.abs()
            ffn += gf.abs()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return heads, ffn


def train_batches(dataset, count: int, batch_size: int):
    """The first ``count`` batches of ``dataset`` in order (at most all of it)."""
    for start in range(0, min(len(dataset), count * batch_size), batch_size):
        yield dataset.collate(list(range(start, min(start + batch_size, len(dataset)))))


def _keep(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


@torch.no_grad()
def prune_width(model: SpanNER, heads: int | None, ffn: int | None, head_scores=None,
                ffn_scores=None, physical: bool = False) -> dict:
    """Keep ``heads`` heads and ``ffn`` FFN neurons per layer (the highest scores), in place.
    Returns what was kept: {"heads": [[...] per layer], "ffn": count}."""
    from transformers.pytorch_utils import prune_linear_layer

    layers = [_parts(layer) for layer in encoder_layers(model.encoder)]
    config = model.encoder.config
    d = head_dim(model)
    kept: dict = {"heads": None, "ffn": None}
    if ffn is not None and ffn < layers[0]["up"].out_features:
        for k, p in enumerate(layers):
            index = _keep(ffn_scores[k], ffn).to(p["up"].weight.device)
            block = encoder_layers(model.encoder)[k]
            block.intermediate.dense = prune_linear_layer(p["up"], index, dim=0)
            block.output.dense = prune_linear_layer(p["down"], index, dim=1)
        config.intermediate_size = ffn
        kept["ffn"] = ffn
    if heads is not None and heads < config.num_attention_heads:
        kept["heads"] = []
        for k, p in enumerate(layers):
            keep = _keep(head_scores[k], heads)
            drop = [h for h in range(config.num_attention_heads) if h not in set(keep.tolist())]
            kept["heads"].append(keep.tolist())
            if physical:
                remove_heads(encoder_layers(model.encoder)[k], keep.tolist(), d)
                continue
            for h in drop:
                rows = slice(h * d, (h + 1) * d)
                for lin in p["qkv"]:
                    lin.weight[rows] = 0
                    lin.bias[rows] = 0
                p["out"].weight[:, rows] = 0
    return kept


def narrow(student: SpanNER, dataset, heads, ffn, kind: str = "gradient", batches: int = 32,
           batch_size: int = 8) -> dict:
    """Validate, score and prune ``student`` in place; the ``student`` metrics entries."""
    heads, ffn = check_width(student.encoder.config, heads, ffn, kind, batches)
    if heads is None and ffn is None:
        return {}
    head_scores, ffn_scores = importance(student, train_batches(dataset, batches, batch_size), kind)
    kept = prune_width(student, heads, ffn, head_scores, ffn_scores)
    return {"heads": heads, "ffn": ffn, "kept_heads": kept["heads"], "importance": kind,
            "importance_batches": batches, "params": effective_params(student, kept),
            "intermediate_size": student.encoder.config.intermediate_size}


def effective_params(model: SpanNER, kept: dict | None) -> int:
    """Parameters of ``model`` not counting zeroed (pruned) heads."""
    total = sum(p.numel() for p in model.parameters())
    if kept and kept.get("heads"):
        config = model.encoder.config
        d = head_dim(model)
        for k, keep in enumerate(kept["heads"]):
            dropped = config.num_attention_heads - len(keep)
            total -= dropped * d * (3 * config.hidden_size + 3 + config.hidden_size)
    return total
