"""Write a run's reports: report.json (the contract), report.md and report.html (for people).

The report dict is turned once into a small document model (sections of paragraphs, bullet lists,
tables, code blocks and plots) and that model is written twice, as Markdown and as one
self-contained HTML file, so both carry the same content. Every string from the report is escaped
by the writer (``html.escape`` for HTML; ``|``, ``\\``, ``<``, backticks and the like for Markdown).
Output depends only on the dict: no clock, no environment, stable PNG bytes.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from levit_edge.report.manifest import write_atomic, write_json

# ---- document model ---------------------------------------------------------------------------------

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


# ---- values and formatting ---------------------------------------------------------------------------

DASH = "—"
ARTIFACT_ORDER = ("fp32", "int8.ort", "int8.trt", "int8.plan")
STATUS_TEXT = {
    "passed": (GOOD, "every INT8 artifact is within the accuracy gate"),
    "failed-accuracy": (BAD, "an INT8 artifact lost more accuracy than the gate allows"),
    "no-engine": (WARN, "everything was built except the TensorRT engine"),
    "unvalidated": (WARN, "INT8 artifacts were built but not validated (no validation data)"),
}
TOP_CLASSES = 15
TOP_CONFUSIONS = 10
TOP_SENSITIVE = 20
LIST_ITEMS = 8


def _map(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _seq(x: Any) -> Sequence[Any]:
    return x if isinstance(x, list | tuple) else ()


def _num(x: Any) -> float | None:
    """``x`` as a finite float, else None (bools, strings, None, NaN and inf are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _fixed(x: Any, digits: int = 2, sign: bool = False) -> str:
    v = _num(x)
    return DASH if v is None else f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _points(x: float) -> str:
    """A threshold as written by people: 1.0, 0.5, 0.25."""
    s = f"{x:g}"
    return s if "." in s or "e" in s else f"{s}.0"


def _kl(x: Any) -> str:
    v = _num(x)
    if v is None:
        return DASH
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"


def _mb(x: Any) -> str:
    v = _num(x)
    return DASH if v is None else f"{v / 1e6:.2f}"


def _short_list(items: Sequence[Any], limit: int = LIST_ITEMS) -> str:
    shown = ", ".join(_fmt(i) for i in items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "") if items else DASH


def _fmt(x: Any) -> str:
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
        return _short_list(x)
    if isinstance(x, Mapping):
        return json.dumps(x, sort_keys=True, default=str) if x else DASH
    return str(x)


def _leaf(x: Any) -> bool:
    """A value that fits in one table cell (empty mappings count: they print as a dash)."""
    if isinstance(x, Mapping):
        return not x
    return not (isinstance(x, list | tuple) and any(isinstance(i, Mapping | list | tuple) for i in x))


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _artifacts(report: Mapping[str, Any], *sections: str) -> list[str]:
    """Artifact keys found in ``sections`` of the report, FP32 first, then the INT8 flavours."""
    keys = {k for s in sections for k in _map(report.get(s))}
    return sorted(
        keys, key=lambda k: (ARTIFACT_ORDER.index(k) if k in ARTIFACT_ORDER else len(ARTIFACT_ORDER), k)
    )


def _kv(pairs: Sequence[tuple[str, Any]], headers: tuple[str, str] = ("", "")) -> Table:
    return Table(headers, tuple((k, v if isinstance(v, Cell) else _fmt(v)) for k, v in pairs), kv=True)


def _generic(value: Any, limit: int | None = None) -> list[Block]:
    """Tables for any JSON value: rows of dicts, dicts of dicts, key/value pairs; JSON as a last resort."""
    if _leaf(value):
        return [Para(_fmt(value))]
    if isinstance(value, Mapping):
        if all(_leaf(v) for v in value.values()):
            return [_kv(list(value.items()))]
        if all(isinstance(v, Mapping) for v in value.values()):
            flat = {str(k): _flatten(v) for k, v in value.items()}
            if all(_leaf(x) for row in flat.values() for x in row.values()):
                cols = list(dict.fromkeys(c for row in flat.values() for c in row))
                rows = [(k, *(_fmt(row.get(c)) for c in cols)) for k, row in flat.items()]
                return [_limited(Table(("", *cols), tuple(rows)), limit)]
        blocks: list[Block] = []
        scalars = [(str(k), v) for k, v in value.items() if _leaf(v)]
        if scalars:
            blocks.append(_kv(scalars))
        for k, v in value.items():
            if not _leaf(v):
                blocks += [Sub(str(k)), *_generic(v, limit)]
        return blocks
    if isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value):
        flat_rows = [_flatten(v) for v in value]
        if all(_leaf(x) for row in flat_rows for x in row.values()):
            cols = list(dict.fromkeys(c for row in flat_rows for c in row))
            return [
                _limited(
                    Table(tuple(cols), tuple(tuple(_fmt(r.get(c)) for c in cols) for r in flat_rows)), limit
                )
            ]
    return [Code(json.dumps(value, indent=2, default=str))]


def _limited(table: Table, limit: int | None) -> Table:
    if limit is None or len(table.rows) <= limit:
        return table
    more = Cell(f"… {len(table.rows) - limit} more rows in report.json", WARN)
    filler = tuple("" for _ in table.headers[1:])
    return Table(table.headers, (*table.rows[:limit], (more, *filler)), table.kv)


# ---- sections ------------------------------------------------------------------------------------------


