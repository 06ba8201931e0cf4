"""Vocabulary pruning of a student: keep the tokens its training and transfer text use.

The embedding matrix is most of a small student (MiniLM: 30,522 × 384 = 11.7 M of a 4-layer
student's 19.2 M parameters), and a corpus uses a fraction of the rows. :func:`prune_vocabulary`
keeps the tokens that occur in the given windows (training + transfer text, never dev or test)
plus the special tokens, in their old order, and rebuilds tokenizer and embeddings to match:

* **Tokenizer.** A WordPiece tokenizer (BERT, MiniLM, MPNet) keeps its pre-tokenizer, normalizer
  and post-processor; only ids change. WordPiece matches the longest known piece, and every piece
  a training text used is kept, so each training and transfer text tokenizes into the same
  tokens as before (checked on the texts, else an error); an evaluation or new text may now need
  shorter pieces or ``[UNK]`` where it used a dropped one — the F1 the run reports is measured
  with the pruned tokenizer. Added tokens (``model.extend_vocab``) that the text never uses are
  dropped too. Other tokenizer models (BPE, Unigram) are a one-line error.
* **Embeddings.** The kept rows of the word embedding and ``config.vocab_size`` follow. Every id
  up to the padding id is kept, so the padding id never moves (MPNet hard-codes it at 1 and
  counts position ids from it).

The student then reads ids the teacher does not know, so KD runs on the character-aligned path
(:mod:`distill.train.alignment`) — with one tokenization on both sides it pairs every span and
equals the direct KD.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from distill.errors import ConfigError

log = logging.getLogger("distill")


def used_ids(windows) -> set[int]:
    """The token ids that occur in ``windows`` (anything with ``input_ids``)."""
    ids: set[int] = set()
    for window in windows:
        ids.update(int(i) for i in window.input_ids)
    return ids


def _remap_post_processor(node: dict | None, new_id) -> None:
    """Rewrite the special-token ids of a tokenizer.json post-processor in place."""
    if not node:
        return
    kind = node.get("type")
    if kind == "Sequence":
        for child in node.get("processors", []):
            _remap_post_processor(child, new_id)
    elif kind == "TemplateProcessing":
        for token in node.get("special_tokens", {}).values():
            token["ids"] = [new_id(i) for i in token["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            node[key] = [node[key][0], new_id(node[key][1])]
    elif kind != "ByteLevel":
        raise ConfigError(f"student.prune_vocab: unsupported tokenizer post-processor {kind!r}")


def prune_tokenizer(tokenizer, keep: list[int]):
    """A copy of ``tokenizer`` (a fast WordPiece tokenizer) holding the ids ``keep`` (sorted), id
    ``keep[k]`` becoming ``k``."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = state.get("model", {}).get("type")
    if kind != "WordPiece":
        raise ConfigError(f"student.prune_vocab: only WordPiece tokenizers (BERT, MiniLM, MPNet) "
                          f"can be pruned, this one is {kind or type(tokenizer).__name__}")
    index = {old: new for new, old in enumerate(keep)}

    def new_id(old: int) -> int:
        if old not in index:
            raise ConfigError(f"student.prune_vocab: token id {old} is needed but not kept")
        return index[old]

    state["model"]["vocab"] = {tok: index[i] for tok, i in state["model"]["vocab"].items() if i in index}
    state["added_tokens"] = [dict(t, id=index[t["id"]]) for t in state.get("added_tokens", [])
                             if t["id"] in index]
    _remap_post_processor(state.get("post_processor"), new_id)
    if state.get("padding"):
        state["padding"]["pad_id"] = new_id(state["padding"]["pad_id"])
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        root = Path(folder)
        (root / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        vocab = root / "vocab.txt"
        if vocab.is_file():  # the slow tokenizer's file: the WordPiece vocabulary in id order
            pieces = sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])
            vocab.write_text("".join(f"{tok}\n" for tok, _ in pieces), encoding="utf-8")
        config_file = root / "tokenizer_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text(encoding="utf-8"))
            if isinstance(config.get("added_tokens_decoder"), dict):
                config["added_tokens_decoder"] = {
                    str(index[int(i)]): t for i, t in config["added_tokens_decoder"].items()
                    if int(i) in index}
            config_file.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        from distill.model.encoders import load_tokenizer

        pruned = load_tokenizer(folder)
    if len(pruned) != len(keep):
        raise RuntimeError(f"student.prune_vocab: the pruned tokenizer has {len(pruned)} tokens, "
                           f"expected {len(keep)}")
    return pruned


def prune_embeddings(encoder, keep: list[int]) -> None:
    """Keep the word-embedding rows ``keep`` (in that order) of ``encoder``, in place."""
    old = encoder.get_input_embeddings()
    new = nn.Embedding(len(keep), old.embedding_dim, padding_idx=old.padding_idx)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(keep)])
    new.to(old.weight.device)
    encoder.set_input_embeddings(new)
    encoder.config.vocab_size = len(keep)


def prune_vocabulary(student, tokenizer, windows, texts) -> tuple[object, dict]:
    """Prune ``student``'s embeddings (in place) to the tokens of ``windows`` plus the special
    tokens; returns (the pruned tokenizer, ``student.vocab`` of metrics.json). ``texts``: the
    texts of those windows, each of which must tokenize into the same tokens as before."""
    before = len(tokenizer)
    keep = used_ids(windows) | set(tokenizer.all_special_ids)
    if tokenizer.pad_token_id is not None:  # ids 0..pad kept: the padding id does not move
        keep |= set(range(tokenizer.pad_token_id + 1))
    keep = sorted(keep)
    pruned = prune_tokenizer(tokenizer, keep)
    if pruned.pad_token_id != tokenizer.pad_token_id:
        raise RuntimeError(f"student.prune_vocab: the padding id moved ({tokenizer.pad_token_id} "
                           f"-> {pruned.pad_token_id})")
    texts = list(texts)
    old = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    new = pruned(texts, add_special_tokens=False)["input_ids"] if texts else []
    for text, a, b in zip(texts, old, new):
        if [keep[i] for i in b] != a:
            raise RuntimeError(f"student.prune_vocab: the pruned tokenizer splits {text[:80]!r} "
                               "differently; report this tokenizer")
    prune_embeddings(student.encoder, keep)
    dim = student.encoder.get_input_embeddings().embedding_dim
    report = {"before": before, "after": len(keep), "params_saved": (before - len(keep)) * dim}
    log.info("student.prune_vocab: %d of %d tokens kept (those of the training and transfer "
             "text, and the special tokens); %.1f M embedding parameters saved", len(keep),
             before, report["params_saved"] / 1e6)
    return pruned, report
