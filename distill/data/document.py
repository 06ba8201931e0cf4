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