def _max_drop(report: Mapping[str, Any]) -> float | None:
    """The gate's max drop (points), from the gate result or else the thresholds."""
    for source in (_map(report.get("gate")), _map(report.get("thresholds"))):
        value = _num(source.get("max_drop"))
        if value is not None:
            return value
    return None


def _labelled(report: Mapping[str, Any], artifact: str) -> bool:
    return artifact in _map(report.get("accuracy"))


def _gate_lines(report: Mapping[str, Any]) -> list[Text]:
    """One line per gated artifact: 'int8.ort: drop 0.40 points ≤ max 1' (coloured), then failures."""
    max_drop = _max_drop(report)
    gate = _map(report.get("gate"))
    lines: list[Text] = []
    for key in _artifacts(report, "drop"):
        drop = _num(_map(report.get("drop")).get(key))
        if drop is None or max_drop is None:
            continue
        ok = drop <= max_drop + 1e-9
        what = "drop" if _labelled(report, key) else "disagreement with FP32"
        lines.append(
            Cell(
                f"{key}: {what} {drop:.2f} points {'≤' if ok else '>'} max {_points(max_drop)}",
                GOOD if ok else BAD,
            )
        )
    for failure in _seq(gate.get("failures")):
        text = str(failure)
        if not any(isinstance(x, Cell) and x.text.split(":")[0] == text.split(":")[0] for x in lines):
            lines.append(Cell(text, BAD))
    if not lines:
        int8 = [k for k in _map(report.get("artifacts")) if k != "fp32"]
        why = (
            "no INT8 artifact"
            if not int8
            else "no validation data"
            if "validation" not in report
            else "nothing to compare with FP32"
        )
        limit = f" (max drop {_points(max_drop)} points)" if max_drop is not None else ""
        lines.append(Cell(f"not applied: {why}{limit}", WARN))
    return lines


def _headline(report: Mapping[str, Any]) -> tuple[str, tuple[Text, ...]]:
    status = str(report.get("status", "unknown"))
    summary = STATUS_TEXT.get(status, (None, "status not recognised by this renderer"))[1]
    if status == "passed" and not _map(report.get("drop")):
        summary = "export finished; no INT8 artifact was gated"
    engine = _map(report.get("engine"))
    if status == "no-engine" and engine.get("reason"):
        summary += f": {engine['reason']}"
    model, pre = _map(report.get("model")), _map(report.get("preprocess"))
    size = "x".join(str(s) for s in _seq(pre.get("input_size"))[-2:])
    bits = [str(model.get("name") or "?")]
    if model.get("classes") is not None:
        bits.append(f"{model['classes']} classes")
    if size:
        bits.append(f"input {size}")
    facts: list[Text] = [f"Model: {' · '.join(bits)}"]
    facts += [
        Cell(f"Gate: {x.text}", x.tone) if isinstance(x, Cell) else f"Gate: {x}" for x in _gate_lines(report)
    ]
    acc, sizes, lat = _map(report.get("accuracy")), _map(report.get("sizes")), _map(report.get("latency"))
    ref_top1 = _num(_map(acc.get("fp32")).get("top1"))
    ref_size = _num(sizes.get("fp32"))
    for key in _artifacts(report, "artifacts", "sizes", "accuracy", "latency"):
        parts = []
        top1 = _num(_map(acc.get(key)).get("top1"))
        if top1 is not None:
            delta = f" ({top1 - ref_top1:+.2f})" if ref_top1 is not None and key != "fp32" else ""
            parts.append(f"top-1 {top1:.2f}%{delta}")
        agreement = _num(_map(report.get("agreement")).get(key))
        if top1 is None and agreement is not None:
            parts.append(f"agrees with FP32 on {agreement:.2f}%")
        sz = _num(sizes.get(key))
        if sz is not None:
            ratio = f" ({ref_size / sz:.1f}x smaller)" if ref_size and key != "fp32" and sz > 0 else ""
            parts.append(f"{sz / 1e6:.2f} MB{ratio}")
        p50 = _num(_map(lat.get(key)).get("p50_ms"))
        if p50 is not None:
            parts.append(f"p50 {p50:.2f} ms (batch {_fmt(_map(lat.get(key)).get('batch'))})")
        if parts:
            facts.append(f"{key}: {', '.join(parts)}")
    run = _map(report.get("run"))
    run_bits = [
        str(run.get("name", "?")),
        *([f"created {run['created']}"] if run.get("created") else []),
        *([f"levit-edge {report['levit_edge_version']}"] if report.get("levit_edge_version") else []),
        *([f"schema {report['schema_version']}"] if report.get("schema_version") is not None else []),
    ]
    facts.append(f"Run: {' · '.join(run_bits)}")
    return summary, tuple(facts)


