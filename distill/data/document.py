"""The one in-memory example type: a document's text and its entities as character spans."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Entity:
    """An entity mention: ``text[start:end]`` (``end`` exclusive) of type ``type``."""

    start: int
    end: int
    type: str


@dataclass
class Document:
    """A text with (possibly nested or overlapping) entities.

    Identical spans with different types are allowed; exact duplicates are not meaningful and are
    kept once. ``source`` says where the document came from ("file:line") for error messages.
    """

    text: str
    entities: list[Entity] = field(default_factory=list)
    source: str = ""

    def surface(self, entity: Entity) -> str:
        return self.text[entity.start : entity.end]


def join_documents(docs: list[Document], sep: str = " ") -> Document:
    """``docs`` as one document: texts joined with ``sep``, entity offsets shifted; the source is
    the first one's."""
    parts, entities, shift = [], [], 0
    for doc in docs:
        parts.append(doc.text)
        entities += [Entity(e.start + shift, e.end + shift, e.type) for e in doc.entities]
        shift += len(doc.text) + len(sep)
    return Document(sep.join(parts), entities, docs[0].source if docs else "")


def join_every(docs: list[Document], k: int, sep: str = " ") -> list[Document]:
    """Every ``k`` consecutive documents as one (:func:`join_documents`)."""
    return [join_documents(docs[lo : lo + k], sep) for lo in range(0, len(docs), k)]
