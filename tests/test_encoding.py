import pytest
import torch

from distill.data.document import Document, Entity
from distill.data.encoding import AlignmentReport, align_span, encode_documents
from distill.errors import ConfigError
from distill.eval.decode import Prediction, decode_batch, merge_windows
from distill.model.encoders import extend_vocabulary, load_encoder, load_tokenizer, unknown_pieces


def _oracle_logits(windows, num_labels):
    """Logits that are +5 exactly on each window's gold token spans and −5 elsewhere (valid)."""
    n = max(len(w) for w in windows)
    logits = torch.full((len(windows), num_labels, n, n), float("-inf"))
    for k, w in enumerate(windows):
        content = [i for i, c in enumerate(w.content) if c]
        for i in content:
            for j in content:
                if i <= j:
                    logits[k, :, i, j] = -5.0
        for c, i, j in w.spans:
            logits[k, c, i, j] = 5.0
    return logits


def test_align_span_rules():
    starts, ends = [0, 3, 8], [2, 7, 12]  # tokens: [0,2) [3,7) [8,12)
    assert align_span(starts, ends, 3, 12) == (1, 2, True)
    assert align_span(starts, ends, 2, 7) == (1, 1, False)  # starts inside whitespace: first token at/after
    assert align_span(starts, ends, 4, 6)[:2] == (2, 0)  # inside one token: no token span


def test_english_subword_offsets_and_misalignment_is_counted(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    doc = Document("Smith's team beat Oxfordshire.", [Entity(0, 5, "PER"), Entity(18, 24, "LOC")])
    report = AlignmentReport()
    (window,) = encode_documents([doc], tokenizer, {"LOC": 0, "PER": 1}, 64, 8, report=report)
    # "Oxford" ends inside the word "oxfordshire": not a token boundary here unless the vocabulary
    # splits it there; the exact-boundary entity maps to tokens that slice back to "Smith".
    (c, i, j) = [s for s in window.spans if s[0] == 1][0]
    assert doc.text[window.offsets[i][0] : window.offsets[j][1]] == "Smith"
    assert report.entities == 2
    assert report.misaligned == (0 if any(o[1] == 24 for o in window.offsets) else 1)


def test_chinese_characters_are_single_tokens(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    doc = Document("北京大学中国人", [Entity(0, 4, "ORG"), Entity(0, 2, "LOC"), Entity(4, 6, "LOC")])
    (window,) = encode_documents([doc], tokenizer, {"LOC": 0, "ORG": 1}, 64, 8)
    assert sorted(window.spans) == [(0, 1, 2), (0, 5, 6), (1, 1, 4)]
    assert window.offsets[1:8] == [(k, k + 1) for k in range(7)]


def test_windows_recover_entities_straddling_boundaries(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    words = [f"{'abcdefghij'[k % 10]}" for k in range(60)]
    text = " ".join(words)
    entities = [Entity(2 * k, 2 * k + 5, "LOC") for k in range(0, 58, 7)]  # 3-token spans
    doc = Document(text, entities)
    report = AlignmentReport()
    windows = encode_documents([doc], tokenizer, {"LOC": 0}, max_length=16, stride=6, report=report)
    assert len(windows) > 4 and report.unwindowed == 0 and report.misaligned == 0
    # Some entity crosses a window boundary: it is missing from one window, present in the next.
    per_window = [len(w.spans) for w in windows]
    assert sum(per_window) > len(entities)
    decoded = decode_batch(_oracle_logits(windows, 1), [w.offsets for w in windows],
                           [w.doc_index for w in windows], ["LOC"])
    assert [(p.start, p.end, p.type) for p in decoded[0]] == [(e.start, e.end, e.type) for e in entities]


def test_entity_longer_than_overlap_is_reported(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    text = " ".join("a" for _ in range(40))
    report = AlignmentReport()
    encode_documents([Document(text, [Entity(0, 41, "LOC")])], tokenizer, {"LOC": 0}, 12, 4,
                     report=report)
    assert report.unwindowed == 1 and "LOC" in report.unwindowed_example


def test_extend_vocab_adds_unknown_chars_with_mean_rows(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    encoder = load_encoder(str(tiny_bert))
    texts = ["上海交通大学", "上海是城市"]
    assert unknown_pieces(tokenizer, texts)["上"] == 2
    before = encoder.get_input_embeddings().weight.detach().clone()
    added = extend_vocabulary(tokenizer, encoder, texts)
    assert added == len(set("上海交通是城市"))
    assert not unknown_pieces(tokenizer, texts)
    weight = encoder.get_input_embeddings().weight.detach()
    assert weight.shape[0] == len(tokenizer) == before.shape[0] + added
    assert torch.allclose(weight[-1], before.mean(0)) and torch.equal(weight[: len(before)], before)
    enc = tokenizer("上海交通大学", return_offsets_mapping=True, add_special_tokens=False)
    assert enc["offset_mapping"] == [(k, k + 1) for k in range(6)]


def test_every_span_is_decided_by_a_window_that_gives_it_context(tiny_bert):
    """Consecutive windows share ``stride`` tokens, so each span of m <= stride tokens has a window
    with (stride - m) // 2 tokens of context on every side it cuts; merge_windows picks one."""
    tokenizer = load_tokenizer(str(tiny_bert))
    text = " ".join("abcdefghij"[k % 10] for k in range(70))
    stride = 6
    windows = encode_documents([Document(text)], tokenizer, {}, max_length=16, stride=stride)
    tokens = sorted({o for w in windows for o, c in zip(w.offsets, w.content) if c})
    assert len(windows) > 5
    for m in range(1, stride + 1):
        for a in range(len(tokens) - m + 1):
            start, end = tokens[a][0], tokens[a + m - 1][1]
            # Every window holding the span predicts it, scored by the window's number.
            preds = [[Prediction(start, end, "LOC", float(k))]
                     if w.offsets[1][0] <= start and end <= w.offsets[-2][1] else []
                     for k, w in enumerate(windows)]
            (p,) = merge_windows(preds, offsets=[w.offsets for w in windows])
            w = windows[int(p.score)]
            content = [o for o, c in zip(w.offsets, w.content) if c]
            left = sum(e <= start for _, e in content) if content[0] != tokens[0] else stride
            right = sum(b >= end for b, _ in content) if content[-1] != tokens[-1] else stride
            assert min(left, right) >= (stride - m) // 2, (m, a, int(p.score))


def test_stride_must_leave_windows_overlapping_and_advancing(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    for stride in (-1, 14):
        with pytest.raises(ConfigError, match="data.stride"):
            encode_documents([Document("a b c")], tokenizer, {}, max_length=16, stride=stride)
