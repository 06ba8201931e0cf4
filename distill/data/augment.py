"""More text for distillation: mention replacement of the training split (``python -m distill.augment``).

Mention replacement (Dai & Adel, 2020, "An Analysis of Simple Data Augmentation for Named Entity
Recognition"): every training document with entities is copied ``copies`` times, each mention
replaced by a random *other* mention of the same type seen in the training split ("EU rejects
German call" -> "Pakistan rejects Dutch call"). New contexts around known entity surfaces are
where a teacher's soft span scores say most that the gold labels of the originals do not.

The output is canonical JSONL (``text`` plus the swapped mentions as ``entities``), so it serves
both as ``data.unlabeled=<file>`` (the distillation term only; the entities are ignored and the
teacher decides) and as more gold-labelled training data (``data.extra_train=<file>``, appended to
the original training split). Only the training split is read
(after ``data.holdout`` and ``data.limit_train``), so no evaluation text leaks in. Documents whose
entities overlap (nested datasets) are not rewritten -- replacing an outer mention would silently
drop the inner ones -- and are counted in the summary, as are documents without entities.
"""

from __future__ import annotations

import random
from collections import defaultdict

from distill.data.document import Document, Entity
from distill.errors import ConfigError


def mention_pool(docs: list[Document]) -> dict[str, list[str]]:
    """Distinct mention surfaces per entity type, in first-seen order (deterministic)."""
    pool: dict[str, dict[str, None]] = defaultdict(dict)
    for doc in docs:
        for entity in doc.entities:
            pool[entity.type].setdefault(doc.surface(entity))
    return {type_: list(surfaces) for type_, surfaces in pool.items()}


def _overlapping(entities: list[Entity]) -> bool:
    return any(b.start < a.end for a, b in zip(entities, entities[1:]))


def mention_swap(docs: list[Document], copies: int = 1, seed: int = 0) -> tuple[list[Document], dict]:
    """(new documents, counts): ``copies`` rewrites of every document that has entities, none
    of them overlapping; each mention becomes a different surface of its type where the pool has
    one (a type with a single surface keeps it)."""
    if copies < 1:
        raise ConfigError(f"copies={copies}: expected an integer >= 1")
    pool = mention_pool(docs)
    rng = random.Random(seed)
    out: list[Document] = []
    counts = {"documents": len(docs), "without_entities": 0, "overlapping_entities": 0,
              "written": 0, "mentions_swapped": 0}
    for doc in docs:
        entities = sorted(set(doc.entities))
        if not entities:
            counts["without_entities"] += 1
            continue
        if _overlapping(entities):
            counts["overlapping_entities"] += 1
            continue
        for copy in range(copies):
            pieces, swapped, position, length = [], [], 0, 0
            for entity in entities:
                before = doc.text[position:entity.start]
                surface = doc.surface(entity)
                choices = pool[entity.type]
                new = surface
                if len(choices) > 1:
                    while new == surface:
                        new = choices[rng.randrange(len(choices))]
                    counts["mentions_swapped"] += 1
                start = length + len(before)
                pieces += [before, new]
                swapped.append(Entity(start, start + len(new), entity.type))
                length, position = start + len(new), entity.end
            pieces.append(doc.text[position:])
            out.append(Document("".join(pieces), swapped, f"{doc.source} (mention swap {copy + 1})"))
    counts["written"] = len(out)
    return out, counts