def _accuracy(report: Mapping[str, Any]) -> Section:
    sec = Section("Artifacts and accuracy")
    files, sizes, acc = _map(report.get("artifacts")), _map(report.get("sizes")), _map(report.get("accuracy"))
    drops, agree = _map(report.get("drop")), _map(report.get("agreement"))
    kl, cos = _map(report.get("kl")), _map(report.get("cosine"))
    max_drop = _max_drop(report)
    rows = []
    for key in _artifacts(report, "artifacts", "sizes", "accuracy", "drop", "agreement"):
        a = _map(acc.get(key))
        drop = _num(drops.get(key))
        tone = None if drop is None or max_drop is None else GOOD if drop <= max_drop + 1e-9 else BAD
        rows.append(
            (
                key,
                _fmt(files.get(key)),
                _mb(sizes.get(key)),
                _fixed(a.get("top1")),
                _fixed(a.get("top5")),
                Cell(_fixed(drop), tone),
                _fixed(agree.get(key)),
                _kl(kl.get(key)),
                _fixed(cos.get(key), 5),
            )
        )
    headers = ("artifact", "file", "size MB", "top-1 %", "top-5 %", "drop pts", "agreement %", "KL", "cosine")
    # columns with nothing in them (no labels: no top-k; FP32 only: no comparisons) are left out
    keep = [i for i in range(len(headers)) if i < 3 or any(_text(r[i]) != DASH for r in rows)]
    sec.blocks.append(Table(tuple(headers[i] for i in keep), tuple(tuple(r[i] for i in keep) for r in rows)))
    val = _map(report.get("validation"))
    if val:
        n = val.get("n")
        if val.get("labelled"):
            sec.blocks.append(
                Para(f"{_fmt(n)} labelled images; drop = FP32 top-1 minus the artifact's top-1.")
            )
        else:
            sec.blocks.append(
                Para(
                    f"{_fmt(n)} unlabelled images (no top-1/top-5); drop = top-1 disagreement with FP32, pts."
                )
            )
    if drops:
        sec.blocks.append(
            Para(
                "Agreement: same top-1 class as FP32. KL: mean KL(FP32 ‖ artifact) of the softmax, nats. "
                "Cosine: mean cosine similarity of the logits."
            )
        )
    parity = _map(report.get("parity"))
    if parity:
        sec.blocks += [Sub("Export parity (max difference, fraction of the logit range)"), *_generic(parity)]
    return sec


def _latency(report: Mapping[str, Any]) -> Section | None:
    lat = _map(report.get("latency"))
    if not lat:
        return None
    rows = []
    for key in _artifacts(report, "latency"):
        x = _map(lat.get(key))
        batch, p50 = _num(x.get("batch")), _num(x.get("p50_ms"))
        per_image = _fixed(p50 / batch, 3) if p50 is not None and batch else DASH
        threads = "all cores" if x.get("threads") is None else _fmt(x.get("threads"))
        rows.append(
            (
                key,
                _fixed(x.get("p50_ms")),
                _fixed(x.get("p90_ms")),
                _fixed(x.get("p99_ms")),
                _fmt(x.get("batch")),
                per_image,
                threads,
                _fmt(x.get("calls")),
                _fmt(x.get("source")),
            )
        )
    headers = (
        "artifact",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "batch",
        "p50 ms/image",
        "threads",
        "calls",
        "source",
    )
    return Section(
        "Latency", [Table(headers, tuple(rows)), Para("Per batch; the first (warm-up) call is dropped.")]
    )


def _per_class(report: Mapping[str, Any], plots: bool) -> Section | None:
    per_class = _map(report.get("per_class"))
    if not any(_seq(v) for v in per_class.values()):
        return None
    sec = Section("Per-class accuracy change")
    for key in _artifacts(report, "per_class"):
        rows = [r for r in _seq(per_class.get(key)) if isinstance(r, Mapping)]
        if not rows:
            continue
        deltas = [_num(r.get("delta")) or 0.0 for r in rows]
        worse, better = sum(d < 0 for d in deltas), sum(d > 0 for d in deltas)
        changed = sorted(
            (r for r, d in zip(rows, deltas, strict=True) if d != 0),
            key=lambda r: (_num(r.get("delta")) or 0.0, str(r.get("class"))),
        )
        shown = changed[:TOP_CLASSES]
        summary = (
            f"{len(rows)} classes: {worse} worse, {better} better, {len(rows) - worse - better} unchanged."
        )
        if not changed:
            summary += " No class changed its top-1 accuracy."
        elif len(shown) < len(changed):
            summary += f" The {len(shown)} largest drops of the {len(changed)} changed classes:"
        else:
            summary += " The changed classes, worst first:"
        sec.blocks += [Sub(key), Para(summary)]
        if not shown:
            continue
        table_rows = []
        for r in shown:
            d = _num(r.get("delta"))
            tone = None if d is None or d == 0 else BAD if d < 0 else GOOD
            table_rows.append(
                (
                    _fmt(r.get("class")),
                    _fmt(r.get("n")),
                    _fixed(r.get("fp32")),
                    _fixed(r.get("int8")),
                    Cell(_fixed(d, sign=True), tone),
                )
            )
        sec.blocks.append(
            Table(("class", "images", "FP32 top-1 %", "INT8 top-1 %", "change pts"), tuple(table_rows))
        )
        if plots:
            from levit_edge.report import plots as p

            png = p.per_class_delta(rows, key)
            if png is not None:
                sec.blocks.append(Image(png, f"{key}: per-class top-1 change vs FP32"))
    return sec


def _confusions(report: Mapping[str, Any]) -> Section | None:
    changes = _map(report.get("confusion_changes"))
    if not changes:
        return None
    sec = Section("New errors (confusion changes)")
    sec.blocks.append(
        Para("Images FP32 classified correctly that the INT8 model gets wrong, by (true, predicted) pair.")
    )
    for key in _artifacts(report, "confusion_changes"):
        triples = [t for t in _seq(changes.get(key)) if isinstance(t, list | tuple) and len(t) == 3]
        total = sum(int(_num(t[2]) or 0) for t in triples)
        sec.blocks.append(Sub(key))
        if not triples:
            sec.blocks.append(Para(Cell("No new errors.", GOOD)))
            continue
        top = sorted(triples, key=lambda t: (-(_num(t[2]) or 0), str(t[0]), str(t[1])))[:TOP_CONFUSIONS]
        sec.blocks.append(Para(f"{total} new errors in {len(triples)} pairs; the top {len(top)}:"))
        sec.blocks.append(
            Table(
                ("true class", "predicted by INT8", "images"), tuple(tuple(_fmt(x) for x in t) for t in top)
            )
        )
    return sec


