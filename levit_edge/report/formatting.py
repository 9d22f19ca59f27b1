"""Values as short text, and tables for any JSON value, for the section builders."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from levit_edge.report.document import DASH, WARN, Block, Cell, Code, Para, Sub, Table, Text
from levit_edge.report.views import as_num

LIST_ITEMS = 8


def fixed(x: Any, digits: int = 2, sign: bool = False) -> str:
    v = as_num(x)
    return DASH if v is None else f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def points(x: float) -> str:
    """A threshold as written by people: 1.0, 0.5, 0.25."""
    s = f"{x:g}"
    return s if "." in s or "e" in s else f"{s}.0"


def kl_text(x: Any) -> str:
    v = as_num(x)
    if v is None:
        return DASH
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"


def mb(x: Any) -> str:
    v = as_num(x)
    return DASH if v is None else f"{v / 1e6:.2f}"


def short_list(items: Sequence[Any], limit: int = LIST_ITEMS) -> str:
    shown = ", ".join(fmt(i) for i in items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "") if items else DASH


def fmt(x: Any) -> str:
    """Any JSON value as short text."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return DASH
        return f"{x:,.0f}" if abs(x) >= 1e5 else f"{x:.6g}"
    if isinstance(x, list | tuple):
        return short_list(x)
    if isinstance(x, Mapping):
        return json.dumps(x, sort_keys=True, default=str) if x else DASH
    return str(x)


def is_leaf(x: Any) -> bool:
    """A value that fits in one table cell (empty mappings count: they print as a dash)."""
    if isinstance(x, Mapping):
        return not x
    return not (isinstance(x, list | tuple) and any(isinstance(i, Mapping | list | tuple) for i in x))


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def kv_table(pairs: Sequence[tuple[str, Any]], headers: tuple[str, str] = ("", "")) -> Table:
    return Table(headers, tuple((k, v if isinstance(v, Cell) else fmt(v)) for k, v in pairs), kv=True)


def generic(value: Any, limit: int | None = None) -> list[Block]:
    """Tables for any JSON value: rows of dicts, dicts of dicts, key/value pairs; JSON as a last resort."""
    if is_leaf(value):
        return [Para(fmt(value))]
    if isinstance(value, Mapping):
        if all(is_leaf(v) for v in value.values()):
            return [kv_table(list(value.items()))]
        if all(isinstance(v, Mapping) for v in value.values()):
            flat = {str(k): flatten(v) for k, v in value.items()}
            if all(is_leaf(x) for row in flat.values() for x in row.values()):
                cols = list(dict.fromkeys(c for row in flat.values() for c in row))
                rows = [(k, *(fmt(row.get(c)) for c in cols)) for k, row in flat.items()]
                return [limited(Table(("", *cols), tuple(rows)), limit)]
        blocks: list[Block] = []
        scalars = [(str(k), v) for k, v in value.items() if is_leaf(v)]
        if scalars:
            blocks.append(kv_table(scalars))
        for k, v in value.items():
            if not is_leaf(v):
                blocks += [Sub(str(k)), *generic(v, limit)]
        return blocks
    if isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value):
        flat_rows = [flatten(v) for v in value]
        if all(is_leaf(x) for row in flat_rows for x in row.values()):
            cols = list(dict.fromkeys(c for row in flat_rows for c in row))
            return [
                limited(
                    Table(tuple(cols), tuple(tuple(fmt(r.get(c)) for c in cols) for r in flat_rows)), limit
                )
            ]
    return [Code(json.dumps(value, indent=2, default=str))]


def limited(table: Table, limit: int | None) -> Table:
    if limit is None or len(table.rows) <= limit:
        return table
    more = Cell(f"… {len(table.rows) - limit} more rows in report.json", WARN)
    filler = tuple("" for _ in table.headers[1:])
    return Table(table.headers, (*table.rows[:limit], (more, *filler)), table.kv)


def columns_table(
    rows: Sequence[Mapping[str, Any]], columns: Mapping[str, tuple[str, Callable[[Any], Text]]]
) -> Table:
    """A table of the ``columns`` the rows have, with human headings and formatted cells."""
    keys = [k for k in columns if any(k in r for r in rows)]
    return Table(
        tuple(columns[k][0] for k in keys), tuple(tuple(columns[k][1](r.get(k)) for k in keys) for r in rows)
    )


def by_artifact(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("artifact") or ""), []).append(r)
    return groups


def count_of(x: Any) -> Any:
    return len(x) if isinstance(x, list | tuple | Mapping) else x
