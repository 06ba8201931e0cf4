import numpy as np
import pytest
import torch

from distill.eval.decode import (Prediction, decode_batch, greedy_non_overlapping, merge_windows,
                                 threshold_spans)
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


# Two windows of one 10-token document: token k is the character span (2k, 2k+1). Window A holds
# tokens 0-6 (it starts the document, its right edge is cut), window B tokens 3-9 (it ends the
# document, its left edge is cut). Offsets as the tokenizer gives them, with [CLS]/[SEP].
def _window_offsets(first: int, last: int) -> list[tuple[int, int]]:
    return [(0, 0)] + [(2 * k, 2 * k + 1) for k in range(first, last + 1)] + [(0, 0)]


A, B = _window_offsets(0, 6), _window_offsets(3, 9)


def _merge(windows, flat=False):
    return merge_windows([p for p, _ in windows], flat, [o for _, o in windows])


def test_the_window_with_more_context_keeps_a_positive_the_edge_window_gets_wrong():
    # Gold PER on tokens 5-6 (chars 10-13). A sees it at its cut edge (no right context) and calls
    # it ORG, more confidently; B sees it with 2 tokens left and the document's end right: PER.
    a = [Prediction(10, 13, "ORG", 3.0)]
    b = [Prediction(10, 13, "PER", 1.0)]
    assert _merge([(a, A), (b, B)], flat=True) == [Prediction(10, 13, "PER", 1.0)]
    # A span cut by A's edge (token 6 alone, chars 12-13, a truncated "tokens 6-7" entity) that
    # overlaps the true one is not A's to decide either.
    a = [Prediction(12, 13, "PER", 5.0)]
    assert _merge([(a, A), (b, B)], flat=True) == [Prediction(10, 13, "PER", 1.0)]


def test_the_window_with_more_context_drops_a_false_positive_the_edge_window_adds():
    # LOC on token 3 (chars 6-7): B sees it at its cut left edge and adds it; A has it with 3
    # tokens of context on the right (and the document's start on the left) and does not.
    a = [Prediction(0, 1, "PER", 2.0)]
    b = [Prediction(6, 7, "LOC", 4.0), Prediction(18, 19, "ORG", 0.5)]
    assert _merge([(a, A), (b, B)]) == [Prediction(0, 1, "PER", 2.0), Prediction(18, 19, "ORG", 0.5)]


def test_merge_decides_each_span_once_whatever_the_window_order():
    # Token 4-5 (chars 8-11): 1 token right of it in A, 1 token left of it in B: a tie, which the
    # window that starts first (A) wins, in whichever order the windows come (batches sort them).
    a = [Prediction(8, 11, "LOC", 1.0)]
    b = [Prediction(8, 11, "LOC", 2.0), Prediction(8, 11, "ORG", 3.0)]
    expected = [Prediction(8, 11, "LOC", 1.0)]
    assert _merge([(a, A), (b, B)]) == _merge([(b, B), (a, A)]) == expected
    # A single window needs no offsets; several do.
    assert merge_windows([b], flat=True) == [Prediction(8, 11, "ORG", 3.0)]
    with pytest.raises(ValueError, match="offsets"):
        merge_windows([a, b])


def test_threshold_spans_same_rows_from_torch_and_numpy():
    """Torch logits are thresholded where they are (only the kept spans are copied off a GPU);
    the rows equal those of the NumPy path, window by window."""
    import torch

    from distill.eval.decode import threshold_spans

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 7, 7, generator=g)
    logits[1] = float("-inf")  # a window with no span
    logits[2, :, 4:, :] = float("-inf")
    for threshold in (0.0, 1.5):
        from_torch = threshold_spans(logits, threshold)
        from_numpy = threshold_spans(logits.numpy(), threshold)
        assert len(from_torch) == len(from_numpy) == 3 and len(from_torch[1]) == 0
        for a, b in zip(from_torch, from_numpy):
            np.testing.assert_array_equal(a, b)
    assert sum(map(len, threshold_spans(logits, 0.0))) == int((logits > 0).sum())