_RECIPE_KEYS = {"format", "activations", "weights", "ops", "float", "bias", "why"}
_RECIPE_KEYS |= {"quantized_nodes", "excluded_nodes", "qdq_pairs", "note"}


def _quantization(report: Mapping[str, Any]) -> Section | None:
    quant = _map(report.get("quantization"))
    if not quant:
        return None
    sec = Section("Quantization recipe")
    for key in _artifacts(report, "quantization"):
        q = _map(quant.get(key))
        excluded = _seq(q.get("excluded_nodes"))
        pairs: list[tuple[str, Any]] = [
            ("format", q.get("format")),
            ("activations", q.get("activations")),
            ("weights", q.get("weights")),
            ("quantized ops", ", ".join(str(o) for o in _seq(q.get("ops"))) or DASH),
            ("kept in float", ", ".join(str(o) for o in _seq(q.get("float"))) or DASH),
            ("bias", q.get("bias")),
            ("quantized nodes", q.get("quantized_nodes")),
            ("excluded nodes", f"{len(excluded)}: {_short_list(excluded)}" if excluded else "0"),
            ("Q/DQ pairs", q.get("qdq_pairs")),
        ]
        if q.get("note"):
            pairs.append(("note", q.get("note")))
        pairs += [(k, v) for k, v in q.items() if k not in _RECIPE_KEYS]
        sec.blocks += [Sub(key), _kv(pairs)]
        why = [str(w) for w in _seq(q.get("why"))]
        if why:
            sec.blocks += [Para("Why:"), Bullets(tuple(why))]
    return sec


def _data(report: Mapping[str, Any]) -> Section | None:
    cal, val = _map(report.get("calibration")), _map(report.get("validation"))
    if not cal and not val:
        return None
    sec = Section("Data")
    if cal:
        method = _fmt(cal.get("method"))
        if cal.get("method") == "percentile":
            method += f" ({_fmt(cal.get('percentile'))})"
        sec.blocks += [
            Sub("Calibration"),
            _kv(
                [
                    ("method", method),
                    ("images", cal.get("count")),
                    ("tensors calibrated", cal.get("tensors")),
                    ("skipped images", _count(cal.get("skipped"))),
                    ("data hash", cal.get("data_hash")),
                ]
            ),
        ]
    if val:
        order = _seq(val.get("class_order"))
        order_text = (
            f"{len(order)} classes, index order: {_short_list(order, 10)}"
            if order
            else "none given (class indices as the model outputs them)"
        )
        skipped = [s for s in _seq(val.get("skipped")) if isinstance(s, list | tuple)]
        sec.blocks += [
            Sub("Validation"),
            _kv(
                [
                    ("source", val.get("source")),
                    ("kind", val.get("kind")),
                    ("images", val.get("n")),
                    ("labelled", val.get("labelled")),
                    ("class order", order_text),
                    ("excluded (exclude list)", _count(val.get("excluded"))),
                    ("skipped (unreadable)", _count(val.get("skipped"))),
                    ("data hash", val.get("data_hash")),
                ]
            ),
        ]
        if skipped:
            rows = tuple((_fmt(s[0]), _fmt(s[1]) if len(s) > 1 else DASH) for s in skipped)
            sec.blocks += [Para("Skipped images:"), _limited(Table(("image", "reason"), rows), 10)]
    return sec


def _count(x: Any) -> Any:
    return len(x) if isinstance(x, list | tuple | Mapping) else x


ENGINE_LABELS = {
    "tensorrt_version": "TensorRT version",
    "gpu": "GPU",
    "batch_range": "batch range (min, opt, max)",
    "seconds": "build seconds",
    "runner": "engine validation",
}


def _engine(report: Mapping[str, Any]) -> Section | None:
    engine, trtexec = _map(report.get("engine")), report.get("trtexec")
    if not engine and not trtexec:
        return None
    sec = Section("TensorRT engine")
    if engine:
        built = engine.get("built")
        reason = engine.get("reason")
        state = Cell("built", GOOD) if built else Cell(f"not built: {reason or 'unknown reason'}", WARN)
        rest = [
            (ENGINE_LABELS.get(k, k), v) for k, v in engine.items() if k not in ("built", "reason", "status")
        ]
        sec.blocks.append(_kv([("status", state), *rest]))
    if trtexec:
        where = "on JetPack: /usr/src/tensorrt/bin/trtexec; on PATH in NVIDIA's TensorRT containers"
        sec.blocks += [
            Para(f"Equivalent trtexec command (run it on the target, inside the run folder; {where}):"),
            Code(str(trtexec)),
        ]
    return sec


def _types_text(types: Any) -> str:
    """Operator types from a reduced-build config entry as short text: ``in0: uint8_t; out0: float``."""
    parts = [
        f"{short}{index}: {', '.join(str(t) for t in _seq(names))}"
        for kind, short in (("inputs", "in"), ("outputs", "out"))
        for index, names in sorted(_map(_map(types).get(kind)).items(), key=lambda kv: str(kv[0]))
    ]
    if _map(types).get("custom"):
        parts.append(f"custom: {_fmt(_map(types)['custom'])}")
    return "; ".join(parts) or "all (no type reduction for this op)"


