import numpy as np
import torch

from distill.eval.decode import Prediction, decode_batch, greedy_non_overlapping, threshold_spans
from distill.eval.metrics import SpanF1, as_report


def test_threshold_spans_is_vectorised_and_per_window():
    logits = torch.full((2, 2, 4, 4), float("-inf"))
    logits[0, 1, 1, 2] = 3.0
    logits[0, 0, 1, 1] = -0.5  # below threshold
    logits[1, 0, 2, 3] = 0.1
    rows = threshold_spans(logits)
    assert [r.tolist() for r in rows] == [[[1, 1, 2, 3.0]], [[0, 2, 3, np.float32(0.1).item()]]]


def test_decode_batch_merges_overlapping_windows_into_document_offsets():
    # Two windows of one document; the same entity is seen in both with different scores.
    labels = ["LOC", "PER"]
    logits = torch.full((2, 2, 4, 4), float("-inf"))
    logits[0, 0, 1, 2] = 1.0  # chars 0-9 in window 0
    logits[1, 0, 1, 1] = 2.0  # same chars in window 1 (one token there)
    logits[1, 1, 2, 2] = 0.5
    offsets = [[(0, 0), (0, 4), (5, 9), (0, 0)], [(0, 0), (0, 9), (10, 14), (0, 0)]]
    out = decode_batch(logits, offsets, [7, 7], labels)
    assert out == {7: [Prediction(0, 9, "LOC", 2.0), Prediction(10, 14, "PER", 0.5)]}


def test_flat_decoding_keeps_best_non_overlapping():
    preds = [Prediction(0, 10, "ORG", 0.9), Prediction(0, 4, "LOC", 1.5), Prediction(5, 10, "LOC", 0.2)]
    assert sorted(greedy_non_overlapping(preds)) == [Prediction(0, 4, "LOC", 1.5), Prediction(5, 10, "LOC", 0.2)]


def test_span_f1_against_hand_counts():
    metric = SpanF1(["LOC", "PER"])
    gold = [[(0, 2, "PER"), (5, 9, "LOC")], [(1, 3, "LOC")], []]
    pred = [[(0, 2, "PER"), (5, 9, "PER")], [(1, 3, "LOC")], []]
    metric.update(pred, gold)
    r = as_report(metric)
    # tp=2 (PER 0-2, LOC 1-3), fp=1 (PER 5-9), fn=1 (LOC 5-9)
    assert r["precision"] == 2 / 3 and r["recall"] == 2 / 3 and abs(r["f1"] - 2 / 3) < 1e-12
    assert r["exact_match"] == 2 / 3  # documents 2 and 3 match exactly
    assert r["per_type"]["LOC"] == {"f1": 2 / 3, "precision": 1.0, "recall": 0.5, "support": 2}
    assert r["per_type"]["PER"]["precision"] == 0.5 and r["per_type"]["PER"]["recall"] == 1.0
