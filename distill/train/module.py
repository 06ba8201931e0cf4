"""The one LightningModule that trains teachers and students.

A teacher trains on the GlobalPointer loss alone. A student is the same module given a frozen
teacher (or its cached logits) and a ``kd`` config; its loss adds the distillation term:

    loss = α · T² · KL(p_teacher ‖ p_student) + (1 − α) · MLCE(student, gold) [+ β · hidden MSE]

(see :mod:`distill.train.losses`). Unlabeled windows take only the distillation term.
"""

from __future__ import annotations

import functools
import logging

import pytorch_lightning as pl
import torch
from torch import nn
from transformers import get_scheduler

from distill.io import checkpoint
from distill.eval.decode import collect_windows, merge_windows
from distill.train.losses import (KD_LOSSES, hidden_state_mse, loss_name,
                                  multilabel_categorical_crossentropy)
from distill.eval.metrics import SpanF1, as_report
from distill.model.span_ner import SpanNER, span_mask

log = logging.getLogger("distill")

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


class NERModule(pl.LightningModule):
    """``optim`` holds the parameter-group settings (``lr`` for the encoder, ``head_lr``,
    ``weight_decay``, ``warmup`` share of the steps); ``optimizer(param_groups)`` and
    ``scheduler(optimizer=, num_warmup_steps=, num_training_steps=)`` are what the ``optim`` and
    ``scheduler`` config groups build (Hydra partials; AdamW and a linear schedule when not
    given); ``kd_loss(student, teacher, valid, temperature)`` is the ``kd/loss`` group's term
    (else ``kd["loss"]`` names one of :data:`~distill.train.losses.KD_LOSSES`)."""

    def __init__(self, model: SpanNER, tokenizer, data_config: dict, optim: dict, decode: dict,
                 kd: dict | None = None, teacher: SpanNER | None = None,
                 layer_map: list[int] | None = None, teacher_cache=None, info: dict | None = None,
                 optimizer=None, scheduler=None, kd_loss=None, alignment=None):
        super().__init__()
        optim, kd = dict(optim), dict(kd or {})
        self.kd_loss = kd_loss or KD_LOSSES[kd.get("loss") or "softmax"]
        if kd:
            kd["loss"] = loss_name(self.kd_loss)
        self.save_hyperparameters(
            {"optim": optim, "decode": dict(decode), "kd": kd or None,
             "data": dict(data_config), "info": dict(info or {})})
        self.model, self.tokenizer = model.train(), tokenizer  # from_pretrained leaves eval mode
        self.optim, self.decode_cfg, self.kd = optim, dict(decode), kd
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_factory = scheduler or functools.partial(get_scheduler, "linear")
        self.data_config, self.info = dict(data_config), dict(info or {})
        # The teacher is not a registered submodule: it is neither trained nor saved.
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.teacher_cache = teacher_cache
        # cross-tokenizer KD (distill.train.alignment.CharAlignment): the teacher reads its own
        # tokenization of each student window; its logits are remapped onto the student's spans
        self.alignment = alignment
        self.layer_map = list(layer_map or [])
        self.hidden_projections = None
        if self.kd.get("beta", 0) > 0 and teacher is not None:
            s_width, t_width = model.encoder.config.hidden_size, teacher.encoder.config.hidden_size
            self.hidden_projections = nn.ModuleList(
                nn.Linear(s_width, t_width) if s_width != t_width else nn.Identity()
                for _ in self.layer_map)
        self.metrics = nn.ModuleDict({"val": SpanF1(model.labels), "test": SpanF1(model.labels)})
        # per split, the documents of this evaluation not scored yet: {doc: (window predictions,
        # window offsets)} and {doc: gold}
        self._pending: dict[str, tuple[dict, dict]] = {"val": ({}, {}), "test": ({}, {})}
        self.reports: dict[str, dict] = {}

    @property
    def teacher(self) -> SpanNER | None:
        return self._teacher[0] if self._teacher else None

    def forward(self, batch, output_hidden_states: bool = False):
        return self.model(batch["input_ids"], batch["attention_mask"], batch["content_mask"],
                          output_hidden_states=output_hidden_states)

    # -- training -------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """The teacher goes to this rank's device; the logit store is built there (after
        Lightning has moved the module: ``setup`` still runs on the CPU), each rank labelling its
        share of the chunks, then read by every rank."""
        if self.teacher is not None:
            self.teacher.to(self.device)
        if self.teacher_cache is not None and (self.kd.get("alpha", 0) > 0 or self.pseudo_labels):
            self.teacher_cache.prepare(self.teacher, self.device, self.trainer.is_global_zero,
                                       self.trainer.strategy.barrier, self.trainer.global_rank,
                                       self.trainer.world_size)

    def on_train_epoch_start(self) -> None:
        if self.alignment is not None and self.trainer.is_global_zero:
            self.alignment.log(f"epoch {self.current_epoch}: kd alignment")

    @property
    def pseudo_labels(self) -> bool:
        """``kd.pseudo_labels``: the teacher's decoded spans are the gold of unlabeled windows."""
        return bool(self.kd.get("pseudo_labels", False)) and (
            self.teacher is not None or self.teacher_cache is not None)

    def training_step(self, batch, batch_idx):
        alpha = float(self.kd.get("alpha", 0.0)) if self.teacher is not None or self.teacher_cache else 0.0
        beta = float(self.kd.get("beta", 0.0)) if self.hidden_projections is not None else 0.0
        outputs = self(batch, output_hidden_states=beta > 0)
        logits, hidden = outputs if beta > 0 else (outputs, None)
        valid = span_mask(batch["content_mask"])
        labeled = batch["labeled"]
        loss = torch.zeros((), device=self.device)
        teacher_logits = teacher_hidden = None
        kd_valid = valid
        if alpha > 0 or beta > 0 or self.pseudo_labels:
            teacher_logits, teacher_hidden = self.teacher_outputs(batch, need_hidden=beta > 0)
            if self.alignment is not None:
                teacher_logits, paired = teacher_logits
                kd_valid = valid & paired  # spans only one tokenization expresses: left out
        if alpha < 1:
            targets, weights = batch["targets"], labeled
            if self.pseudo_labels:  # hard labels: the teacher's decision on the unlabeled windows
                threshold = float(self.decode_cfg.get("threshold", 0.0))
                unlabeled = ~labeled.bool()[:, None, None, None]
                targets = torch.where(unlabeled, teacher_logits > threshold, targets.bool())
                weights = torch.ones_like(labeled)
            gold = multilabel_categorical_crossentropy(logits, targets, valid, weights)
            self.log("train/loss_gold", gold)
            loss = loss + (1 - alpha) * gold
        if alpha > 0:
            kd = self.kd_loss(logits, teacher_logits, kd_valid, float(self.kd.get("temperature", 1.0)))
            self.log("train/loss_kd", kd)
            loss = loss + alpha * kd
        if beta > 0:
            pairs_s = [hidden[k + 1] for k in range(len(self.layer_map))]
            pairs_t = [teacher_hidden[t + 1] for t in self.layer_map]
            hid = hidden_state_mse(pairs_s, pairs_t, batch["attention_mask"], self.hidden_projections)
            self.log("train/loss_hidden", hid)
            loss = loss + beta * hid
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def teacher_outputs(self, batch, need_hidden: bool = False):
        """Teacher logits for the batch (from the cache when there is one) and, when asked,
        its hidden states (always live). With an ``alignment``, the logits are a pair
        (remapped logits, paired mask) in the student's grid."""
        if self.teacher_cache is not None and not need_hidden:
            if "teacher_logits" in batch:  # read from the store by the DataLoader's collate
                logits = batch["teacher_logits"]
            else:
                n = batch["input_ids"].shape[1]
                logits = self.teacher_cache.batch(batch["window_ids"], n).to(self.device)
            return (self.teacher_cache.paired(logits) if self.alignment is not None else logits), None
        if self.alignment is not None:
            t = {k: v.to(self.device) for k, v in self.alignment.teacher_batch(batch["window_ids"]).items()}
            out = self.teacher(t["input_ids"], t["attention_mask"], t["content_mask"])
            return self.alignment.remap(out, batch["window_ids"], batch["input_ids"].shape[1]), None
        out = self.teacher(batch["input_ids"], batch["attention_mask"], batch["content_mask"],
                           output_hidden_states=need_hidden)
        return out if need_hidden else (out, None)

    # -- evaluation -----------------------------------------------------------------------
    def _eval_step(self, batch, split: str) -> None:
        """Decode the batch's windows; score each document once all its windows are in. A long
        document spans several batches, all on this rank (the sampler shards by document). A
        padding batch (a rank with no document) is run, so the rank joins the metric sync, and
        not scored."""
        if batch.get("padding"):
            self(batch)
            return
        windows, gold = self._pending[split]
        collect_windows(windows, self(batch), batch["offsets"], batch["doc_indices"],
                        self.model.labels, self.decode_cfg.get("threshold", 0.0))
        gold.update(batch["gold"])
        self._score(split, [d for d, n in batch["doc_windows"].items() if len(windows[d][0]) == n])

    def _score(self, split: str, docs) -> None:
        windows, gold = self._pending[split]
        flat = self.decode_cfg.get("flat", False)
        predicted = []
        for d in docs:
            predictions, offsets = windows.pop(d)
            predicted.append(merge_windows(predictions, flat, offsets))
        self.metrics[split].update([[(p.start, p.end, p.type) for p in doc] for doc in predicted],
                                   [gold.pop(d) for d in docs])

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, split: str) -> None:
        self._score(split, list(self._pending[split][0]))  # cut short (limit_*_batches)
        metric = self.metrics[split]
        report = as_report(metric)
        self.reports["dev" if split == "val" else "test"] = report
        for key in ("f1", "precision", "recall", "exact_match"):
            self.log(f"{split}/{key}", report[key], prog_bar=key == "f1")
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- optimisation & checkpoints ----------------------------------------------------------
    def configure_optimizers(self):
        groups: dict[tuple[float, float], list] = {}
        head_lr = float(self.optim.get("head_lr", self.optim["lr"]))
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            lr = float(self.optim["lr"]) if name.startswith("model.encoder.") else head_lr
            decay = 0.0 if any(k in name for k in NO_DECAY) else float(self.optim.get("weight_decay", 0.0))
            groups.setdefault((lr, decay), []).append(param)
        optimizer = self.optimizer_factory(
            [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()])
        self._new_rows_lr(optimizer)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(float(self.optim.get("warmup", 0.1)) * total)
        scheduler = self.scheduler_factory(optimizer=optimizer, num_warmup_steps=warmup,
                                           num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _new_rows_lr(self, optimizer) -> None:
        """``optim.new_rows_lr``: the embedding rows vocabulary extension added
        (``encoder.config.distill_base_vocab_size`` on) step at that rate instead of ``lr``.

        They share one matrix with the old rows, so no param group can hold them, and scaling
        their gradient is wrong for Adam (its step is invariant to the gradient's scale). Instead
        each optimizer step's update of those rows is rescaled: rows ← before + (after − before)
        · new_rows_lr / lr. For optimizers whose update is lr times an lr-independent quantity
        (AdamW incl. its decoupled weight decay, Adam, SGD with momentum) this is exactly the
        step a group at new_rows_lr would take, under any schedule that scales every group
        alike; it costs one copy of the new rows per step."""
        new_lr = self.optim.get("new_rows_lr")
        encoder = self.model.encoder
        base = getattr(encoder.config, "distill_base_vocab_size", None)
        weight = encoder.get_input_embeddings().weight
        if new_lr is None or base is None or not weight.requires_grad or base >= weight.shape[0]:
            if new_lr is not None:
                log.info("optim.new_rows_lr=%s: no new embedding rows, ignored", new_lr)
            return
        ratio = float(new_lr) / float(self.optim["lr"])
        if ratio == 1.0:
            return
        saved: list[torch.Tensor] = []

        def before(opt, args, kwargs) -> None:
            saved[:] = [weight.detach()[base:].clone()]

        @torch.no_grad()
        def after(opt, args, kwargs) -> None:
            if saved:
                rows = weight[base:]
                rows.copy_(saved[0] + (rows - saved[0]) * ratio)
                saved.clear()

        optimizer.register_step_pre_hook(before)
        optimizer.register_step_post_hook(after)
        log.info("optim.new_rows_lr=%s: embedding rows %d.. step at %.3g x lr", new_lr, base, ratio)

    def on_save_checkpoint(self, ckpt: dict) -> None:
        ckpt["distill"] = checkpoint.metadata(self.model, self.tokenizer, self.data_config,
                                              self.decode_cfg, info=self.info)