def _firmware(report: Mapping[str, Any]) -> Section | None:
    fw = _map(report.get("firmware"))
    if not fw:
        return None
    sec = Section("Firmware deliverables (ONNX Runtime format)")
    sec.blocks.append(
        _kv(
            [
                ("format", fw.get("format")),
                (
                    "converter",
                    f"{_fmt(fw.get('converter'))} (onnxruntime {_fmt(fw.get('onnxruntime_version'))})",
                ),
                (
                    "optimization",
                    f"{_fmt(fw.get('optimization_style'))}, level {_fmt(fw.get('optimization_level'))}",
                ),
                ("target platform", fw.get("target_platform")),
                ("type reduction", fw.get("type_reduction")),
                ("operators", fw.get("operator_count")),
                (
                    "domains and opsets",
                    "; ".join(f"{d}: {_fmt(v)}" for d, v in _map(fw.get("domains")).items()),
                ),
            ]
        )
    )
    models = _map(fw.get("models"))
    if models:
        rows = []
        for name, m in models.items():
            m, check = _map(m), _map(_map(m).get("check"))
            verdict = DASH
            if check:
                same = (
                    "identical"
                    if check.get("identical")
                    else f"max diff {_fixed(check.get('max_abs_diff'), 6)}"
                )
                verdict = f"{same} vs {_fmt(check.get('against'))}"
            rows.append(
                (str(name), _fmt(m.get("source")), _mb(m.get("size")), _mb(m.get("source_size")), verdict)
            )
        sec.blocks += [
            Sub("Model files"),
            Table(("file", "from", "size (MB)", "source size (MB)", "load-and-run check"), tuple(rows)),
        ]
    configs = _map(fw.get("configs"))
    if configs:
        sec.blocks += [Sub("Operator configs"), _kv(list(configs.items()), ("file", "bytes"))]
    ops = [_map(o) for o in _seq(fw.get("operators"))]
    if ops:
        op_rows = tuple(
            (
                _fmt(o.get("domain")),
                _fmt(o.get("opset")),
                _fmt(o.get("op")),
                _types_text(o.get("types")),
                ", ".join(str(m) for m in _seq(o.get("models"))) or DASH,
            )
            for o in ops
        )
        sec.blocks += [
            Sub("Operators a reduced build needs"),
            Table(("domain", "opset", "operator", "types", "models"), op_rows),
        ]
    parity = _map(fw.get("parity"))
    if parity:
        p_rows = tuple(
            (
                str(name),
                _fmt(_map(p).get("against")),
                _fmt(_map(p).get("n")),
                _fixed(_map(p).get("max_abs_diff"), 6),
                f"{_fixed(_map(p).get('argmax_agreement'))}%",
                _fixed(_map(p).get("p50_ms")),
            )
            for name, p in parity.items()
        )
        sec.blocks += [
            Sub("Outputs on the validation set"),
            Table(("file", "against", "images", "max abs diff", "same top-1", "p50 ms/batch"), p_rows),
        ]
    if fw.get("build"):
        sec.blocks += [
            Para(
                "Minimal ONNX Runtime build with only these operators and types (in an onnxruntime checkout):"
            ),
            Code(str(fw["build"])),
        ]
    notes = [str(fw[k]) for k in ("runtime_version_note", "parity_note") if fw.get(k)]
    if fw.get("deterministic_bytes") is False:
        notes.append("the .ort bytes can differ between conversions (same content); the configs are stable")
    if notes:
        sec.blocks.append(Bullets(tuple(notes)))
    return sec


# stages timed by a later command on the finished run: listed apart, never summed into the export's total
LATER_STAGES = {"revalidate": "validate (later, on the finished run)"}


def _stages(report: Mapping[str, Any]) -> Section | None:
    stages = _map(report.get("stages"))
    if not stages:
        return None
    export = {k: v for k, v in stages.items() if k not in LATER_STAGES}
    total = sum(_num(v) or 0.0 for v in export.values())
    rows = [
        (str(k), _fixed(v), f"{100 * (_num(v) or 0.0) / total:.0f}%" if total > 0 else DASH)
        for k, v in export.items()
    ]
    rows.append(("export total", _fixed(total), "100%" if total > 0 else DASH))
    rows += [(LATER_STAGES[k], _fixed(v), DASH) for k, v in stages.items() if k in LATER_STAGES]
    return Section("Stage timings", [Table(("stage", "seconds", "share of export"), tuple(rows))])


def _model(report: Mapping[str, Any]) -> Section:
    model, pre = _map(report.get("model")), _map(report.get("preprocess"))
    names = _seq(model.get("class_names"))
    pairs: list[tuple[str, Any]] = [
        ("name", model.get("name")),
        ("classes", model.get("classes")),
        ("class names", f"{len(names)}: {_short_list(names, 10)}" if names else None),
        ("checkpoint", model.get("checkpoint") or "timm pretrained weights"),
        ("checkpoint format", model.get("checkpoint_format")),
        ("checkpoint sha256", model.get("checkpoint_sha256")),
    ]
    return Section("Model and preprocessing", [_kv(pairs), Sub("Preprocessing"), *_generic(dict(pre))])


def _environment(report: Mapping[str, Any]) -> Section | None:
    env = _map(report.get("environment"))
    if not env:
        return None
    pairs = [(k, env.get(k)) for k in ("python", "platform", "machine", "cpu", "cpu_count") if k in env]
    flags = _seq(env.get("cpu_flags"))
    pairs.append(
        ("INT8 CPU features", ", ".join(str(f) for f in flags) if flags else "none of AVX2/VNNI/AMX/NEON-dot")
    )
    pairs += [
        (k, v)
        for k, v in env.items()
        if k not in {"python", "platform", "machine", "cpu", "cpu_count", "cpu_flags", "versions"}
    ]
    blocks: list[Block] = [_kv(pairs)]
    versions = _map(env.get("versions"))
    if versions:
        blocks += [Sub("Package versions"), _kv(sorted(versions.items()), ("package", "version"))]
    return Section("Environment", blocks)


