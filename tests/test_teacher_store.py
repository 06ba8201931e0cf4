"""The teacher-logit store: chunked, memory-mapped, resumable after a kill, sharded over DDP
ranks, read in the DataLoader's collate (workers too), and small in RAM however many windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import SAMPLE
from distill.data.datamodule import NERDataModule
from distill.data.document import Document
from distill.io.load import load_checkpoint
from distill.data.datamodule import CollateThen
from distill.train.kd_cache import TeacherCache


@pytest.fixture(scope="module")
def teacher_and_set(tiny_teacher_ckpt):
    loaded = load_checkpoint(tiny_teacher_ckpt)
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=30, limit_eval=4,
                       max_length=32, stride=8)
    dm.read()
    dm.encode(loaded.tokenizer)
    return loaded.model, dm.dataset("train")


def live(teacher, dataset, ids):
    batch = dataset.collate(ids)
    with torch.no_grad():
        return batch, teacher(batch["input_ids"], batch["attention_mask"], batch["content_mask"])


def test_store_equals_the_live_teacher_across_chunks(teacher_and_set, tmp_path):
    teacher, dataset = teacher_and_set
    store = TeacherCache(tmp_path, teacher, dataset, batch_size=4, chunk_windows=7)
    store.prepare(teacher, "cpu")
    assert store.num_chunks == -(-len(dataset) // 7) > 2
    ids = [0, 6, 7, 13, len(dataset) - 1]  # chunk boundaries
    batch, logits = live(teacher, dataset, ids)
    stored = store.batch(batch["window_ids"], batch["input_ids"].shape[1])
    finite = torch.isfinite(logits)
    assert torch.equal(finite, torch.isfinite(stored))
    assert torch.allclose(logits[finite], stored[finite], atol=1e-2, rtol=1e-3)  # fp16
    assert store.report()["bytes"] > 0 and store.report()["windows"] == len(dataset)


def test_a_killed_build_continues_where_it_stopped(teacher_and_set, tmp_path, monkeypatch):
    teacher, dataset = teacher_and_set
    store = TeacherCache(tmp_path, teacher, dataset, batch_size=4, chunk_windows=7)
    real = TeacherCache._build
    calls = []

    def dies_after_two_chunks(self, teacher, device, chunks):
        calls.append(list(chunks))
        real(self, teacher, device, chunks[:2])
        raise KeyboardInterrupt  # the kill

    monkeypatch.setattr(TeacherCache, "_build", dies_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        store.prepare(teacher, "cpu")
    assert not store.complete() and not list(store.path.glob("*.tmp"))
    monkeypatch.setattr(TeacherCache, "_build", lambda self, t, d, chunks: (calls.append(list(chunks)),
                                                                            real(self, t, d, chunks)))
    again = TeacherCache(tmp_path, teacher, dataset, batch_size=4, chunk_windows=7)
    again.prepare(teacher, "cpu")
    assert calls[1] == calls[0][2:]  # only what was missing
    fresh = TeacherCache(tmp_path / "fresh", teacher, dataset, batch_size=4, chunk_windows=7)
    fresh.prepare(teacher, "cpu")
    for k in range(again.num_chunks):
        a, b = again.chunk_files(k)["values"], fresh.chunk_files(k)["values"]
        assert np.array_equal(np.load(a), np.load(b))


def test_ranks_label_their_own_chunks_and_read_all(teacher_and_set, tmp_path, monkeypatch):
    teacher, dataset = teacher_and_set
    labelled = {}
    real = TeacherCache._build
    monkeypatch.setattr(TeacherCache, "_build",
                        lambda self, t, d, chunks: (labelled.setdefault(self.rank_seen, list(chunks)),
                                                    real(self, t, d, chunks)))
    class Waiting(Exception):
        pass

    def barrier():  # rank 1 stops at the barrier; this test plays rank 0 next, then lets it go
        raise Waiting

    stores = []
    for rank in (1, 0):  # rank 1 first: rank 0 then finds its chunks and completes the store
        store = TeacherCache(tmp_path, teacher, dataset, batch_size=4, chunk_windows=5)
        store.rank_seen = rank
        try:
            store.prepare(teacher, "cpu", is_global_zero=rank == 0, rank=rank, world=2,
                          barrier=barrier if rank == 1 else (lambda: None))
        except Waiting:
            assert not store.complete()
        stores.append(store)
    stores[1].open()  # past the barrier
    n = stores[0].num_chunks
    assert labelled[1] == list(range(1, n, 2)) and labelled[0] == list(range(0, n, 2))
    assert stores[1].complete()
    batch, logits = live(teacher, dataset, list(range(len(dataset))))
    finite = torch.isfinite(logits)
    stored = stores[1].batch(batch["window_ids"], batch["input_ids"].shape[1])
    assert torch.allclose(logits[finite], stored[finite], atol=1e-2, rtol=1e-3)


def test_logits_are_read_in_the_loader_workers(teacher_and_set, tmp_path):
    teacher, dataset = teacher_and_set
    store = TeacherCache(tmp_path, teacher, dataset, batch_size=8)
    store.prepare(teacher, "cpu")
    loader = DataLoader(list(range(len(dataset))), batch_size=6, num_workers=2,
                        collate_fn=CollateThen(dataset.collate, store.collate))
    for batch in loader:
        _, logits = live(teacher, dataset, batch["window_ids"].tolist())
        finite = torch.isfinite(logits)
        assert torch.allclose(logits[finite], batch["teacher_logits"][finite], atol=1e-2, rtol=1e-3)


def test_reading_a_store_of_20k_windows_stays_small_in_ram(tiny_bert, tmp_path):
    """20,000 windows of ~14 tokens, 4 types: ~1.7 MB of logits per 1000 windows on disk. Reading
    every window through the memory map must not hold the store in RAM: the process's peak RSS
    grows by less than the store's size."""
    from distill.model.encoders import load_encoder, load_tokenizer
    from distill.model.span_ner import SpanNER

    tokenizer = load_tokenizer(str(tiny_bert))
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=60, limit_eval=1)
    dm.read()
    texts = [f"sentence {k} about berlin and paris" for k in range(20000)]
    dm.splits["train"].docs = [Document(t) for t in texts]
    dm.encode(tokenizer)
    dataset = dm.dataset("train")
    model = SpanNER(load_encoder(str(tiny_bert)), dm.labels).eval()
    store = TeacherCache(tmp_path, model, dataset, batch_size=256, chunk_windows=2048)
    store.prepare(model, "cpu")
    size = store.bytes()
    assert size > 20e6  # a store worth measuring
    # the process's own (anonymous) memory: the store's pages the memory map brings in are page
    # cache the kernel may drop, and count in RSS (and ru_maxrss, a high-water mark over the whole
    # test session) whether or not anything holds them
    before = anonymous_rss()
    peak = before
    for lo in range(0, len(dataset), 512):
        ids = torch.arange(lo, min(lo + 512, len(dataset)))
        store.batch(ids, 16)
        peak = max(peak, anonymous_rss())
    grown = peak - before
    assert grown < 0.5 * size, (grown, size)


