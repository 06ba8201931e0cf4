"""Shared fixtures: a tiny randomly initialised BERT (built here, no network) and data paths."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "distill" / "data" / "sample"


def shared_data() -> Path:
    """../shared/data beside the repository (or $DISTILL_DATA_DIR)."""
    return Path(os.environ.get("DISTILL_DATA_DIR", REPO.parent / "shared" / "data"))


def require_shared(*parts: str) -> Path:
    path = shared_data().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def build_tiny_bert(folder: Path, words=(), layers: int = 2, hidden: int = 32, extra_chars: str = "") -> Path:
    """A random BERT (``layers`` x ``hidden``) with a WordPiece vocabulary of single characters,
    their ``##`` continuations and ``words``; saved with its fast tokenizer to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    chars = string.ascii_lowercase + string.digits + string.punctuation + extra_chars
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(dict.fromkeys(list(chars) + [f"##{c}" for c in chars] + sorted(set(words))))
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)},
                      do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    return folder


def sample_words(limit: int = 3000) -> list[str]:
    import json
    import re

    words: dict[str, None] = {}
    for line in (SAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines():
        for w in re.findall(r"[a-z]+", json.loads(line)["text"].lower()):
            words.setdefault(w)
    return list(words)[:limit]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer x 32 random BERT whose vocabulary covers the sample corpus words."""
    words = sample_words() if (SAMPLE / "train.jsonl").exists() else []
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), words, extra_chars="中国人北京大学")


@pytest.fixture(scope="session")
def tiny_bert4(tmp_path_factory) -> Path:
    """A 4-layer x 32 random BERT (for pruning tests)."""
    words = sample_words() if (SAMPLE / "train.jsonl").exists() else []
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert4"), words, layers=4)


@pytest.fixture(scope="session")
def tiny_teacher_ckpt(tiny_bert, tmp_path_factory) -> Path:
    """The run dir (with best.ckpt) of a few-step teacher on the tiny BERT and the sample corpus."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("tiny_teacher")
    done = subprocess.run(
        [sys.executable, "-m", "distill.teacher", f"model.name_or_path={tiny_bert}",
         "trainer=fast_dev_run", "data.limit_train=40", "data.limit_eval=20",
         "logger=none", f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True,
    )
    if done.returncode != 0 or not (run_dir / "best.ckpt").is_file():
        pytest.fail(f"tiny teacher run failed ({done.returncode}): {done.stderr[-2000:]}")
    return run_dir


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Commands run in-process (bench, export, predict with ``threads=``) set torch's global
    thread count; restore it so later in-process training keeps the default (with another
    thread count, float sums run in another order and runs are no longer bit-identical)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
