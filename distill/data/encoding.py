"""From documents to model windows: tokenization, span alignment and sliding windows.

Tokenization uses the fast tokenizer's own ``offset_mapping`` and overflow windows
(``return_overflowing_tokens`` with ``stride`` = overlap in tokens), so a text longer than
``max_length`` becomes several overlapping windows and nothing is truncated away. An entity is
labelled in every window that contains it whole; predictions are merged back to document-level
character offsets by :func:`distill.eval.decode.merge_windows`, which lets each span be decided
by the window in which it has the most context. Consecutive windows share ``stride`` tokens, so
for a span of m <= ``stride`` tokens that window leaves at least (stride - m) // 2 tokens of
context on each side it cuts (the windows' cores, the spans each decides, cover the document);
a longer span may fit whole in no window (counted in :attr:`AlignmentReport.unwindowed`).
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from distill.data.document import Document
from distill.errors import ConfigError

log = logging.getLogger("distill")


@dataclass
class Window:
    """One model input: token ids plus what is needed to map token spans back to characters."""

    doc_index: int
    input_ids: list[int]
    offsets: list[tuple[int, int]]  # char offsets per token, (0, 0) for special tokens
    content: list[bool]  # False for [CLS]/[SEP]/padding: spans touching them are invalid
    spans: list[tuple[int, int, int]] = field(default_factory=list)  # (type_id, first, last) token
    labeled: bool = True  # False for unlabeled text (distillation term only)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class AlignmentReport:
    """What the tokenizer and the window split did to the gold entities of one split."""

    entities: int = 0
    misaligned: int = 0  # no token span covers the entity exactly
    misaligned_example: str = ""
    unwindowed: int = 0  # no window holds the entity whole (longer than the overlap allows)
    unwindowed_example: str = ""
    tokens: int = 0
    unknown_tokens: int = 0

    @property
    def unknown_share(self) -> float:
        return self.unknown_tokens / self.tokens if self.tokens else 0.0

    def log(self, split: str) -> None:
        log.info(
            "%s: %d entities; %.1f%% of %d tokens map to the unknown token",
            split, self.entities, 100 * self.unknown_share, self.tokens,
        )
        if self.misaligned:
            log.warning(
                "%s: %d of %d gold entities do not match token boundaries exactly (e.g. %s); they "
                "are trained on the nearest inner token span and count as misses unless predicted "
                "exactly", split, self.misaligned, self.entities, self.misaligned_example,
            )
        if self.unwindowed:
            log.warning(
                "%s: %d of %d gold entities do not fit whole in any window (e.g. %s); raise "
                "data.stride or data.max_length; they are not trained on and count as misses",
                split, self.unwindowed, self.entities, self.unwindowed_example,
            )


def align_span(starts: list[int], ends: list[int], start: int, end: int) -> tuple[int, int, bool]:
    """Token span for a character span: first token starting at/after ``start``, last token
    ending at/before ``end``. ``starts``/``ends`` are the sorted char offsets of content tokens.
    Returns (first, last, exact); first > last when no token lies inside the span."""
    first = bisect_left(starts, start)
    last = bisect_right(ends, end) - 1
    exact = first <= last and starts[first] == start and ends[last] == end
    return first, last, exact


def encode_documents(
    docs: list[Document],
    tokenizer,
    label_ids: dict[str, int],
    max_length: int,
    stride: int,
    labeled: bool = True,
    report: AlignmentReport | None = None,
) -> list[Window]:
    """Tokenize ``docs`` into overlapping windows with token-level gold spans."""
    if not 0 <= stride < max_length - 2:  # consecutive windows overlap, each advances
        raise ConfigError(
            f"data.stride={stride} must be at least 0 and smaller than data.max_length - 2 = "
            f"{max_length - 2}"
        )
    report = report if report is not None else AlignmentReport()
    windows: list[Window] = []
    batch = 256
    for lo in range(0, len(docs), batch):
        chunk = docs[lo : lo + batch]
        enc = tokenizer(
            [d.text for d in chunk],
            max_length=max_length,
            stride=stride,
            truncation=True,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_token_type_ids=False,
            return_attention_mask=False,
        )
        by_doc: dict[int, list[int]] = {}
        for w, d in enumerate(enc["overflow_to_sample_mapping"]):
            by_doc.setdefault(d, []).append(w)
        for d, doc in enumerate(chunk):
            doc_windows = [
                _window(lo + d, enc["input_ids"][w], enc["offset_mapping"][w],
                        enc["special_tokens_mask"][w], labeled)
                for w in by_doc.get(d, [])
            ]
            _label(doc, doc_windows, label_ids, tokenizer.unk_token_id, report)
            windows.extend(doc_windows)
    return windows


def _window(doc_index, input_ids, offsets, special, labeled) -> Window:
    content = [not s and e > b for s, (b, e) in zip(special, offsets)]
    return Window(doc_index, list(input_ids), [tuple(o) for o in offsets], content, labeled=labeled)


def _label(doc: Document, windows: list[Window], label_ids, unk_id, report: AlignmentReport):
    for win in windows:
        report.tokens += sum(win.content)
        report.unknown_tokens += sum(
            1 for t, c in zip(win.input_ids, win.content) if c and t == unk_id
        )
    if not doc.entities:
        return
    # Per window: character offset -> token index, for token starts and token ends.
    token_starts = [{b: i for i, ((b, _), c) in enumerate(zip(w.offsets, w.content)) if c}
                    for w in windows]
    token_ends = [{e: i for i, ((_, e), c) in enumerate(zip(w.offsets, w.content)) if c}
                  for w in windows]
    # Alignment is decided on the whole document's tokens (all windows share one tokenization).
    starts = sorted({b for s in token_starts for b in s})
    ends = sorted({e for s in token_ends for e in s})
    for ent in doc.entities:
        report.entities += 1
        first, last, exact = align_span(starts, ends, ent.start, ent.end)
        where = f"{doc.text[ent.start:ent.end][:40]!r} ({ent.type}) at {doc.source or 'document'}"
        if not exact:
            report.misaligned += 1
            report.misaligned_example = report.misaligned_example or where
        if first > last:
            continue  # no token lies inside the span: nothing to train on
        char_start, char_end = starts[first], ends[last]
        placed = False
        for win, by_start, by_end in zip(windows, token_starts, token_ends):
            i, j = by_start.get(char_start), by_end.get(char_end)
            if i is not None and j is not None and i <= j:
                win.spans.append((label_ids[ent.type], i, j))
                placed = True
        if not placed:
            report.unwindowed += 1
            report.unwindowed_example = report.unwindowed_example or where
