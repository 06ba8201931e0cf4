"""Encoder adaptation before NER training: a short masked-language-model phase (``model.adapt=mlm``)
on the training text (plus transfer text), run once and cached per encoder, tokenizer, text and
settings.

Why: ``model.extend_vocab`` gives every new token (e.g. the Chinese characters an English MiniLM
maps to [UNK]) one embedding row, all starting at the same point. NER fine-tuning on a few
thousand sentences hardly separates them; a few hundred MLM steps on the same text do, since
predicting a masked character from its neighbours is what gives an embedding its meaning.

* **Model.** ``AutoModelForMaskedLM.from_config(encoder.config)`` with the (extended) encoder put
  in as its base model -- the phase trains the encoder object the NER model uses -- and the
  decoder tied to the word embeddings. An MLM head found in a local encoder folder's
  ``model.safetensors`` (keys outside the base model, e.g. BERT's ``cls.*``) is loaded into it,
  the bias padded with zeros for the new rows; otherwise (the offline sentence-transformers
  MiniLM has none) the head is fresh and trains with the phase. The head is dropped afterwards.
* **What trains.** ``adapt_train=new_rows``: the new embedding rows only (the old rows' gradient
  is zeroed before each step and the embedding matrix has no weight decay, so they stay
  bit-identical) plus the head; ``all``: the whole encoder plus the head.
* **Loop.** A plain torch loop (AdamW, linear decay, ``DataCollatorForLanguageModeling`` at 15%
  masking; whole-word masking is moot for characters): a short phase needs no checkpoints,
  validation, loggers or DDP, and a second Lightning Trainer would write into the run dir. The
  global RNG state is forked, so a run reads the same random numbers afterwards whether the
  phase ran or came from the cache.
* **Cache.** ``<adapt_cache>/<digest>/`` (default ``$DISTILL_CACHE/adapt``, else
  ``~/.cache/distill/adapt``, the folder the offline encoders use), the digest over the encoder's
  weights after extension (so the new-row init counts), the tokenizer, the text and the settings;
  the encoder and tokenizer saved with ``save_pretrained`` plus ``adapt.json``, written as one
  staged folder (complete or absent). A hit loads the weights into the encoder and logs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from distill.errors import ConfigError
from distill.io.atomic import staged_folder

log = logging.getLogger("distill")

MODES = ("none", "mlm")
TRAIN = ("new_rows", "all")
MARKER = "adapt.json"
DEFAULTS = {"steps": 500, "lr": 5e-4, "batch_size": 32, "max_length": 128, "train": "new_rows",
            "mlm_probability": 0.15, "seed": 0}


def cache_root() -> Path:
    """``$DISTILL_CACHE/adapt`` if set, else ``~/.cache/distill/adapt``."""
    return Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "distill").expanduser() / "adapt"


def settings(steps=None, lr=None, batch_size=None, max_length=None, train=None,
             mlm_probability=None, seed=None) -> dict:
    """The phase's settings, unset ones at :data:`DEFAULTS`; ConfigError for a bad value."""
    given = {"steps": steps, "lr": lr, "batch_size": batch_size, "max_length": max_length,
             "train": train, "mlm_probability": mlm_probability, "seed": seed}
    out = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    if out["train"] not in TRAIN:
        raise ConfigError(f"model.adapt_train={out['train']!r}: one of {', '.join(TRAIN)}")
    for key in ("steps", "batch_size", "max_length"):
        if int(out[key]) < 1:
            raise ConfigError(f"model.adapt_{key}={out[key]}: must be at least 1")
        out[key] = int(out[key])
    out["lr"], out["mlm_probability"] = float(out["lr"]), float(out["mlm_probability"])
    return out


def digest(encoder, tokenizer, texts, config: dict) -> str:
    """A short hash of the encoder's weights, the tokenizer, the text and the settings."""
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()[:16]


def masked_lm(encoder, name_or_path: str | None = None):
    """An MLM model around ``encoder`` (its base model), decoder tied to the word embeddings;
    the head from ``name_or_path``'s weights when that folder holds one, else fresh."""
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_config(encoder.config)
    setattr(mlm, mlm.base_model_prefix, encoder)
    prefix = mlm.base_model_prefix + "."
    loaded = _load_head(mlm, prefix, name_or_path)
    mlm.tie_weights()
    out, emb = mlm.get_output_embeddings(), encoder.get_input_embeddings()
    if out.weight is not emb.weight:
        out.weight = emb.weight
    log.info("adapt: %s MLM head", "pretrained" if loaded else "fresh")
    return mlm


def _load_head(mlm, prefix: str, name_or_path: str | None) -> bool:
    path = Path(str(name_or_path)) / "model.safetensors" if name_or_path else None
    if path is None or not path.is_file():
        return False
    from safetensors import safe_open

    own = {k: v for k, v in mlm.state_dict().items() if not k.startswith(prefix)}
    found = 0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if key not in own or key.endswith("decoder.weight"):  # tied to the embeddings
                continue
            value, target = f.get_tensor(key), own[key]
            with torch.no_grad():
                if value.shape == target.shape:
                    target.copy_(value)
                elif value.dim() == 1 and value.shape[0] < target.shape[0]:  # bias, new rows 0
                    target.zero_()
                    target[: value.shape[0]] = value
                else:
                    continue
            found += 1
    return found > 0


def _windows(tokenizer, texts, max_length: int) -> list[list[int]]:
    """Every text as token-id windows of at most ``max_length`` (nothing truncated away)."""
    out: list[list[int]] = []
    for lo in range(0, len(texts), 512):
        enc = tokenizer(list(texts[lo: lo + 512]), truncation=True, max_length=max_length,
                        return_overflowing_tokens=True, stride=0)
        out += [ids for ids in enc["input_ids"] if len(ids) > 2]
    return out