def _db(x: Any) -> str:
    return _fixed(x, 1)


def _yes(x: Any) -> Text:
    return Cell("yes", GOOD) if x is True else "no" if x is False else DASH


# report.json key -> (column heading with its unit, formatter) for the tables people read
_SENSITIVITY_COLUMNS: dict[str, tuple[str, Callable[[Any], Text]]] = {
    "rank": ("#", _fmt),
    "node": ("layer", _fmt),
    "op_type": ("op", _fmt),
    "sqnr_db": ("output SQNR (dB)", _db),
    "input_sqnr_db": ("input SQNR (dB)", _db),
    "weight_sqnr_db": ("weight SQNR (dB)", _db),
    "agreement_delta": ("agreement gained in float (pts)", lambda x: _fixed(x, 2, sign=True)),
    "kl": ("KL with the layer in float", _kl),
    "kl_gain": ("KL removed", _kl),
}
_FALLBACK_COLUMNS: dict[str, tuple[str, Callable[[Any], Text]]] = {
    "step": ("step", _fmt),
    "action": ("action", _fmt),
    "float_layers": ("layers in float", lambda x: str(len(_seq(x)))),
    "top1": ("top-1 (%)", _fixed),
    "drop": ("drop (pts)", lambda x: _fixed(x, 2, sign=True)),
    "agreement": ("agreement (%)", _fixed),
    "kl": ("KL", _kl),
    "size": ("size (MB)", _mb),
    "latency_ms": ("batch-1 latency (ms)", _fixed),
    "range_overrides": ("tuned ranges", _fmt),
    "meets_budget": ("within budget", _yes),
    "chosen": ("kept", _yes),
}
_SENSITIVITY_INFO: dict[str, tuple[str, Callable[[Any], Text]]] = {
    "artifact": ("model", _fmt),
    "profile": ("profile", _fmt),
    "layers": ("quantized layers", _fmt),
    "calib_samples": ("calibration images", _fmt),
    "rank_images": ("validation images", _fmt),
    "base_agreement": ("all-INT8 agreement (%)", _fixed),
    "base_kl": ("all-INT8 KL", _kl),
    "seconds": ("time (s)", lambda x: _fixed(x, 1)),
}
ARTIFACT_NAMES = {
    "fp32": "ONNX Runtime FP32",
    "int8.ort": "ONNX Runtime INT8",
    "int8.trt": "TensorRT Q/DQ model (on ONNX Runtime CPU)",
    "int8.plan": "TensorRT engine",
    "torch": "PyTorch eager (timm)",
    "torch.fused": "PyTorch eager (fused)",
}


def _columns(
    rows: Sequence[Mapping[str, Any]], columns: Mapping[str, tuple[str, Callable[[Any], Text]]]
) -> Table:
    """A table of the ``columns`` the rows have, with human headings and formatted cells."""
    keys = [k for k in columns if any(k in r for r in rows)]
    return Table(
        tuple(columns[k][0] for k in keys), tuple(tuple(columns[k][1](r.get(k)) for k in keys) for r in rows)
    )


def _by_artifact(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("artifact") or ""), []).append(r)
    return groups


def _sensitivity(report: Mapping[str, Any], plots: bool) -> Section | None:
    rows = report.get("sensitivity")
    if not rows:
        return None
    if not (isinstance(rows, list | tuple) and all(isinstance(r, Mapping) for r in rows)):
        return Section("Layer sensitivity", _generic(rows, TOP_SENSITIVE))
    blocks: list[Block] = []
    ranked = any("rank" in r for r in rows)
    blocks.append(
        Para(
            "Per-layer quantization sensitivity: SQNR (dB) of each quantized node's output vs FP32 on "
            "calibration images, and the top-1 agreement gained and KL left when that node alone stays in "
            "float; ranked by the KL it removes (most harmful first)."
            if ranked
            else "Per-layer quantization sensitivity, lowest SQNR (most damaged) first."
        )
    )
    info = [i for i in _seq(report.get("sensitivity_info")) if isinstance(i, Mapping)]
    if info:
        blocks.append(_columns(info, _SENSITIVITY_INFO))
    for artifact, group in _by_artifact(rows).items():
        group = sorted(
            group,
            key=lambda r: (
                (_num(r.get("rank")) or 0.0, str(r.get("node")))
                if ranked
                else (_num(r.get("sqnr_db")) or 0.0, str(r.get("node")))
            ),
        )
        if artifact:
            blocks.append(Sub(artifact))
        if plots:
            from levit_edge.report import plots as p

            png = p.sensitivity(group, TOP_SENSITIVE, artifact or None)
            if png is not None:
                blocks.append(Image(png, f"per-layer SQNR {artifact}".strip()))
        blocks.append(_limited(_columns(group, _SENSITIVITY_COLUMNS), TOP_SENSITIVE))
    return Section("Layer sensitivity", blocks)


