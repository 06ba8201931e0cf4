"""Span-level NER metrics as a torchmetrics ``Metric`` (sum-reduced states, so DDP just works)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torchmetrics import Metric


class SpanF1(Metric):
    """Micro P/R/F1, per-type P/R/F1 and the sentence exact-match rate on
    (document, char_start, char_end, type) triples.

    ``update`` takes, per document, the predicted and the gold (start, end, type) collections.
    Exact match is the share of documents whose predicted set equals the gold set (the
    "complete extraction rate"). A document must be passed whole, exactly once.
    """

    full_state_update = False

    def __init__(self, labels: list[str], **kwargs):
        super().__init__(**kwargs)
        self.labels = list(labels)
        self.index = {label: k for k, label in enumerate(self.labels)}
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(len(self.labels), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("exact", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("documents", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: Iterable[Iterable[tuple]], gold: Iterable[Iterable[tuple]]) -> None:
        tp, fp, fn = (torch.zeros_like(self.tp) for _ in range(3))
        for pred_doc, gold_doc in zip(predicted, gold, strict=True):
            pred_set = {(s, e, t) for s, e, t, *_ in pred_doc}
            gold_set = {(s, e, t) for s, e, t, *_ in gold_doc}
            for target, spans in ((tp, pred_set & gold_set), (fp, pred_set - gold_set),
                                  (fn, gold_set - pred_set)):
                for _, _, label in spans:
                    target[self.index[label]] += 1
            self.exact += int(pred_set == gold_set)
            self.documents += 1
        self.tp += tp
        self.fp += fp
        self.fn += fn

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn = self.tp.sum(), self.fp.sum(), self.fn.sum()
        precision, recall, f1 = _prf(tp, fp, fn)
        result = {"precision": precision, "recall": recall, "f1": f1,
                  "exact_match": self.exact.double() / self.documents.clamp_min(1).double(),
                  "documents": self.documents.clone()}  # counts from the synced (all-rank) states
        per_type = _prf(self.tp, self.fp, self.fn)
        for k, label in enumerate(self.labels):
            for name, values in zip(("precision", "recall", "f1"), per_type):
                result[f"{label}/{name}"] = values[k]
            result[f"{label}/support"] = self.tp[k] + self.fn[k]
        return result


def _prf(tp, fp, fn):
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    precision = tp / (tp + fp).clamp_min(1)
    recall = tp / (tp + fn).clamp_min(1)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    return precision, recall, f1


def as_report(metric: SpanF1) -> dict:
    """The metric's value as JSON-ready nested dict: f1, precision, recall, exact_match, per_type,
    plus the raw counts (support = gold entities)."""
    values = {k: float(v) for k, v in metric.compute().items()}
    report = {k: values[k] for k in ("f1", "precision", "recall", "exact_match")}
    report["documents"] = int(values["documents"])
    report["per_type"] = {
        label: {"f1": values[f"{label}/f1"], "precision": values[f"{label}/precision"],
                "recall": values[f"{label}/recall"],
                "support": int(values[f"{label}/support"])}
        for label in metric.labels
    }
    return report
