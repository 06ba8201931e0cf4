"""MLM adaptation of an extended vocabulary (distill/model/adapt.py): loss, new vs old rows,
the cache, new-row inits, the new rows' learning rate and an adapted teacher end to end."""

from __future__ import annotations

import json
import shutil

import torch

from distill.io.load import load_checkpoint
from distill.model import adapt
from distill.model.encoders import (extend_vocabulary, load_encoder, load_tokenizer,
                                    unknown_pieces)

TEXTS = ["上海交通大学在上海", "上海是城市", "北京大学在北京", "中国人在上海"] * 8


def extended(tiny_bert, init="mean"):
    tokenizer, encoder = load_tokenizer(str(tiny_bert)), load_encoder(str(tiny_bert))
    base = len(tokenizer)
    extend_vocabulary(tokenizer, encoder, TEXTS, init=init)
    return tokenizer, encoder, base


def fixed_loss(encoder, tokenizer):
    from transformers import DataCollatorForLanguageModeling

    torch.manual_seed(1)
    mlm = adapt.masked_lm(encoder).eval()
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    batch = collate([{"input_ids": ids} for ids in tokenizer(TEXTS[:4])["input_ids"]])
    with torch.no_grad():
        return float(adapt.mlm_loss(mlm, batch))


def test_masked_positions_only_loss_equals_the_models_own(tiny_bert):
    """The vocabulary projection on masked positions only gives the loss the model's forward gives
    (BERT's ``cls`` head; MPNet's ``lm_head`` as RoBERTa-style models have it)."""
    from transformers import DataCollatorForLanguageModeling, MPNetConfig, MPNetModel

    tokenizer, bert, _ = extended(tiny_bert)
    mpnet = MPNetModel(MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64))
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    torch.manual_seed(3)
    batch = collate([{"input_ids": ids} for ids in tokenizer(TEXTS[:6])["input_ids"]])
    assert (batch["labels"] != -100).any()
    for encoder in (bert, mpnet):
        mlm = adapt.masked_lm(encoder).eval()
        assert adapt._prediction_head(mlm) is not None
        with torch.no_grad():
            ours = adapt.mlm_loss(mlm, batch)
            theirs = mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        nothing = {**batch, "labels": torch.full_like(batch["labels"], -100)}
        assert float(adapt.mlm_loss(mlm, nothing)) == 0.0


def test_mlm_phase_lowers_loss_and_trains_only_new_rows(tiny_bert, tmp_path):
    tokenizer, encoder, base = extended(tiny_bert)
    before = encoder.get_input_embeddings().weight.detach().clone()
    layer = encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
    report = adapt.adapt_encoder(encoder, tokenizer, TEXTS, base, cache=tmp_path, steps=60,
                                 lr=5e-3, batch_size=8)
    assert report["loss_last"] < report["loss_first"]
    after = encoder.get_input_embeddings().weight.detach()
    assert torch.equal(after[:base], before[:base])
    assert not torch.allclose(after[base:], before[base:])
    assert torch.equal(encoder.encoder.layer[0].attention.self.query.weight, layer)
    assert all(p.requires_grad for p in encoder.parameters())


def test_mlm_phase_all_lowers_loss(tiny_bert, tmp_path):
    tokenizer, encoder, base = extended(tiny_bert)
    report = adapt.adapt_encoder(encoder, tokenizer, TEXTS, base, cache=tmp_path, steps=60,
                                 lr=3e-3, batch_size=8, train="all")
    assert report["loss_last"] < report["loss_first"]