def anonymous_rss() -> int:
    """Bytes of this process's resident anonymous memory (Linux: RssAnon in /proc/self/status)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        pytest.skip("needs /proc/self/status (Linux)")
    for line in status.splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    pytest.skip("the kernel reports no RssAnon")


def test_pseudo_labels_make_the_teachers_spans_the_gold_of_unlabeled_windows(tiny_teacher_ckpt):
    """kd.pseudo_labels (hard labels): an unlabeled window's MLCE targets are the teacher's
    decoded spans (logit > threshold); labelled windows keep their gold."""
    from distill.model.span_ner import span_mask
    from distill.train.losses import multilabel_categorical_crossentropy
    from distill.train.module import NERModule
    from distill.train.students import build_student

    loaded = load_checkpoint(tiny_teacher_ckpt)
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=6, limit_eval=2,
                       max_length=32, stride=8)
    dm.read(labels=loaded.labels)
    dm.encode(loaded.tokenizer)
    batch = dm.dataset("train").collate(list(range(4)))
    batch["labeled"][2:] = False  # two transfer windows
    teacher = loaded.model.eval()
    torch.manual_seed(0)
    student = build_student(teacher, [0], "teacher")
    for m in student.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    kd = {"alpha": 0.0, "pseudo_labels": True, "temperature": 1.0}
    module = NERModule(student, loaded.tokenizer, dm.config(), {"lr": 1e-3}, {"threshold": 0.0},
                       kd=kd, teacher=teacher)
    with torch.no_grad():
        loss = module.training_step(batch, 0)
        s = module(batch)
        t = teacher(batch["input_ids"], batch["attention_mask"], batch["content_mask"])
    valid = span_mask(batch["content_mask"])
    targets = batch["targets"].bool().clone()
    targets[2:] = t[2:] > 0
    expected = multilabel_categorical_crossentropy(s, targets, valid, torch.ones(4))
    assert torch.allclose(loss, expected)
    hard = multilabel_categorical_crossentropy(s, batch["targets"], valid, batch["labeled"])
    assert not torch.allclose(loss, hard)  # the transfer windows count


def test_sparse_store_keeps_the_kl_within_its_stated_bound(teacher_and_set, tmp_path):
    """kd.store_floor: per (window, type) the spans below the floor are dropped, their log-mass
    kept. The threshold-class KL from the sparse store differs from the dense one by at most
    P_R (log|R| + Δ_s) (see TeacherCache); the store is smaller."""
    from distill.model.span_ner import span_mask
    from distill.train.losses import _log_probs_with_threshold

    teacher, dataset = teacher_and_set
    ids = list(range(len(dataset)))
    batch, dense = live(teacher, dataset, ids)
    finite = dense[torch.isfinite(dense)]
    floor = float(finite.quantile(0.95))  # drop 95 % of the spans (a trained teacher: more)
    store = TeacherCache(tmp_path, teacher, dataset, batch_size=8, chunk_windows=64, floor=floor)
    full = TeacherCache(tmp_path, teacher, dataset, batch_size=8, chunk_windows=64)
    store.prepare(teacher, "cpu")
    full.prepare(teacher, "cpu")
    assert store.path != full.path and store.bytes() < 0.5 * full.bytes()
    sparse = store.batch(batch["window_ids"], batch["input_ids"].shape[1])
    valid = span_mask(batch["content_mask"])
    dense16 = full.batch(batch["window_ids"], batch["input_ids"].shape[1])  # the same fp16 values
    kept = dense >= floor  # the store decides on the fp32 logits
    assert torch.equal(sparse[kept], dense16[kept])
    torch.manual_seed(0)
    student = dense16 + torch.randn_like(dense16)  # a student's logits near the teacher's
    q = _log_probs_with_threshold(student, valid, 1.0)

    def kl(t):
        p = _log_probs_with_threshold(t, valid, 1.0)
        return torch.where(torch.isfinite(p), p.exp() * (p - q), 0.0).sum(-1)  # (B, C)

    gap = (kl(dense16) - kl(sparse)).abs()
    dropped = valid & ~kept & torch.isfinite(dense16)
    p_dense = _log_probs_with_threshold(dense16, valid, 1.0).exp()[..., :-1].view_as(dense16)
    p_rest = torch.where(dropped, p_dense, 0.0).flatten(2).sum(-1)
    count = dropped.flatten(2).sum(-1).clamp_min(1).float()
    s_masked = student.masked_fill(~dropped, float("nan")).flatten(2)
    spread = (torch.nan_to_num(s_masked, nan=-1e9).amax(-1) - torch.nan_to_num(s_masked, nan=1e9).amin(-1)).clamp_min(0)
    bound = p_rest * (count.log() + spread)
    assert (gap <= bound + 1e-4).all(), (gap - bound).max()
    assert gap.max() > 0  # the sparse store is an approximation, and the test can tell
