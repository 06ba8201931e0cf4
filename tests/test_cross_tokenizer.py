"""Cross-tokenizer KD: character-aligned span pairing, identity with one tokenizer, end to end."""
import json

import pytest
import torch

from conftest import SAMPLE, build_tiny_bert, sample_words
from distill.data.datamodule import NERDataModule
from distill.model.encoders import load_encoder, load_tokenizer
from distill.model.span_ner import SpanNER, span_mask
from distill.train.alignment import CharAlignment, paired_mask, same_tokenization, token_maps
from distill.train.losses import kd_softmax_kl
from test_teacher import run_cli


def test_english_subwords_pair_by_characters():
    # teacher: "play" "##ing" ; student: "p" "##l" "##a" "##y" "##i" "##n" "##g" (chars 0..7)
    t_off, t_con = [(0, 0), (0, 4), (4, 7), (0, 0)], [False, True, True, False]
    s_off = [(0, 0)] + [(k, k + 1) for k in range(7)] + [(0, 0)]
    s_con = [False] + [True] * 7 + [False]
    starts, ends = token_maps(t_off, t_con, s_off, s_con)
    mask = paired_mask(starts, ends)
    pairs = {(i, j) for i, j in mask.nonzero().tolist()}
    # student spans (1,4)="play", (5,7)="ing", (1,7)="playing"; all others are student-only
    assert pairs == {(1, 4), (5, 7), (1, 7)}


def test_chinese_characters_and_one_sided_spans():
    # teacher word "北京" (0,2) + "大学" (2,4); student one token per character
    t_off, t_con = [(0, 0), (0, 2), (2, 4), (0, 0)], [False, True, True, False]
    s_off, s_con = [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (0, 0)], [False] + [True] * 4 + [False]
    starts, ends = token_maps(t_off, t_con, s_off, s_con)
    assert starts == [-1, 1, -1, 2, -1, -1] and ends == [-1, -1, 1, -1, 2, -1]
    pairs = {(i, j) for i, j in paired_mask(starts, ends).nonzero().tolist()}
    assert pairs == {(1, 2), (3, 4), (1, 4)}  # "京大" (2,3) is student-only


@pytest.fixture(scope="module")
def data(tiny_bert):
    tok = load_tokenizer(str(tiny_bert))
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=8, limit_eval=4,
                       max_length=48, stride=12)
    labels = dm.read()
    dm.encode(tok)
    return dm, tok, labels


def test_identical_tokenizers_give_todays_kd(data, tiny_bert):
    dm, tok, labels = data
    assert same_tokenization(tok, load_tokenizer(str(tiny_bert)), [d.text for d in dm.splits["train"].docs])
    ds = dm.dataset("train")
    align = CharAlignment(tok, ds)
    assert align.teacher_only == 0 and align.student_only == 0 and align.pairs > 0
    torch.manual_seed(0)
    teacher = SpanNER(load_encoder(str(tiny_bert)), labels).eval()
    student = SpanNER(load_encoder(str(tiny_bert)), labels).eval()
    batch = ds.collate(list(range(6)))
    args = (batch["input_ids"], batch["attention_mask"], batch["content_mask"])
    with torch.no_grad():
        s, t = student(*args), teacher(*args)
        tb = align.teacher_batch(batch["window_ids"])
        assert torch.equal(tb["input_ids"], batch["input_ids"])
        t2 = teacher(tb["input_ids"], tb["attention_mask"], tb["content_mask"])
        remapped, paired = align.remap(t2, batch["window_ids"], batch["input_ids"].shape[1])
    valid = span_mask(batch["content_mask"])
    assert torch.equal(paired.expand_as(valid) & valid, valid.expand_as(paired) if valid.dim() == 4 else valid)
    assert torch.equal(kd_softmax_kl(s, t, valid, 2.0), kd_softmax_kl(s, remapped, valid & paired, 2.0))


def test_other_vocabulary_same_size_is_not_the_same(tmp_path, tiny_bert):
    a = load_tokenizer(str(build_tiny_bert(tmp_path / "a", ["hello"], layers=1)))
    b = load_tokenizer(str(build_tiny_bert(tmp_path / "b", ["world"], layers=1)))
    assert len(a) == len(b) and not same_tokenization(a, b, ["hello world"])