def test_cache_is_keyed_and_reused(tiny_bert, tmp_path, monkeypatch):
    tokenizer, encoder, base = extended(tiny_bert)
    first = adapt.adapt_encoder(encoder, tokenizer, TEXTS, base, cache=tmp_path, steps=5)
    assert not first["reused"] and (tmp_path / first["cache"].split("/")[-1] / adapt.MARKER).is_file()
    adapted = encoder.get_input_embeddings().weight.detach().clone()

    def boom(*a, **k):
        raise AssertionError("trained again")

    tokenizer2, encoder2, _ = extended(tiny_bert)
    monkeypatch.setattr(adapt, "train_mlm", boom)
    again = adapt.adapt_encoder(encoder2, tokenizer2, TEXTS, base, cache=tmp_path, steps=5)
    assert again["reused"] and again["cache"] == first["cache"]
    assert torch.equal(encoder2.get_input_embeddings().weight, adapted)
    monkeypatch.undo()
    tokenizer3, encoder3, _ = extended(tiny_bert)
    other = adapt.adapt_encoder(encoder3, tokenizer3, TEXTS, base, cache=tmp_path, steps=6)
    assert not other["reused"] and other["cache"] != first["cache"]
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


def test_new_row_inits(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    encoder = load_encoder(str(tiny_bert))
    old = encoder.get_input_embeddings().weight.detach().clone()
    extend_vocabulary(tokenizer, encoder, ["ｅｘａｍｐｌｅ 上海"], init="pieces")
    weight = encoder.get_input_embeddings().weight.detach()
    shang = tokenizer.convert_tokens_to_ids("上")
    assert torch.allclose(weight[shang], old.mean(0))  # only [UNK]: the mean
    _, enc_r, base = extended(tiny_bert, init="random")
    rows = enc_r.get_input_embeddings().weight.detach()[base:]
    assert rows.std() > 0 and not torch.allclose(rows[0], rows[1])


def test_new_rows_lr_rescales_the_update():
    from types import SimpleNamespace

    from distill.train.module import NERModule

    emb = torch.nn.Embedding(6, 3)
    encoder = SimpleNamespace(config=SimpleNamespace(distill_base_vocab_size=4),
                              get_input_embeddings=lambda: emb)
    fake = SimpleNamespace(optim={"lr": 1e-2, "new_rows_lr": 1e-1},
                           model=SimpleNamespace(encoder=encoder))

    def step(lr_new):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(6, 3))
        opt = torch.optim.AdamW([w], lr=lr_new, weight_decay=0.01)
        w.grad = torch.arange(18.0).view(6, 3)
        opt.step()
        return w.detach()

    torch.manual_seed(0)
    emb.weight.data = torch.randn(6, 3)
    opt = torch.optim.AdamW([emb.weight], lr=1e-2, weight_decay=0.01)
    NERModule._new_rows_lr(fake, opt)
    emb.weight.grad = torch.arange(18.0).view(6, 3)
    opt.step()
    assert torch.allclose(emb.weight[:4], step(1e-2)[:4])
    assert torch.allclose(emb.weight[4:], step(1e-1)[4:], atol=1e-6)


def test_adapted_teacher_end_to_end_and_reloads_without_cache(tiny_bert, tmp_path):
    from distill.data.document import Document, Entity
    from distill.data.readers import write_jsonl
    from test_teacher import run_cli

    docs = [Document("上海交通大学在上海", [Entity(0, 2, "LOC")]),
            Document("北京大学在北京", [Entity(0, 4, "ORG")]), Document("中国人在上海", [])] * 4
    for name in ("train", "dev", "test"):
        write_jsonl(docs + [Document("广州很热", [])] * (name != "train"), tmp_path / f"{name}.jsonl")
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    run_cli("distill.teacher", "data=jsonl", f"data.dir={tmp_path}", "data.train=train.jsonl",
            "data.dev=dev.jsonl", "data.test=test.jsonl", f"model.name_or_path={tiny_bert}",
            "model.extend_vocab=true", "model.adapt=mlm", "model.adapt_steps=3",
            f"model.adapt_cache={cache}", "optim.new_rows_lr=1e-3", "trainer=fast_dev_run",
            "logger=none", f"hydra.run.dir={run_dir}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["unknown_eval_chars"] == {"dev": 4, "test": 4}  # 广州很热: 4 chars never in train
    assert metrics["model"]["vocabulary"]["adapt"]["steps"] == 3
    shutil.rmtree(cache)
    loaded = load_checkpoint(run_dir)
    assert not unknown_pieces(loaded.tokenizer, ["上海交通大学"])
    assert loaded.model.encoder.config.distill_base_vocab_size < len(loaded.tokenizer)