def _fallback(report: Mapping[str, Any], plots: bool) -> Section | None:
    steps = report.get("fallback")
    if not steps:
        return None
    blocks: list[Block] = [
        Para(
            "Accuracy-aware fallback: the most harmful layers return to float step by step until the top-1 "
            "drop fits the budget; only a step that fits replaces the INT8 model (chosen)."
        )
    ]
    budget = _map(report.get("accuracy_budget"))
    for info in _map(budget.get("artifacts")).values():
        if isinstance(info, Mapping):
            blocks.append(Para(f"{_fmt(info.get('message'))}."))
    if not (isinstance(steps, list | tuple) and all(isinstance(s, Mapping) for s in steps)):
        return Section("Fallback", [*blocks, *_generic(steps)])
    for artifact, group in _by_artifact(steps).items():
        if artifact:
            blocks.append(Sub(artifact))
        if plots:
            from levit_edge.report import plots as p

            png = p.fallback_curve(group, _max_drop(report), artifact or None)
            if png is not None:
                blocks.append(Image(png, f"fallback {artifact}: drop vs layers kept in float".strip()))
        blocks.append(_columns(group, _FALLBACK_COLUMNS))
        chosen = [s for s in group if s.get("chosen") and _seq(s.get("float_layers"))]
        if chosen:
            blocks.append(
                Para("Layers kept in float: " + ", ".join(map(str, _seq(chosen[0]["float_layers"]))))
            )
    return Section("Fallback", blocks)


# a machine busier than this (1-minute load average per core, just before timing) is called loaded
LOADED_PER_CORE = 0.5


def _load_note(settings: Mapping[str, Any], env: Mapping[str, Any]) -> Para | None:
    load, cores = _seq(settings.get("load_average")), _num(env.get("cpu_count"))
    first = _num(load[0]) if load else None
    if first is None or not cores:
        return None
    text = f"load average {first:.2f} over {cores:.0f} cores just before timing"
    if first > LOADED_PER_CORE * cores:
        return Para(
            Cell(
                f"Timed on a loaded machine ({text}): other work shared the cores, so these latencies are "
                "higher and noisier than on an idle machine; compare variants with each other, not with "
                "other runs.",
                WARN,
            )
        )
    return Para(f"Timed on an idle machine ({text}).")


_BENCH_COLUMNS: dict[str, tuple[str, Callable[[Any], Text]]] = {
    "variant": ("variant", lambda x: ARTIFACT_NAMES.get(str(x), _fmt(x))),
    "batch": ("batch", _fmt),
    "threads": ("threads", lambda x: _fmt(x) if x else "all cores"),
    "p50_ms": ("median (ms)", _fixed),
    "p90_ms": ("p90 (ms)", _fixed),
    "p99_ms": ("p99 (ms)", _fixed),
    "throughput": ("images/s", lambda x: _fixed(x, 1)),
    "calls": ("timed calls", _fmt),
}


def _bench(report: Mapping[str, Any], plots: bool = True) -> Section | None:
    bench = report.get("bench")
    if not bench:
        return None
    rows = [r for r in _seq(_map(bench).get("results")) if isinstance(r, Mapping)]
    if not rows:
        return Section("Benchmark", _generic(bench))
    settings, env = _map(bench.get("settings")), _map(bench.get("environment"))
    size = _seq(settings.get("input_size"))
    blocks: list[Block] = [
        Para(
            f"Every variant timed in one process, interleaved over {_fmt(settings.get('rounds'))} rounds of "
            f"{_fmt(settings.get('per_round'))} calls after {_fmt(settings.get('warmup'))} warm-up calls, "
            f"on random {'x'.join(map(str, size[1:])) or '?'} inputs; latency per call (the whole batch)."
        )
    ]
    note = _load_note(settings, env)
    if note is not None:
        blocks.append(note)
    if plots:
        from levit_edge.report import plots as p

        png = p.latency_chart(rows, ARTIFACT_NAMES)
        if png is not None:
            blocks.append(Image(png, "median latency per image by variant, batch and threads"))
    baselines = sorted({k for r in rows for k in _map(r.get("ratios"))})
    table = _columns(rows, _BENCH_COLUMNS)
    ratios = [f"speed-up vs {ARTIFACT_NAMES.get(b, b)} (times)" for b in baselines]
    cells = [
        (*row, *(_fixed(_map(r.get("ratios")).get(b)) for b in baselines))
        for row, r in zip(table.rows, rows, strict=True)
    ]
    blocks.append(Table((*table.headers, *ratios), tuple(cells)))
    # the run's environment is its own section: only what differs at benchmark time is listed here
    run_env = _map(report.get("environment"))
    names = {"cpu": "CPU", "cpu_count": "cores", "cpu_flags": "INT8 CPU features"}
    differs = [(names.get(k, k), v) for k, v in env.items() if k != "versions" and run_env.get(k) != v]
    if differs:
        blocks += [Sub("Benchmark machine (where it differs from the run's)"), _kv(differs)]
    return Section("Benchmark", blocks)


def _options(report: Mapping[str, Any]) -> Section | None:
    options = _map(report.get("options"))
    return Section("Options", [_kv(list(_flatten(options).items()))]) if options else None


KNOWN = {
    "schema_version", "levit_edge_version", "status", "run", "model", "preprocess", "parity", "artifacts",
    "sizes", "thresholds", "stages", "environment", "trtexec", "options", "calibration", "quantization",
    "engine", "validation", "accuracy", "drop", "agreement", "kl", "cosine", "per_class",
    "confusion_changes", "latency", "gate", "bench", "sensitivity", "fallback", "sensitivity_info",
    "accuracy_budget", "firmware", "platforms",
}  # fmt: skip


