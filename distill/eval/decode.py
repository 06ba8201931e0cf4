"""Decoding span logits into entities, shared by training, predict (PyTorch) and ONNX.

Decoding is one parallel threshold over the (types, n, n) logits (NumPy or torch, no loop over
spans); window predictions are then mapped to character offsets and merged per document by
:func:`merge_windows`: each span is decided by the one window in which it has the most context.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, order=True)
class Prediction:
    start: int
    end: int
    type: str
    score: float


@dataclass(frozen=True)
class SpanRows:
    """The spans above a threshold in compact form, as an exported graph's ``span_index`` and
    ``span_scores`` outputs give them: ``index`` (K, 4) rows (window, type, start, end) in
    row-major order of the (B, C, n, n) logits, ``scores`` (K,) their logits, ``windows`` = B."""

    index: np.ndarray
    scores: np.ndarray
    windows: int


def threshold_spans(logits, threshold: float = 0.0) -> list[np.ndarray]:
    """Per window, the (type, i, j, score) rows of every span whose logit exceeds ``threshold``.

    ``logits`` is (B, C, n, n), torch or NumPy -- masked spans are −inf and never pass -- or the
    :class:`SpanRows` of a graph that thresholded them itself (at most at ``threshold``)."""
    if isinstance(logits, SpanRows):
        keep = logits.scores > threshold
        b, c, i, j = logits.index[keep].T
        rows = np.stack([c, i, j, logits.scores[keep]], axis=1) if len(b) else np.zeros((0, 4))
        return np.split(rows, np.searchsorted(b, np.arange(1, logits.windows)))
    if hasattr(logits, "detach"):  # torch: select where the logits are (a GPU copies only these)
        logits = logits.detach()
        index = (logits > threshold).nonzero()
        scores = logits[tuple(index.unbind(1))].float().cpu().numpy()
        b, c, i, j = index.cpu().numpy().T
    else:
        b, c, i, j = np.nonzero(logits > threshold)
        scores = logits[b, c, i, j]
    rows = np.stack([c, i, j, scores], axis=1) if len(b) else np.zeros((0, 4))
    cuts = np.searchsorted(b, np.arange(1, logits.shape[0]))
    return np.split(rows, cuts)


def window_predictions(rows: np.ndarray, offsets, labels: list[str]) -> list[Prediction]:
    """Token spans of one window -> character spans (first token's start, last token's end)."""
    return [
        Prediction(offsets[int(i)][0], offsets[int(j)][1], labels[int(c)], float(s))
        for c, i, j, s in rows
    ]


def merge_windows(predictions: list[list[Prediction]], flat: bool = False,
                  offsets: list | None = None) -> list[Prediction]:
    """The entities of one document from its windows' predictions.

    A span is decided by the one window in which it has the most context, as in BERT's SQuAD
    sliding windows: among the windows that hold the span whole, the one that maximises
    min(content tokens left of it, content tokens right of it), a side where the window reaches
    the document's edge counting as unbounded (nothing was cut off there); ties go to the window
    that starts first. The span is an entity iff that window predicts it (with that window's
    score): a window that sees the span at its cut edge neither adds it nor takes it away (and
    only windows holding a span whole are trained on it). ``offsets`` are the windows' token offsets (as for
    :func:`window_predictions`; all windows of the document, slices of one tokenization), needed
    when there is more than one window. With ``flat``, non-overlapping spans greedily by score."""
    if len(predictions) > 1 and offsets is None:
        raise ValueError("merge_windows: the windows' offsets are needed to merge several windows")
    layout = _Layout(offsets) if len(predictions) > 1 else None
    best: dict[tuple[int, int, str], float] = {}
    for k, window in enumerate(predictions):
        for p in window:
            if layout is not None and layout.decider(p.start, p.end) != k:
                continue
            key = (p.start, p.end, p.type)
            if p.score > best.get(key, float("-inf")):
                best[key] = p.score
    merged = [Prediction(s, e, t, score) for (s, e, t), score in best.items()]
    if flat:
        merged = greedy_non_overlapping(merged)
    return sorted(merged)


class _Layout:
    """Where a document's windows lie: per window, its content tokens' character starts and ends."""

    def __init__(self, offsets: list):
        self.starts = [[b for b, e in offs if e > b] for offs in offsets]
        self.ends = [[e for b, e in offs if e > b] for offs in offsets]
        filled = [k for k, s in enumerate(self.starts) if s]
        self.first = min((self.starts[k][0] for k in filled), default=0)
        self.last = max((self.ends[k][-1] for k in filled), default=0)
        self.order = sorted(filled, key=lambda k: (self.starts[k][0], k))  # by where they start
        self.heads = [self.starts[k][0] for k in self.order]
        self.decided: dict[tuple[int, int], int | None] = {}

    def context(self, k: int, start: int, end: int) -> float:
        """min(left, right) context of the span [start, end) in window ``k`` (which holds it)."""
        starts, ends = self.starts[k], self.ends[k]
        left = bisect_left(starts, start) if starts[0] > self.first else float("inf")
        right = len(ends) - bisect_right(ends, end) if ends[-1] < self.last else float("inf")
        return min(left, right)

    def decider(self, start: int, end: int) -> int | None:
        """The window with the most context for the span (None if no window holds it whole)."""
        key = (start, end)
        if key not in self.decided:
            # Windows starting at or before the span, latest first; a window that starts earlier
            # also ends earlier (slices of one tokenization), so the first that ends before the
            # span's end ends the search.
            holding = []
            for n in range(bisect_right(self.heads, start) - 1, -1, -1):
                if self.ends[self.order[n]][-1] < end:
                    break
                holding.insert(0, self.order[n])
            # max() keeps the first of equals, and ``holding`` runs by start: ties go to the earlier.
            self.decided[key] = max(holding, key=lambda k: self.context(k, start, end), default=None)
        return self.decided[key]


def greedy_non_overlapping(predictions: list[Prediction]) -> list[Prediction]:
    """Keep spans by descending score, dropping any that overlaps one already kept."""
    kept: list[Prediction] = []
    for p in sorted(predictions, key=lambda p: (-p.score, p.start, p.end, p.type)):
        if all(p.end <= q.start or q.end <= p.start for q in kept):
            kept.append(p)
    return kept


def collect_windows(per_doc: dict[int, tuple[list, list]], logits, offsets, doc_indices, labels,
                    threshold: float = 0.0) -> None:
    """Decode a batch's windows into ``per_doc``: {doc_index: (each window's predictions, each
    window's offsets)}, the arguments of :func:`merge_windows`. A document's windows may come in
    several batches; merge it once all of them are in."""
    for rows, offs, doc in zip(threshold_spans(logits, threshold), offsets, doc_indices):
        predictions, windows = per_doc.setdefault(int(doc), ([], []))
        predictions.append(window_predictions(rows, offs, labels))
        windows.append(offs)


def decode_batch(logits, offsets, doc_indices, labels, threshold=0.0, flat=False):
    """Windows of a batch -> {doc_index: merged predictions}. Every document of the batch gets
    an entry (possibly empty); the windows of one document must all be in the batch (else
    :func:`collect_windows` across batches, then :func:`merge_windows`)."""
    per_doc: dict[int, tuple[list, list]] = {}
    collect_windows(per_doc, logits, offsets, doc_indices, labels, threshold)
    return {doc: merge_windows(predictions, flat, offs) for doc, (predictions, offs) in per_doc.items()}
