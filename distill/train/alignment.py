"""Cross-tokenizer distillation: teacher and student spans paired by the characters they cover.

A student with its own tokenizer (``student.init=pretrained`` with another vocabulary) reads its
windows tokenized its way; the teacher reads, with its tokenizer, exactly the character range of
each student window (first content token's start to last content token's end). A teacher span
(a, b) and a student span (i, j) are paired when they cover the same characters: the start char
of token a equals that of token i and the end char of token b that of token j. Since a
tokenization has at most one token starting (ending) at a given char, each span has at most one
counterpart. :meth:`CharAlignment.remap` puts the teacher's logits into the student's (n × n)
grid with a bool ``paired`` mask; the KD term uses ``valid & paired``, so spans that only one side
can express are left out of the KL on both sides. With identical tokenizations the remap is the
identity and ``paired`` equals the student's valid mask.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("distill")


def same_tokenization(teacher_tokenizer, student_tokenizer, texts, sample: int = 200) -> bool:
    """Whether the two tokenizers share a vocabulary and tokenize the ``texts`` (the first
    ``sample`` of them) into the same ids: then the direct (token-for-token) KD path applies."""
    if teacher_tokenizer is student_tokenizer:
        return True
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        return False
    texts = list(texts)[:sample]
    if not texts:
        return True
    a = teacher_tokenizer(texts, add_special_tokens=True)["input_ids"]
    b = student_tokenizer(texts, add_special_tokens=True)["input_ids"]
    return a == b


def token_maps(teacher_offsets, teacher_content, student_offsets, student_content):
    """Per student token: the teacher token starting at the same char (``starts``) and the one
    ending at the same char (``ends``), −1 where none (or for special tokens)."""
    t_start = {b: k for k, ((b, _), c) in enumerate(zip(teacher_offsets, teacher_content)) if c}
    t_end = {e: k for k, ((_, e), c) in enumerate(zip(teacher_offsets, teacher_content)) if c}
    starts = [t_start.get(b, -1) if c else -1 for (b, _), c in zip(student_offsets, student_content)]
    ends = [t_end.get(e, -1) if c else -1 for (_, e), c in zip(student_offsets, student_content)]
    return starts, ends


def paired_mask(starts, ends, n: int | None = None) -> torch.Tensor:
    """(n, n) bool: student span (i, j), i ≤ j, has a teacher counterpart (a ≤ b)."""
    s, e = torch.tensor(starts, dtype=torch.long), torch.tensor(ends, dtype=torch.long)
    m = len(starts)
    ok = (s[:, None] >= 0) & (e[None, :] >= 0) & (s[:, None] <= e[None, :])
    ok &= torch.ones(m, m, dtype=torch.bool).triu()
    if n is not None and n > m:
        ok = torch.nn.functional.pad(ok, (0, n - m, 0, n - m))
    return ok


def count_valid(content) -> int:
    """Valid spans (i ≤ j, both content tokens) of one window."""
    k = sum(bool(c) for c in content)
    return k * (k + 1) // 2


class CharAlignment:
    """The teacher's view of each window of a student dataset, and the span pairing.

    ``dataset``: the student's :class:`~distill.data.datamodule.WindowDataset` (its windows carry
    document char offsets); ``max_length``: the teacher's token limit for a window."""

    def __init__(self, teacher_tokenizer, dataset, max_length: int = 512):
        self.pad_id = teacher_tokenizer.pad_token_id or 0
        self.views: list[tuple] = []  # (teacher ids, teacher content, starts, ends)
        self.pairs = self.teacher_only = self.student_only = 0
        for w in dataset.windows:
            text = dataset.docs[w.doc_index].text
            chars = [o for o, c in zip(w.offsets, w.content) if c]
            lo, hi = (chars[0][0], chars[-1][1]) if chars else (0, 0)
            enc = teacher_tokenizer(text[lo:hi], truncation=True, max_length=max_length,
                                    return_offsets_mapping=True, return_special_tokens_mask=True,
                                    return_token_type_ids=False, return_attention_mask=False)
            offsets = [(b + lo, e + lo) for b, e in enc["offset_mapping"]]
            content = [not s and e > b for s, (b, e) in zip(enc["special_tokens_mask"], enc["offset_mapping"])]
            starts, ends = token_maps(offsets, content, w.offsets, w.content)
            self.views.append((list(enc["input_ids"]), content, starts, ends))
            pairs = int(paired_mask(starts, ends).sum())
            self.pairs += pairs
            self.teacher_only += count_valid(content) - pairs
            self.student_only += count_valid(w.content) - pairs

    def report(self) -> dict:
        """``kd.alignment`` of metrics.json: span counts over the training windows."""
        return {"pairs": self.pairs, "teacher_only": self.teacher_only,
                "student_only": self.student_only}

    def log(self, prefix: str = "kd alignment") -> None:
        total = self.pairs + self.student_only
        log.info("%s: %d span pairs, %d teacher-only, %d student-only spans (%.1f%% of the "
                 "student's spans paired)", prefix, self.pairs, self.teacher_only,
                 self.student_only, 100 * self.pairs / max(total, 1))

    def teacher_batch(self, window_ids) -> dict:
        """The teacher's padded inputs for the given student windows."""
        ids = window_ids.tolist() if hasattr(window_ids, "tolist") else list(window_ids)
        views = [self.views[i] for i in ids]
        b, m = len(views), max(len(v[0]) for v in views)
        input_ids = torch.full((b, m), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros(b, m, dtype=torch.long)
        content_mask = torch.zeros(b, m, dtype=torch.bool)
        for k, (t_ids, content, _, _) in enumerate(views):
            input_ids[k, : len(t_ids)] = torch.tensor(t_ids)
            attention_mask[k, : len(t_ids)] = 1
            content_mask[k, : len(t_ids)] = torch.tensor(content)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "content_mask": content_mask}

    def remap(self, teacher_logits: torch.Tensor, window_ids, n: int):
        """Teacher (B, C, m, m) logits -> the student's (B, C, n, n) grid (−inf where unpaired)
        and the (B, 1, n, n) bool ``paired`` mask."""
        ids = window_ids.tolist() if hasattr(window_ids, "tolist") else list(window_ids)
        b, c = teacher_logits.shape[:2]
        out = teacher_logits.new_full((b, c, n, n), float("-inf"))
        paired = torch.zeros(b, 1, n, n, dtype=torch.bool, device=teacher_logits.device)
        for row, index in enumerate(ids):
            _, _, starts, ends = self.views[index]
            mask = paired_mask(starts, ends, n).to(teacher_logits.device)
            i, j = mask.nonzero(as_tuple=True)
            s = torch.tensor(starts, device=i.device)[i]
            e = torch.tensor(ends, device=i.device)[j]
            out[row, :, i, j] = teacher_logits[row, :, s, e]
            paired[row, 0] = mask
        return out, paired
