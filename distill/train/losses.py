"""Training losses: the GlobalPointer loss and the distillation terms.

All functions take span logits of shape (B, C, n, n) in which invalid spans are −inf (see
:func:`distill.model.span_mask`) and a bool ``valid`` mask broadcastable to that shape. Every
per-(sentence, type) quantity is a logsumexp over the n² span axis with one extra 0 logit, which
keeps it finite (and its gradient defined) when a sentence has no positive or no valid span.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def _logsumexp_with_zero(x: torch.Tensor) -> torch.Tensor:
    """log(1 + Σ_k e^{x_k}) over the flattened span axes: (B, C, n, n) -> (B, C)."""
    flat = x.flatten(2)
    zero = flat.new_zeros(flat.shape[:2] + (1,))
    return torch.logsumexp(torch.cat([flat, zero], dim=-1), dim=-1)


def multilabel_categorical_crossentropy(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Su's multilabel categorical cross-entropy (https://spaces.ac.cn/archives/7359):

        L = log(1 + Σ_{neg} e^{s}) + log(1 + Σ_{pos} e^{−s})

    per (sentence, type) over its valid spans, averaged over sentences and types.
    ``targets`` is a bool (B, C, n, n) tensor of gold spans; ``weights`` (B,) optionally weights
    (or, with zeros, excludes) sentences. Computed in float32 whatever the logits' dtype (under
    bf16-mixed a logsumexp over ~10^4 spans in bf16 loses the loss's low digits).
    """
    logits = logits.float()
    targets = targets.bool() & valid
    negatives = torch.where(valid & ~targets, logits, NEG_INF)
    positives = torch.where(targets, -logits, NEG_INF)
    loss = _logsumexp_with_zero(negatives) + _logsumexp_with_zero(positives)  # (B, C)
    return _mean_over_sentences(loss, weights)


def _mean_over_sentences(loss: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of a (B, C) loss over types and the (weighted) sentences."""
    per_sentence = loss.mean(dim=1)
    if weights is None:
        return per_sentence.mean()
    weights = weights.to(per_sentence.dtype)
    return (per_sentence * weights).sum() / weights.sum().clamp_min(1.0)


def _log_probs_with_threshold(logits: torch.Tensor, valid: torch.Tensor, temperature: float):
    """log-softmax over [valid span logits / T, 0] per (sentence, type): (B, C, n²+1).

    The extra 0 logit is the decision threshold class the multilabel loss is built around, so the
    distribution also encodes where each span sits relative to the threshold."""
    masked = torch.where(valid, logits / temperature, NEG_INF).flatten(2)
    zero = masked.new_zeros(masked.shape[:2] + (1,))
    return F.log_softmax(torch.cat([masked, zero], dim=-1), dim=-1)


def kd_softmax_kl(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor,
                  temperature: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """T² · KL(p_teacher ‖ p_student) with p a softmax over each (sentence, type)'s valid spans
    plus the fixed zero logit; masked spans contribute nothing; mean over (sentence, type)."""
    log_p_student = _log_probs_with_threshold(student.float(), valid, temperature)
    log_p_teacher = _log_probs_with_threshold(teacher.float(), valid, temperature)
    keep = torch.isfinite(log_p_teacher)
    kl = torch.where(keep, log_p_teacher.exp() * (log_p_teacher - log_p_student), 0.0).sum(-1)
    return temperature**2 * _mean_over_sentences(kl, weights)


def kd_sigmoid_kl(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor,
                  temperature: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """T² · mean over valid spans of the binary KL(σ(t/T) ‖ σ(s/T)) (per-span sigmoid KD)."""
    valid = valid.expand_as(student)
    s, t = student[valid].float() / temperature, teacher[valid].float() / temperature
    p_t = torch.sigmoid(t)
    # KL(Bern(p_t) || Bern(p_s)) = BCE(s, p_t) - H(p_t), computed from logits for stability.
    kl = F.binary_cross_entropy_with_logits(s, p_t, reduction="none") - \
        F.binary_cross_entropy_with_logits(t, p_t, reduction="none")
    return temperature**2 * _mean_over_valid_spans(kl, valid, weights)


def kd_mse(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor,
           temperature: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of the valid span logits (temperature is ignored)."""
    valid = valid.expand_as(student)
    diff = (student[valid].float() - teacher[valid].float()) ** 2
    return _mean_over_valid_spans(diff, valid, weights)


def _mean_over_valid_spans(values: torch.Tensor, valid: torch.Tensor, weights) -> torch.Tensor:
    """Mean of per-valid-span values, weighting each span by its sentence's weight."""
    if weights is None:
        return values.mean() if values.numel() else values.sum()
    per_span = weights.to(values.dtype)[:, None, None, None].expand_as(valid)[valid]
    return (values * per_span).sum() / per_span.sum().clamp_min(1.0)


KD_LOSSES = {"softmax": kd_softmax_kl, "bce": kd_sigmoid_kl, "mse": kd_mse}


def loss_name(fn) -> str:
    """The short name of a KD loss (``softmax``, ``bce``, ``mse``; a Hydra partial of one of them
    too), else its qualified name: what metrics.json and the comparison table show."""
    base = getattr(fn, "func", fn)  # functools.partial
    for name, known in KD_LOSSES.items():
        if base is known:
            return name
    return f"{getattr(base, '__module__', '')}.{getattr(base, '__qualname__', repr(base))}".lstrip(".")


def hidden_state_mse(student_states, teacher_states, attention_mask, projections=None):
    """Mean over pairs (student state, teacher state) of the token-level MSE on real tokens.

    ``projections`` (one per pair, or None) maps the student width to the teacher's."""
    mask = attention_mask.bool()
    losses = []
    for k, (s, t) in enumerate(zip(student_states, teacher_states)):
        if projections is not None:
            s = projections[k](s)
        losses.append(((s - t.to(s.dtype)) ** 2)[mask].mean())
    return torch.stack(losses).mean()
