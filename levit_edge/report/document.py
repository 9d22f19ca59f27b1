"""The report's document model: sections of paragraphs, bullet lists, tables, code blocks and plots.

Section builders (``sections_*``) produce it from report.json; the writers (``markdown``, ``html``)
turn it into text. It knows no report keys and no output syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

GOOD, BAD, WARN = "good", "bad", "warn"


@dataclass(frozen=True)
class Cell:
    """Text with an optional tone (good / bad / warn) that the HTML writer colours."""

    text: str
    tone: str | None = None


Text = str | Cell


@dataclass(frozen=True)
class Para:
    text: Text


@dataclass(frozen=True)
class Bullets:
    items: tuple[Text, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]
    kv: bool = False  # key/value pairs: the first column names the row


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Image:
    png: bytes
    alt: str


@dataclass(frozen=True)
class Sub:
    """A sub-heading inside a section."""

    text: str


Block = Para | Bullets | Table | Code | Image | Sub


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass(frozen=True)
class Document:
    title: str
    status: str
    summary: str
    facts: tuple[Text, ...]
    sections: tuple[Section, ...]
    tone: str = "none"  # the headline's colour: good / bad / warn / none


DASH = "—"  # an empty or unknown value
_NUMERIC = re.compile(r"^[+-]?\d[\d,]*(\.\d+)?(e[+-]?\d+)?%?$")


def plain(t: Text) -> str:
    """The text of a cell, without its tone."""
    return t.text if isinstance(t, Cell) else t


def numeric_columns(table: Table) -> list[bool]:
    """Per column: every non-empty cell is a number (right-aligned by both writers)."""
    out = []
    for i in range(len(table.headers)):
        cells = [plain(r[i]) for r in table.rows if i < len(r) and plain(r[i]) not in ("", DASH)]
        out.append(bool(cells) and all(_NUMERIC.match(c) for c in cells))
    return out