def _prediction_head(mlm):
    """The module mapping hidden states to vocabulary logits (BERT's ``cls``, RoBERTa/MPNet/XLM-R's
    ``lm_head``), or None for a model that splits it up (then the model's own forward is used)."""
    for name in ("cls", "lm_head"):
        head = getattr(mlm, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    return None


def mlm_loss(mlm, batch: dict) -> torch.Tensor:
    """Cross-entropy on the masked positions. The vocabulary projection runs on those positions
    only (15 % of the tokens), not on every token as the models' own forward does: with a
    32k-row vocabulary that projection is a large share of a CPU step (a CLUENER step with the
    extended MiniLM: 7.8 s before, 4.5 s after, on a shared CPU). Same loss as ``mlm(...).loss``."""
    head = _prediction_head(mlm)
    if head is None:
        return mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   labels=batch["labels"]).loss
    base = getattr(mlm, mlm.base_model_prefix)
    hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    masked = batch["labels"] != -100
    if not bool(masked.any()):  # nothing masked in this batch (tiny texts): no signal, no NaN
        return hidden.sum() * 0.0
    logits = head(hidden[masked])
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"][masked])


def train_mlm(encoder, tokenizer, texts, config: dict, base_vocab: int,
              name_or_path: str | None = None) -> dict:
    """Run the MLM phase on ``encoder`` in place; returns ``{"steps", "loss_first", "loss_last",
    "windows", "seconds"}`` (losses averaged over the first and last tenth of the steps)."""
    from transformers import DataCollatorForLanguageModeling

    windows = _windows(tokenizer, texts, config["max_length"])
    if not windows:
        raise ConfigError("model.adapt=mlm: no text to adapt on")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        mlm = masked_lm(encoder, name_or_path).to(device).train()
        emb = encoder.get_input_embeddings().weight
        head = [p for n, p in mlm.named_parameters()
                if not n.startswith(mlm.base_model_prefix + ".") and p is not emb]
        if config["train"] == "new_rows":
            was = {n: p.requires_grad for n, p in encoder.named_parameters()}
            encoder.requires_grad_(False)
            emb.requires_grad_(True)
            body = []
        else:
            was = None
            body = [p for p in encoder.parameters() if p is not emb]
        optimizer = torch.optim.AdamW([{"params": [emb], "weight_decay": 0.0},
                                       {"params": head + body, "weight_decay": 0.01}],
                                      lr=config["lr"])
        steps = config["steps"]
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
        collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config["mlm_probability"],
                                                  return_tensors="pt")
        order: list[int] = []
        losses = []
        every = max(1, steps // 10)
        try:
            for step in range(steps):
                if len(order) < config["batch_size"]:
                    order += torch.randperm(len(windows)).tolist()
                idx, order = order[: config["batch_size"]], order[config["batch_size"]:]
                batch = {k: v.to(device) for k, v in
                         collate([{"input_ids": windows[i]} for i in idx]).items()}
                loss = mlm_loss(mlm, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config["train"] == "new_rows" and emb.grad is not None:
                    emb.grad[:base_vocab] = 0
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
                if (step + 1) % every == 0 and step + 1 < steps:
                    log.info("adapt: step %d/%d, loss %.3f (%.1f s/step)", step + 1, steps,
                             sum(losses[-every:]) / every, (time.perf_counter() - started) / (step + 1))
        finally:
            if was is not None:
                for n, p in encoder.named_parameters():
                    p.requires_grad_(was[n])
        encoder.to("cpu")
    tenth = max(1, len(losses) // 10)
    report = {"steps": len(losses), "windows": len(windows),
              "loss_first": round(sum(losses[:tenth]) / tenth, 4),
              "loss_last": round(sum(losses[-tenth:]) / tenth, 4),
              "seconds": round(time.perf_counter() - started, 2)}
    log.info("adapt: %d MLM steps on %d windows, loss %.3f -> %.3f (%.0fs)", report["steps"],
             len(windows), report["loss_first"], report["loss_last"], report["seconds"])
    return report


def adapt_encoder(encoder, tokenizer, texts, base_vocab: int, cache: str | os.PathLike | None = None,
                  name_or_path: str | None = None, **options) -> dict:
    """The MLM phase on ``encoder`` (in place), or its cached result: ``{"cache": folder,
    "reused": bool, ...the phase's report}``. ``options`` are :func:`settings`'s."""
    config = settings(**options)
    if config["train"] == "new_rows" and base_vocab >= encoder.get_input_embeddings().weight.shape[0]:
        log.warning("adapt: model.adapt_train=new_rows but the vocabulary has no new rows "
                    "(model.extend_vocab=true adds them); skipping the MLM phase")
        return {"skipped": "no new rows"}
    texts = list(texts)
    key = digest(encoder, tokenizer, texts, config)
    folder = Path(cache).expanduser() if cache else cache_root()
    folder = folder / key
    marker = folder / MARKER
    if marker.is_file() and (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{folder}: not this encoder's adaptation (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); delete it")
        report = json.loads(marker.read_text(encoding="utf-8"))
        log.info("adapt: reusing the MLM-adapted encoder in %s (%s steps, loss %s -> %s)", folder,
                 report.get("steps"), report.get("loss_first"), report.get("loss_last"))
        return {**report, "cache": str(folder), "reused": True}
    report = train_mlm(encoder, tokenizer, texts, config, base_vocab, name_or_path)
    report = {**report, "settings": config, "texts": len(texts), "base_vocab": base_vocab,
              "vocab": len(tokenizer)}
    with staged_folder(folder, MARKER, "adaptation cache entry") as tmp:
        encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("adapt: cached in %s", folder)
    return {**report, "cache": str(folder), "reused": False}