def build_document(report: Mapping[str, Any], plots: bool = True) -> Document:
    """The report as sections, most important first; ``plots=False`` skips the PNGs (for Markdown)."""
    from levit_edge.report.platforms import platforms_section  # it builds on this module's blocks

    summary, facts = _headline(report)
    makers: list[Callable[[], Section | None]] = [
        lambda: _accuracy(report),
        lambda: _latency(report),
        lambda: _bench(report, plots),
        lambda: _quantization(report),
        lambda: _data(report),
        lambda: _per_class(report, plots),
        lambda: _confusions(report),
        lambda: _sensitivity(report, plots),
        lambda: _fallback(report, plots),
        lambda: _engine(report),
        lambda: _firmware(report),
        lambda: platforms_section(report),
        lambda: _stages(report),
        lambda: _model(report),
        lambda: _environment(report),
        lambda: _options(report),
    ]
    sections = [s for s in (make() for make in makers) if s is not None]
    other = {k: v for k, v in report.items() if k not in KNOWN}
    if other:
        sections.append(Section("Other", [b for k, v in other.items() for b in (Sub(str(k)), *_generic(v))]))
    name = _map(report.get("run")).get("name", "?")
    return Document(
        f"levit-edge report: {name}", str(report.get("status", "unknown")), summary, facts, tuple(sections)
    )


# ---- Markdown --------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\|`*<\[\]])")
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")
_NUMERIC = re.compile(r"^[+-]?\d[\d,]*(\.\d+)?(e[+-]?\d+)?%?$")


def md_escape(text: Any) -> str:
    """Text safe inside Markdown (tables included): one line, ``|`` and other syntax backslash-escaped."""
    s = " ".join(str(text).splitlines())
    return _MD_ENTITY.sub(r"\\&", _MD_SPECIAL.sub(r"\\\1", s))


def _text(t: Text) -> str:
    return t.text if isinstance(t, Cell) else t


def _numeric_columns(table: Table) -> list[bool]:
    out = []
    for i in range(len(table.headers)):
        cells = [_text(r[i]) for r in table.rows if i < len(r) and _text(r[i]) not in ("", DASH)]
        out.append(bool(cells) and all(_NUMERIC.match(c) for c in cells))
    return out


def _md_table(table: Table) -> list[str]:
    numeric = _numeric_columns(table)
    head = "| " + " | ".join(md_escape(h) or " " for h in table.headers) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    rows = ["| " + " | ".join(md_escape(_text(c)) for c in row) + " |" for row in table.rows]
    return [head, rule, *rows]


def to_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured Markdown."""
    out = [
        f"# {md_escape(doc.title)}",
        "",
        f"**Status: {md_escape(doc.status.upper())}** — {md_escape(doc.summary)}",
        "",
    ]
    out += [f"- {md_escape(_text(f))}" for f in doc.facts]
    for sec in doc.sections:
        out += ["", f"## {md_escape(sec.title)}"]
        for block in sec.blocks:
            out.append("")
            if isinstance(block, Sub):
                out.append(f"### {md_escape(block.text)}")
            elif isinstance(block, Para):
                out.append(md_escape(_text(block.text)))
            elif isinstance(block, Bullets):
                out += [f"- {md_escape(_text(i))}" for i in block.items]
            elif isinstance(block, Table):
                out += _md_table(block)
            elif isinstance(block, Code):
                fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", block.text)), default=0))
                out += [fence, block.text, fence]
    return "\n".join(out) + "\n"


# ---- HTML ------------------------------------------------------------------------------------------------

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
    body = _h(_text(t))
    raw = _text(t)
    if paths and raw.count("/") >= 2 and not any(c.isspace() for c in raw):
        # node names and file paths wrap after a slash, not inside a word (<wbr> copies as nothing)
        body = body.replace("/", "/<wbr>")
    return f"<{tag}{_cls(extra, tone)}>{body}</{tag}>"


def _word(text: str) -> bool:
    """A short single token (an op type, a variant, yes/no): kept on one line, never broken mid-word."""
    return 0 < len(text) <= 16 and not any(c.isspace() for c in text)


def _html_table(table: Table) -> list[str]:
    numeric = _numeric_columns(table)
    out = [f"<table{_cls('kv' if table.kv else None)}>"]
    if any(table.headers):  # key/value tables have no header row
        heads = zip(table.headers, numeric, strict=False)
        out.append("<thead><tr>" + "".join(f"<th{_cls('num' if n else None)}>{_h(h)}</th>" for h, n in heads))
        out.append("</tr></thead>")
    out.append("<tbody>")
    for row in table.rows:
        cells = "".join(
            _html_text("td", c, "num" if n else "word" if _word(_text(c)) else None, paths=True)
            for c, n in zip(row, numeric, strict=False)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return out


def to_html(doc: Document) -> str:
    """The document as one self-contained HTML page (inline CSS, plots as base64 PNG)."""
    tone = STATUS_TEXT.get(doc.status, ("none", ""))[0] or "none"
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
        f'<div class="headline t-{tone}">',
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


# ---- entry point -----------------------------------------------------------------------------------------


def write_reports(run_dir: Path, report: dict[str, Any]) -> None:
    """Write report.json, report.md and report.html into ``run_dir`` atomically."""
    write_json(run_dir / "report.json", report)
    write_atomic(run_dir / "report.md", to_markdown(build_document(report, plots=False)))
    write_atomic(run_dir / "report.html", to_html(build_document(report, plots=True)))


__all__ = ["build_document", "md_escape", "to_html", "to_markdown", "write_reports"]
