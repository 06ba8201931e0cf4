"""Tokenizer files are kept as bytes: a tokenizer whose ``save_pretrained`` writes a binary file
(transformers 4.x saves ``sentencepiece.bpe.model`` / ``spm.model`` beside tokenizer.json) goes
through checkpoint metadata and export folders unchanged, and checkpoints that stored the files
as text still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from distill.io.checkpoint import load_checkpoint_file, load_tokenizer_files, metadata, safe_load
from distill.io.export_format import read_export_tokenizer, write_tokenizer
from distill.model.encoders import load_encoder, load_tokenizer
from distill.model.span_ner import SpanNER

BINARY = bytes(range(256)) * 4  # not valid UTF-8
NAME = "spm.model"
TEXT = "John lives in Berlin."


@pytest.fixture()
def tokenizer(tiny_bert):
    """The tiny BERT's tokenizer, saving a binary sentencepiece-like file too."""
    tokenizer = load_tokenizer(str(tiny_bert))
    original = tokenizer.save_pretrained

    def save_pretrained(folder, *args, **kwargs):
        names = original(folder, *args, **kwargs)
        Path(folder, NAME).write_bytes(BINARY)
        return (*names, str(Path(folder, NAME)))

    tokenizer.save_pretrained = save_pretrained
    return tokenizer


@pytest.fixture()
def seen(monkeypatch) -> list[dict[str, bytes]]:
    """The files of every folder that AutoTokenizer.from_pretrained loads."""
    folders = []
    original = AutoTokenizer.from_pretrained

    def spy(folder, *args, **kwargs):
        folders.append({p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()})
        return original(folder, *args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    return folders


def test_binary_file_round_trips_through_a_checkpoint(tokenizer, tiny_bert, seen, tmp_path):
    model = SpanNER(load_encoder(str(tiny_bert)), ["LOC", "PER"])
    meta = metadata(model, tokenizer, {"max_length": 32}, {"threshold": 0.0})
    assert meta["tokenizer"][NAME] == BINARY
    file = tmp_path / "model.ckpt"
    torch.save({"distill": meta, "state_dict": {f"model.{k}": v for k, v in
                                                model.state_dict().items()}}, file)
    assert safe_load(file)["distill"]["tokenizer"][NAME] == BINARY  # weights_only keeps bytes
    loaded = load_checkpoint_file(file)
    assert seen[-1][NAME] == BINARY
    assert loaded.tokenizer(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]


def test_binary_file_round_trips_through_an_export_folder(tokenizer, seen, tmp_path):
    names = write_tokenizer(tokenizer, tmp_path)
    assert NAME in names and (tmp_path / NAME).read_bytes() == BINARY
    loaded = read_export_tokenizer(tmp_path, {"tokenizer_files": names})
    assert seen[-1][NAME] == BINARY
    assert loaded(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]


def test_text_entries_of_older_checkpoints_still_load(tiny_bert):
    files = {p.name: p.read_text(encoding="utf-8") for p in Path(tiny_bert).iterdir()
             if p.name.startswith(("tokenizer", "special_tokens", "vocab"))}
    tokenizer = load_tokenizer_files(files)
    assert tokenizer(TEXT)["input_ids"] == load_tokenizer(str(tiny_bert))(TEXT)["input_ids"]
