"""The document as one self-contained HTML page (inline CSS, plots as base64 PNG); every string is escaped."""

from __future__ import annotations

import base64
import html
from typing import Any

from levit_edge.report.document import (
    Bullets,
    Cell,
    Code,
    Document,
    Image,
    Para,
    Sub,
    Table,
    Text,
    numeric_columns,
    plain,
)

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#1f2328;
 font:14px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:20px 28px 40px;background:#fff;min-height:100vh}
h1{font-size:22px;margin:4px 0 10px;word-break:break-all}
h2{font-size:17px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
h3{font-size:14px;margin:16px 0 6px;color:#424a53}
p{margin:6px 0}
nav{font-size:12px;color:#57606a;margin:12px 0 0}
nav a{color:#0969da;text-decoration:none;margin-right:10px;white-space:nowrap}
.headline{border:1px solid #d0d7de;border-left:6px solid var(--tone);border-radius:6px;padding:12px 16px}
.headline ul{margin:8px 0 0;padding-left:18px}
.headline li{margin:2px 0}
.summary{font-size:15px;font-weight:600}
.badge{display:inline-block;padding:3px 12px;border-radius:999px;color:#fff;background:var(--tone);
 font-weight:700;font-size:13px;letter-spacing:.04em;text-transform:uppercase;margin-right:10px;vertical-align:2px}
.t-good{--tone:#1a7f37}.t-bad{--tone:#cf222e}.t-warn{--tone:#9a6700}.t-none{--tone:#57606a}
td.good,li.good,p.good{color:#1a7f37}td.bad,li.bad,p.bad{color:#cf222e;font-weight:600}
td.warn,li.warn,p.warn{color:#9a6700}
table{border-collapse:collapse;margin:6px 0;font-size:13px;max-width:100%}
th,td{border:1px solid #d0d7de;padding:4px 9px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f6f8fa;font-weight:600}
tr:nth-child(even) td{background:#fbfcfd}
table.kv td:first-child{background:#f6f8fa;color:#424a53;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.num,td.word{white-space:nowrap}
th{overflow-wrap:normal}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px;white-space:pre-wrap;
 overflow-wrap:anywhere;font:12px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
img{max-width:100%;height:auto;display:block;margin:8px 0}
ul{margin:4px 0;padding-left:22px}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cls(*names: str | None) -> str:
    present = [n for n in names if n]
    return f' class="{" ".join(present)}"' if present else ""


def _html_text(tag: str, t: Text, extra: str | None = None, paths: bool = False) -> str:
    tone = t.tone if isinstance(t, Cell) else None
    body = _h(plain(t))
    raw = plain(t)
    if paths and raw.count("/") >= 2 and not any(c.isspace() for c in raw):
        # node names and file paths wrap after a slash, not inside a word (<wbr> copies as nothing)
        body = body.replace("/", "/<wbr>")
    return f"<{tag}{_cls(extra, tone)}>{body}</{tag}>"


def _word(text: str) -> bool:
    """A short single token (an op type, a variant, yes/no): kept on one line, never broken mid-word."""
    return 0 < len(text) <= 16 and not any(c.isspace() for c in text)


def _html_table(table: Table) -> list[str]:
    numeric = numeric_columns(table)
    out = [f"<table{_cls('kv' if table.kv else None)}>"]
    if any(table.headers):  # key/value tables have no header row
        heads = zip(table.headers, numeric, strict=False)
        out.append("<thead><tr>" + "".join(f"<th{_cls('num' if n else None)}>{_h(h)}</th>" for h, n in heads))
        out.append("</tr></thead>")
    out.append("<tbody>")
    for row in table.rows:
        cells = "".join(
            _html_text("td", c, "num" if n else "word" if _word(plain(c)) else None, paths=True)
            for c, n in zip(row, numeric, strict=False)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return out


def to_html(doc: Document) -> str:
    """The document as one self-contained HTML page (inline CSS, plots as base64 PNG)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(doc.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body><main>",
        f"<h1>{_h(doc.title)}</h1>",
        f'<div class="headline t-{_h(doc.tone)}">',
        f'<div class="summary"><span class="badge">{_h(doc.status)}</span>{_h(doc.summary)}</div>',
        "<ul>",
        *(_html_text("li", f) for f in doc.facts),
        "</ul>",
        "</div>",
        "<nav>" + " ".join(f'<a href="#{s.anchor}">{_h(s.title)}</a>' for s in doc.sections) + "</nav>",
    ]
    for sec in doc.sections:
        out.append(f'<section id="{_h(sec.anchor)}">')
        out.append(f"<h2>{_h(sec.title)}</h2>")
        for block in sec.blocks:
            if isinstance(block, Sub):
                out.append(f"<h3>{_h(block.text)}</h3>")
            elif isinstance(block, Para):
                out.append(_html_text("p", block.text))
            elif isinstance(block, Bullets):
                out += ["<ul>", *(_html_text("li", i) for i in block.items), "</ul>"]
            elif isinstance(block, Table):
                out += _html_table(block)
            elif isinstance(block, Code):
                out.append(f"<pre><code>{_h(block.text)}</code></pre>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f'<img alt="{_h(block.alt)}" src="data:image/png;base64,{data}">')
        out.append("</section>")
    out += ["</main></body>", "</html>"]
    return "\n".join(out) + "\n"
