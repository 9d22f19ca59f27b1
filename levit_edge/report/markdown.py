"""The document as GitHub-flavoured Markdown; every string is escaped."""

from __future__ import annotations

import re
from typing import Any

from levit_edge.report.document import Bullets, Code, Document, Para, Sub, Table, numeric_columns, plain

_MD_SPECIAL = re.compile(r"([\\|`*<\[\]])")
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")


def md_escape(text: Any) -> str:
    """Text safe inside Markdown (tables included): one line, ``|`` and other syntax backslash-escaped."""
    s = " ".join(str(text).splitlines())
    return _MD_ENTITY.sub(r"\\&", _MD_SPECIAL.sub(r"\\\1", s))


def _md_table(table: Table) -> list[str]:
    numeric = numeric_columns(table)
    head = "| " + " | ".join(md_escape(h) or " " for h in table.headers) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    rows = ["| " + " | ".join(md_escape(plain(c)) for c in row) + " |" for row in table.rows]
    return [head, rule, *rows]


def to_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured Markdown."""
    out = [
        f"# {md_escape(doc.title)}",
        "",
        f"**Status: {md_escape(doc.status.upper())}** — {md_escape(doc.summary)}",
        "",
    ]
    out += [f"- {md_escape(plain(f))}" for f in doc.facts]
    for sec in doc.sections:
        out += ["", f"## {md_escape(sec.title)}"]
        for block in sec.blocks:
            out.append("")
            if isinstance(block, Sub):
                out.append(f"### {md_escape(block.text)}")
            elif isinstance(block, Para):
                out.append(md_escape(plain(block.text)))
            elif isinstance(block, Bullets):
                out += [f"- {md_escape(plain(i))}" for i in block.items]
            elif isinstance(block, Table):
                out += _md_table(block)
            elif isinstance(block, Code):
                fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", block.text)), default=0))
                out += [fence, block.text, fence]
    return "\n".join(out) + "\n"