def test_student_with_other_vocabulary_trains(tiny_teacher_ckpt, tmp_path):
    words = [w for w in sample_words() if len(w) > 4][:300]  # another, smaller vocabulary
    other = build_tiny_bert(tmp_path / "other", words, layers=2, hidden=48)
    run_dir = tmp_path / "student"
    run_cli("distill.student", f"teacher={tiny_teacher_ckpt / 'best.ckpt'}", "student.depth=1",
            "student.init=pretrained", f"student.name_or_path={other}", "trainer=fast_dev_run",
            f"kd.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}")
    m = json.loads((run_dir / "metrics.json").read_text())
    al = m["kd"]["alignment"]
    assert set(al) == {"pairs", "teacher_only", "student_only"} and al["pairs"] > 0
    # the teacher's logits were labelled once into the store, on the student's span grid
    assert m["kd"]["cache_used"] is True and m["kd"]["store"]["windows"] > 0
    bad = run_cli("distill.student", f"teacher={tiny_teacher_ckpt / 'best.ckpt'}", "student.depth=1",
                  "student.init=pretrained", f"student.name_or_path={other}", "trainer=fast_dev_run",
                  "kd.store_floor=-8", f"kd.cache_dir={tmp_path / 'cache'}",
                  f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode != 0 and "kd.store_floor=-8" in lines[-1] and "dense" in lines[-1]


def test_aligned_store_gives_the_live_aligned_kd(data, tiny_bert, tmp_path):
    """A student with another tokenizer: the store holds the teacher's logits remapped onto the
    student's spans (NaN where the teacher has no counterpart); read back, logits and paired mask
    give the live aligned KL within fp16, under its own key (the teacher's view is hashed)."""
    from distill.train.kd_cache import TeacherCache

    dm, tok, labels = data
    words = [w for w in sample_words() if len(w) > 4][:300]
    student_tok = load_tokenizer(str(build_tiny_bert(tmp_path / "other", words, layers=1)))
    sdm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=8, limit_eval=4,
                        max_length=48, stride=12)
    sdm.read(labels=labels)
    sdm.encode(student_tok)
    ds = sdm.dataset("train")
    align = CharAlignment(tok, ds)
    assert align.student_only > 0  # spans only the student expresses: stored as NaN
    torch.manual_seed(0)
    teacher = SpanNER(load_encoder(str(tiny_bert)), labels).eval()
    store = TeacherCache(tmp_path / "cache", teacher, ds, batch_size=3, chunk_windows=4, alignment=align)
    assert store.path != TeacherCache(tmp_path / "cache", teacher, ds).path
    store.prepare(teacher, "cpu")
    ids = list(range(len(ds)))
    batch = ds.collate(ids)
    n = batch["input_ids"].shape[1]
    with torch.no_grad():
        tb = align.teacher_batch(ids)
        live, paired = align.remap(teacher(tb["input_ids"], tb["attention_mask"], tb["content_mask"]), ids, n)
    stored, stored_paired = TeacherCache.paired(store.batch(ids, n))
    valid = span_mask(batch["content_mask"])
    assert torch.equal(valid & paired, valid & stored_paired) and (valid & ~paired).any()
    keep = (valid & paired).expand_as(live)
    assert torch.allclose(stored[keep], live[keep], atol=1e-2, rtol=1e-3)
    assert torch.isneginf(stored[~keep & valid.expand_as(live)]).all()
    s = torch.randn_like(live)
    kl_live = kd_softmax_kl(s, live, valid & paired, 1.0)
    kl_store = kd_softmax_kl(s, stored, valid & stored_paired, 1.0)
    assert torch.isfinite(kl_store) and torch.allclose(kl_store, kl_live, atol=1e-3)


@pytest.mark.parametrize("pruning, kept", [("bottom", [0, 1]), ("top", [2, 3]), ("uniform", [1, 3])])
def test_pretrained_student_keeps_the_layers_its_pruning_picks(tmp_path, pruning, kept):
    """student.init=pretrained cuts the other encoder with student.pruning, like a teacher's
    layers (bottom: its first k), not always evenly spaced."""
    from distill.train.students import build_student

    teacher = SpanNER(load_encoder(str(build_tiny_bert(tmp_path / "t", layers=2))), ["A", "B"])
    other = build_tiny_bert(tmp_path / "o", layers=4, hidden=48)
    full = load_encoder(str(other))
    student = build_student(teacher, [0, 1], "pretrained", str(other), pruning=pruning)
    layers = student.encoder.encoder.layer
    assert len(layers) == 2 and student.encoder.config.num_hidden_layers == 2
    for mine, k in zip(layers, kept):
        assert torch.equal(mine.attention.self.query.weight, full.encoder.layer[k].attention.self.query.weight)
