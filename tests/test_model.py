import math

import pytest
import torch

from distill.model.span_ner import EfficientGlobalPointer, GlobalPointer, SpanNER, rotary, span_mask


def test_rotary_is_a_relative_position_encoding():
    torch.manual_seed(0)
    q, k = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    # The same vectors at every position: the score depends only on j - i.
    q_all, k_all = q[:, :1].expand(1, 6, 8), k[:, :1].expand(1, 6, 8)
    scores = rotary(q_all) @ rotary(k_all).transpose(1, 2)
    for offset in range(-5, 6):
        diagonal = torch.diagonal(scores[0], offset=offset)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-5)
    # Rotation preserves norms.
    assert torch.allclose(rotary(q).norm(dim=-1), q.norm(dim=-1), atol=1e-5)


def test_span_mask_excludes_lower_triangle_special_and_padding():
    content = torch.tensor([[0, 1, 1, 0, 0]]).bool()  # [CLS] a b [SEP] [PAD]
    mask = span_mask(content)[0, 0]
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[1, 1] = expected[1, 2] = expected[2, 2] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("head", [GlobalPointer, EfficientGlobalPointer])
def test_head_matches_the_formula(head):
    torch.manual_seed(0)
    layer = head(hidden_size=8, num_types=3, head_size=4, rope=True)
    h = torch.randn(2, 5, 8)
    out = layer(h)
    assert out.shape == (2, 3, 5, 5)
    if head is GlobalPointer:
        qk = layer.qk(h).view(2, 5, 3, 2, 4)
        q, k = rotary(qk[..., 0, :]), rotary(qk[..., 1, :])
        for c in range(3):
            ref = q[:, :, c] @ k[:, :, c].transpose(1, 2) / math.sqrt(4)
            assert torch.allclose(out[:, c], ref, atol=1e-5)


def test_span_ner_masks_invalid_spans(tiny_bert):
    from distill.model.encoders import load_encoder

    model = SpanNER(load_encoder(str(tiny_bert)), ["LOC", "PER"]).eval()
    ids = torch.tensor([[2, 10, 11, 3, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 0]])
    content = torch.tensor([[0, 1, 1, 0, 0]]).bool()
    logits = model(ids, attention, content)
    assert logits.shape == (1, 2, 5, 5)
    valid = span_mask(content).expand_as(logits)
    assert torch.isfinite(logits[valid]).all()
    assert torch.isneginf(logits[~valid]).all()
