"""Encoders and tokenizers from any Hugging Face name or local folder; vocabulary extension with
the training text's unknown characters/words; the SpanNER a ``model`` config describes."""

from __future__ import annotations

import logging
from collections import Counter

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from distill.errors import ConfigError
from distill.model.span_ner import SpanNER

log = logging.getLogger("distill")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ConfigError(f"model.name_or_path={name_or_path!r}: cannot load a tokenizer "
                          f"({str(err).splitlines()[0]})") from None
    if not tokenizer.is_fast:
        raise ConfigError(f"model.name_or_path={name_or_path!r}: a fast tokenizer (with "
                          "offset mapping) is required")
    return tokenizer


def load_encoder(name_or_path: str, init: str = "pretrained", trust_remote_code: bool = False,
                 **config_overrides):
    """The transformers encoder: pretrained weights, or ``init='random'`` from its config."""
    try:
        if init == "random":
            config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code,
                                                **config_overrides)
            encoder = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        else:
            encoder = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code,
                                                **config_overrides)
    except OSError as err:
        raise ConfigError(f"model.name_or_path={name_or_path!r}: cannot load the encoder "
                          f"({str(err).splitlines()[0]})") from None
    return without_pooler(encoder)


def without_pooler(encoder):
    """Drop the sentence pooler: span scores never use it, and unused parameters break DDP."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


# Encoders whose position ids start after padding_idx (RoBERTa's position ids from input ids):
# padding_idx + 1 of their max_position_embeddings are never a token's position.
PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet",
                            "data2vec-text", "ibert", "longformer", "luke", "markuplm", "xmod",
                            "roberta-prelayernorm", "lilt", "layoutlmv3"}


def check_max_length(max_length: int, encoder_config, model: str) -> None:
    """ConfigError unless windows of ``max_length`` tokens fit the encoder's position embeddings
    (``model`` names the encoder in the message, e.g. ``model.name_or_path=...``)."""
    positions = getattr(encoder_config, "max_position_embeddings", None)
    if positions is None or getattr(encoder_config, "position_biased_input", True) is False:
        return  # no absolute position embeddings (e.g. DeBERTa-v2/v3): no length limit
    reserved = 0
    if getattr(encoder_config, "model_type", None) in PADDING_OFFSET_POSITIONS:
        pad = getattr(encoder_config, "pad_token_id", None)
        reserved = (1 if pad is None else pad) + 1
    if max_length > positions - reserved:
        note = f", {reserved} of them reserved by its padding_idx" if reserved else ""
        raise ConfigError(f"data.max_length={max_length} is more than the encoder of {model} "
                          f"takes: {positions - reserved} tokens (max_position_embeddings="
                          f"{positions}{note})")


def build_model(name_or_path: str, labels: list[str], tokenizer, train_texts=(),
                init: str = "pretrained", trust_remote_code: bool = False,
                head: str = "global_pointer", head_size: int = 64, rope: bool = True,
                dropout: float = 0.1, extend_vocab: bool = False,
                extend_vocab_min_count: int = 1) -> SpanNER:
    """The SpanNER a ``model`` config describes (``conf/model/*.yaml`` name this function as
    their ``_target_``; the teacher passes ``labels``, ``tokenizer`` and ``train_texts``),
    extending the vocabulary with the training text's unknown pieces first when ``extend_vocab``."""
    encoder = load_encoder(name_or_path, init, trust_remote_code)
    if extend_vocab:
        extend_vocabulary(tokenizer, encoder, list(train_texts), extend_vocab_min_count)
    return SpanNER(encoder, list(labels), head=head, head_size=head_size, rope=rope,
                   dropout=dropout)


def unknown_pieces(tokenizer, texts) -> Counter:
    """Surface strings of ``texts`` that the tokenizer maps to its unknown token."""
    found: Counter = Counter()
    unk = tokenizer.unk_token_id
    for lo in range(0, len(texts), 512):
        chunk = list(texts[lo : lo + 512])
        enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
        for text, ids, offsets in zip(chunk, enc["input_ids"], enc["offset_mapping"]):
            for token, (b, e) in zip(ids, offsets):
                if token == unk and e > b:
                    found[text[b:e]] += 1
    return found


def extend_vocabulary(tokenizer, encoder, texts, min_count: int = 1) -> int:
    """Add the training text's unknown characters/words as new tokens, each new embedding row
    initialised to the mean of the existing rows. Returns the number of tokens added."""
    pieces = unknown_pieces(tokenizer, texts)
    new = sorted(p for p, n in pieces.items() if n >= min_count)
    if not new:
        log.info("extend_vocab: no unknown tokens in the training text")
        return 0
    before = len(tokenizer)
    added = tokenizer.add_tokens(new)
    embeddings = encoder.get_input_embeddings()
    mean = embeddings.weight.detach().mean(dim=0)
    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        encoder.get_input_embeddings().weight[before:] = mean
    log.info("extend_vocab: added %d tokens (%d unknown-token occurrences in train), e.g. %s",
             added, sum(pieces.values()), " ".join(new[:10]))
    return added
