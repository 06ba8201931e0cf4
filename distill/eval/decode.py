"""Decoding span logits into entities, shared by training, predict (PyTorch) and ONNX.

Decoding is one parallel threshold over the (types, n, n) logits (NumPy or torch, no loop over
spans); window predictions are then mapped to character offsets and merged per document.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, order=True)
class Prediction:
    start: int
    end: int
    type: str
    score: float


def threshold_spans(logits, threshold: float = 0.0) -> list[np.ndarray]:
    """Per window, the (type, i, j, score) rows of every span whose logit exceeds ``threshold``.

    ``logits`` is (B, C, n, n), torch or NumPy; masked spans are −inf and never pass."""
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    b, c, i, j = np.nonzero(logits > threshold)
    rows = np.stack([c, i, j, logits[b, c, i, j]], axis=1) if len(b) else np.zeros((0, 4))
    cuts = np.searchsorted(b, np.arange(1, logits.shape[0]))
    return np.split(rows, cuts)


def window_predictions(rows: np.ndarray, offsets, labels: list[str]) -> list[Prediction]:
    """Token spans of one window -> character spans (first token's start, last token's end)."""
    return [
        Prediction(offsets[int(i)][0], offsets[int(j)][1], labels[int(c)], float(s))
        for c, i, j, s in rows
    ]


def merge_windows(predictions: list[list[Prediction]], flat: bool = False) -> list[Prediction]:
    """Union of the windows' predictions of one document, keeping the highest score of a span
    seen in several overlapping windows; with ``flat``, non-overlapping spans greedily by score."""
    best: dict[tuple[int, int, str], float] = {}
    for window in predictions:
        for p in window:
            key = (p.start, p.end, p.type)
            if p.score > best.get(key, float("-inf")):
                best[key] = p.score
    merged = [Prediction(s, e, t, score) for (s, e, t), score in best.items()]
    if flat:
        merged = greedy_non_overlapping(merged)
    return sorted(merged)


def greedy_non_overlapping(predictions: list[Prediction]) -> list[Prediction]:
    """Keep spans by descending score, dropping any that overlaps one already kept."""
    kept: list[Prediction] = []
    for p in sorted(predictions, key=lambda p: (-p.score, p.start, p.end, p.type)):
        if all(p.end <= q.start or q.end <= p.start for q in kept):
            kept.append(p)
    return kept


def decode_batch(logits, offsets, doc_indices, labels, threshold=0.0, flat=False):
    """Windows of a batch -> {doc_index: merged predictions}. Every document of the batch gets
    an entry (possibly empty); the windows of one document must all be in the batch."""
    per_doc: dict[int, list[list[Prediction]]] = {}
    for rows, offs, doc in zip(threshold_spans(logits, threshold), offsets, doc_indices):
        per_doc.setdefault(int(doc), []).append(window_predictions(rows, offs, labels))
    return {doc: merge_windows(windows, flat) for doc, windows in per_doc.items()}
