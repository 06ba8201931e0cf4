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
                extend_vocab_min_count: int = 1, extend_vocab_from: str | None = None,
                new_row_init: str | None = None, unlabeled_texts=(), adapt: str | None = None,
                adapt_steps: int | None = None, adapt_lr: float | None = None,
                adapt_batch_size: int | None = None, adapt_max_length: int | None = None,
                adapt_train: str | None = None, adapt_cache: str | None = None) -> SpanNER:
    """The SpanNER a ``model`` config describes (``conf/model/*.yaml`` name this function as
    their ``_target_``; the teacher passes ``labels``, ``tokenizer``, ``train_texts`` and
    ``unlabeled_texts``, the transfer text), extending the vocabulary with the unknown pieces of
    the training text (``extend_vocab_from=train+unlabeled``: and the transfer text) first when
    ``extend_vocab``, then adapting the encoder with an MLM phase on all that text when
    ``adapt=mlm`` (:mod:`distill.model.adapt`). What was done: the model's ``vocabulary_report``."""
    from distill.model import adapt as adaptation

    source = extend_vocab_from or "train"
    if source not in VOCAB_SOURCES:
        raise ConfigError(f"model.extend_vocab_from={source!r}: one of {', '.join(VOCAB_SOURCES)}")
    mode = adapt or "none"
    if mode not in adaptation.MODES:
        raise ConfigError(f"model.adapt={adapt!r}: one of null, {', '.join(adaptation.MODES)}")
    encoder = load_encoder(name_or_path, init, trust_remote_code)
    report: dict = {}
    base_vocab = len(tokenizer)
    texts = list(train_texts) + list(unlabeled_texts)
    if extend_vocab:
        vocab_texts = texts if source == "train+unlabeled" else list(train_texts)
        report["added_tokens"] = extend_vocabulary(tokenizer, encoder, vocab_texts,
                                                   extend_vocab_min_count, new_row_init or "mean")
    if len(tokenizer) > base_vocab:  # which rows are new (optim.new_rows_lr); saved with the config
        encoder.config.distill_base_vocab_size = base_vocab
    if mode == "mlm":
        report["adapt"] = adaptation.adapt_encoder(
            encoder, tokenizer, texts, base_vocab, cache=adapt_cache, name_or_path=name_or_path,
            steps=adapt_steps, lr=adapt_lr, batch_size=adapt_batch_size,
            max_length=adapt_max_length, train=adapt_train)
    model = SpanNER(encoder, list(labels), head=head, head_size=head_size, rope=rope,
                    dropout=dropout)
    model.vocabulary_report = report
    return model


VOCAB_SOURCES = ("train", "train+unlabeled")
ROW_INITS = ("mean", "random", "pieces")


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


def extend_vocabulary(tokenizer, encoder, texts, min_count: int = 1, init: str = "mean") -> int:
    """Add the text's unknown characters/words as new tokens. Each new embedding row starts at
    ``init``: ``mean`` of the existing rows; ``random``, drawn as the encoder initialises weights
    (N(0, initializer_range)); ``pieces``, the mean of the rows of the known pieces the old
    tokenizer gives the token (tried whole, then character by character, each also in NFKD form,
    so e.g. "é" gets "e"'s row), falling back to the mean when it has only [UNK]. Returns the
    number of tokens added."""
    if init not in ROW_INITS:
        raise ConfigError(f"model.new_row_init={init!r}: one of {', '.join(ROW_INITS)}")
    pieces = unknown_pieces(tokenizer, texts)
    new = sorted(p for p, n in pieces.items() if n >= min_count)
    if not new:
        log.info("extend_vocab: no unknown tokens in the training text")
        return 0
    known = [known_piece_ids(tokenizer, piece) for piece in new] if init == "pieces" else []
    before = len(tokenizer)
    added = tokenizer.add_tokens(new)
    embeddings = encoder.get_input_embeddings()
    old = embeddings.weight.detach()[:before].clone()
    mean = old.mean(dim=0)
    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[before:] = mean
        if init == "random":
            std = float(getattr(encoder.config, "initializer_range", 0.02))
            weight[before:] = torch.randn(len(tokenizer) - before, old.shape[1]) * std
        elif init == "pieces":
            rows = {t: tokenizer.convert_tokens_to_ids(t) for t in new}
            for token, ids in zip(new, known):
                if ids and rows[token] >= before:
                    weight[rows[token]] = old[ids].mean(dim=0)
    fallback = sum(1 for ids in known if not ids)
    log.info("extend_vocab: added %d tokens (%d unknown-token occurrences), rows from %s%s, "
             "e.g. %s", added, sum(pieces.values()), init,
             f" ({fallback} only [UNK]: mean)" if init == "pieces" else "", " ".join(new[:10]))
    return added


def known_piece_ids(tokenizer, piece: str) -> list[int]:
    """Ids of the known (not special, not [UNK]) tokens the tokenizer gives ``piece``: the whole
    string, else its characters one by one; each also in NFKD form."""
    import unicodedata

    special = set(tokenizer.all_special_ids)

    def ids_of(text: str) -> list[int]:
        out = []
        for form in dict.fromkeys((text, unicodedata.normalize("NFKD", text))):
            out = [i for i in tokenizer(form, add_special_tokens=False)["input_ids"]
                   if i not in special]
            if out:
                return out
        return out

    whole = ids_of(piece)
    if whole or len(piece) == 1:
        return whole
    return [i for ch in piece for i in ids_of(ch)]


def unknown_eval_pieces(tokenizer, splits: dict) -> dict:
    """Per split (``{name: texts}``), how many characters/words the tokenizer still maps to
    [UNK] (occurrences) -- after extension these are first seen at evaluation time."""
    return {name: sum(unknown_pieces(tokenizer, list(texts)).values())
            for name, texts in splits.items()}
