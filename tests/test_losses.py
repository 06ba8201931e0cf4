import math

import torch

from distill.train.losses import (kd_mse, kd_sigmoid_kl, kd_softmax_kl, multilabel_categorical_crossentropy)
from distill.model.span_ner import span_mask


def _random_case(seed=0, b=2, c=3, n=6):
    g = torch.Generator().manual_seed(seed)
    content = torch.ones(b, n, dtype=torch.bool)
    content[:, 0] = False  # [CLS]
    content[0, -2:] = False  # [SEP] + padding
    content[1, -1] = False
    valid = span_mask(content)
    logits = torch.randn(b, c, n, n, generator=g) * 3
    logits = logits.masked_fill(~valid, float("-inf"))
    targets = (torch.rand(b, c, n, n, generator=g) > 0.85) & valid
    return logits, targets, valid


def test_mlce_equals_direct_per_span_reference():
    logits, targets, valid = _random_case()
    loss = multilabel_categorical_crossentropy(logits, targets, valid)
    b, c = logits.shape[:2]
    total = 0.0
    for i in range(b):
        for k in range(c):
            neg = [math.exp(float(s)) for s, t, v in zip(logits[i, k].flatten(), targets[i, k].flatten(),
                                                           valid[i, 0].flatten()) if v and not t]
            pos = [math.exp(-float(s)) for s, t in zip(logits[i, k].flatten(), targets[i, k].flatten()) if t]
            total += math.log(1 + sum(neg)) + math.log(1 + sum(pos))
    assert abs(loss.item() - total / (b * c)) < 1e-4


def test_mlce_gradients_are_finite_without_positives():
    logits, _, valid = _random_case()
    logits = logits.clone().requires_grad_(True)
    loss = multilabel_categorical_crossentropy(logits, torch.zeros_like(valid.expand_as(logits)), valid)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_softmax_kl_matches_hand_computation():
    # One sentence, one type, two valid spans + the zero threshold logit.
    valid = torch.tensor([[[[True, True], [False, False]]]])
    student = torch.tensor([[[[1.0, -1.0], [float("-inf"), float("-inf")]]]])
    teacher = torch.tensor([[[[2.0, 0.5], [float("-inf"), float("-inf")]]]])
    t = 2.0
    p = torch.softmax(torch.tensor([2.0, 0.5, 0.0]) / t, 0)
    q = torch.softmax(torch.tensor([1.0, -1.0, 0.0]) / t, 0)
    expected = t**2 * float((p * (p / q).log()).sum())
    got = kd_softmax_kl(student, teacher, valid, temperature=t)
    assert abs(got.item() - expected) < 1e-6


def test_kd_losses_zero_for_identical_logits_and_ignore_masked_spans():
    logits, _, valid = _random_case(1)
    for fn in (kd_softmax_kl, kd_sigmoid_kl, kd_mse):
        assert abs(fn(logits, logits.clone(), valid, 2.0).item()) < 1e-6
    # Changing masked positions (any finite garbage) changes nothing.
    student, teacher = logits.clone(), _random_case(2)[0]
    garbage = torch.randn_like(student) * 100
    for fn in (kd_softmax_kl, kd_sigmoid_kl, kd_mse):
        a = fn(student, teacher, valid, 1.5)
        b = fn(torch.where(valid, student, garbage), torch.where(valid, teacher, garbage), valid, 1.5)
        assert torch.allclose(a, b)
    logits_b, targets_b, _ = _random_case(3)
    a = multilabel_categorical_crossentropy(logits_b, targets_b, valid)
    b = multilabel_categorical_crossentropy(torch.where(valid, logits_b, garbage), targets_b, valid)
    assert torch.allclose(a, b)


def test_softmax_kl_gradients_finite():
    logits, _, valid = _random_case(4)
    student = logits.clone().requires_grad_(True)
    loss = kd_softmax_kl(student, _random_case(5)[0], valid, 2.0)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(student.grad).all()
    assert (student.grad[~valid.expand_as(student)] == 0).all()


def test_mlce_runs_in_float32_under_bf16():
    """Under bf16-mixed the span logits arrive in bf16; the logsumexp over ~10^4 spans must not run
    in bf16 (8 bits of mantissa): the loss of bf16 logits equals the float32 loss of the same
    (bf16-rounded) values, and comes back in float32."""
    g = torch.Generator().manual_seed(0)
    b, c, n = 2, 4, 128  # 4 x 8256 valid spans per sentence
    content = torch.ones(b, n, dtype=torch.bool)
    content[:, 0] = content[:, -1] = False
    valid = span_mask(content)
    logits = (torch.randn(b, c, n, n, generator=g) * 4 - 6).masked_fill(~valid, float("-inf"))
    targets = (torch.rand(b, c, n, n, generator=g) > 0.999) & valid
    low = logits.to(torch.bfloat16)
    loss = multilabel_categorical_crossentropy(low, targets, valid)
    reference = multilabel_categorical_crossentropy(low.float(), targets, valid)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, reference, rtol=1e-6, atol=1e-6)
