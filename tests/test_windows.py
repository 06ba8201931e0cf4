"""Long documents: each span decided by its most-context window (predict, evaluation), and
evaluation batches of at most ``batch_size`` windows, a document spanning several batches."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from conftest import SAMPLE
from distill.data.datamodule import NERDataModule
from distill.data.document import join_every
from distill.data.readers import read_split
from distill.deploy.predict import Predictor
from distill.eval.decode import threshold_spans
from distill.model.span_ner import span_mask


def _token_space_decision(windows, window_rows, step: int) -> set:
    """The most-context rule computed on its own, in document token positions: window ``k`` of a
    document holds its tokens ``k*step`` .. (the tokenizer's overflow windows); a span is decided
    by the window holding it with the largest min(left, right) context (unbounded at the
    document's ends), the first such window on ties; it is kept iff that window predicts it."""
    decided = set()
    count = len(windows)
    for k, (w, rows) in enumerate(zip(windows, window_rows)):
        first = k * step
        size = sum(w.content)
        for c, i, j, score in rows:
            a, b = first + int(i) - 1, first + int(j) - 1  # position 0 is [CLS]

            def context(m):
                lo, hi = m * step, m * step + sum(windows[m].content) - 1
                if not (lo <= a and b <= hi):
                    return None
                left = a - lo if m > 0 else float("inf")
                right = hi - b if m < count - 1 else float("inf")
                return min(left, right)

            scores = [context(m) for m in range(count)]
            best = max((s, -m) for m, s in enumerate(scores) if s is not None)
            if -best[1] == k:
                assert first <= a <= b < first + size
                decided.add((w.offsets[int(i)][0], w.offsets[int(j)][1], int(c), round(float(score), 4)))
    return decided


def test_joined_sentences_are_decided_by_their_most_context_window(tiny_teacher_ckpt):
    """A real (tiny, briefly trained) teacher on sample sentences joined 6 at a time into documents
    of several windows: what predict returns is, span by span, the prediction of the window in
    which the span has the most context -- not the union of the windows' predictions."""
    predictor = Predictor.from_path(tiny_teacher_ckpt)
    predictor.max_length, predictor.stride = 32, 12  # 30 content tokens a window, 18 new each
    step = predictor.max_length - 2 - predictor.stride
    docs = join_every(read_split("jsonl", SAMPLE / "dev.jsonl")[:18], 6)
    texts = [d.text for d in docs]
    windows = predictor.encode(texts)
    got = predictor.predict(texts, batch_size=1)  # a document's windows in separate batches
    union_differs = False
    for d, predictions in enumerate(got):
        own = [w for w in windows if w.doc_index == d]
        assert len(own) >= 3
        # The same document token has the same characters in every window holding it.
        for k in range(1, len(own)):
            overlap = predictor.stride
            assert own[k - 1].offsets[-1 - overlap : -1] == own[k].offsets[1 : 1 + overlap]
        # One window per batch, as predict(batch_size=1) ran them: identical logits.
        rows = [threshold_spans(predictor.runner(**predictor.collate([w])), predictor.threshold)[0]
                for w in own]
        expected = _token_space_decision(own, rows, step)
        labels = {label: c for c, label in enumerate(predictor.labels)}
        assert {(p.start, p.end, labels[p.type], round(p.score, 4)) for p in predictions} == expected
        union = {(w.offsets[int(i)][0], w.offsets[int(j)][1], int(c)) for w, r in zip(own, rows)
                 for c, i, j, _ in r}
        union_differs |= union != {(s, e, c) for s, e, c, _ in expected}
    assert union_differs  # the windows do disagree here: the test tells the rules apart


# -- evaluation batches ------------------------------------------------------------------------

def _datamodule(tokenizer, eval_batch_size: int) -> NERDataModule:
    """Sample documents cut into 16-token windows: most dev documents make several."""
    dm = NERDataModule(str(SAMPLE), "train.jsonl", "dev.jsonl", limit_train=10, limit_eval=15,
                       max_length=16, stride=6, eval_batch_size=eval_batch_size)
    dm.read()
    dm.encode(tokenizer)
    return dm


def test_evaluation_batches_hold_at_most_batch_size_windows_and_whole_documents_per_rank(
        tiny_bert, monkeypatch):
    from distill.data import datamodule
    from distill.model.encoders import load_tokenizer

    dm = _datamodule(load_tokenizer(str(tiny_bert)), eval_batch_size=3)
    windows = dm.splits["dev"].windows
    per_doc = {d: sum(w.doc_index == d for w in windows) for d in range(15)}
    assert max(per_doc.values()) > 3
    seen = {}
    for world, rank in ((1, 0), (2, 0), (2, 1)):
        monkeypatch.setattr(datamodule, "_world", lambda: (world, rank))
        batches = list(dm.val_dataloader().batch_sampler)
        assert all(1 <= len(b) <= 3 for b in batches)
        order = [i for b in batches for i in b]
        assert len(order) == len(set(order))
        docs = [windows[i].doc_index for i in order]
        # A document's windows are consecutive (so it can be merged as soon as they are in).
        assert [d for k, d in enumerate(docs) if k == 0 or docs[k - 1] != d] == list(dict.fromkeys(docs))
        seen[world, rank] = docs
    assert sorted(seen[1, 0]) == sorted(seen[2, 0] + seen[2, 1])
    assert not set(seen[2, 0]) & set(seen[2, 1])  # each document whole on one rank


class PositionalLogits(nn.Module):
    """A stand-in model whose logits depend on the tokens and their position in the window (so
    overlapping windows disagree) but not on the rest of the batch (so scores are exact)."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, input_ids, attention_mask, content_mask, output_hidden_states=False):
        ids = input_ids.double()
        pos = torch.arange(ids.shape[1], dtype=torch.double)
        c = torch.arange(len(self.labels), dtype=torch.double)[None, :, None, None]
        logits = torch.sin(0.37 * ids[:, None, :, None] + 0.11 * ids[:, None, None, :] + c
                           + 0.5 * pos[None, None, :, None]) - 0.7
        return (self.scale * logits).masked_fill(~span_mask(content_mask), float("-inf"))


def test_evaluation_of_documents_split_across_batches_equals_one_batch(tiny_bert):
    from distill.model.encoders import load_tokenizer
    from distill.train.module import NERModule

    tokenizer = load_tokenizer(str(tiny_bert))
    reports = []
    for eval_batch_size in (2, 10_000):
        dm = _datamodule(tokenizer, eval_batch_size)
        sizes = [len(b) for b in dm.val_dataloader().batch_sampler]
        assert max(sizes) <= eval_batch_size
        module = NERModule(PositionalLogits(dm.labels), tokenizer, dm.config(), {"lr": 0.0},
                           {"threshold": 0.0, "flat": False})
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.validate(module, datamodule=dm, verbose=False)
        reports.append(module.reports["dev"])
    assert len(sizes) == 1  # the second run: every window in one batch
    assert reports[0] == reports[1] and reports[0]["documents"] == 15
    assert 0 < reports[0]["f1"] < 1


def test_an_evaluation_rank_without_documents_gets_one_unscored_batch(monkeypatch):
    """DDP with fewer evaluation documents than ranks: the rank that gets none still runs one
    (padding) batch, so it reaches the metric sync instead of skipping the loop and leaving the
    other ranks waiting; the padding batch scores nothing."""
    import distill.data.datamodule as datamodule
    from distill.data.datamodule import PADDING, BucketBatchSampler

    monkeypatch.setattr(datamodule, "_world", lambda: (2, 1))
    sampler = BucketBatchSampler([5], [0], batch_size=4, shuffle=False)  # one document, 2 ranks
    assert list(sampler) == [[PADDING]] and len(sampler) == 1
    monkeypatch.setattr(datamodule, "_world", lambda: (2, 0))
    assert list(BucketBatchSampler([5], [0], batch_size=4, shuffle=False)) == [[0]]
