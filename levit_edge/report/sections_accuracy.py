"""Section builders for the headline, the gate and accuracy: what people read first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from levit_edge.artifacts import Status
from levit_edge.report.document import (
    BAD,
    DASH,
    GOOD,
    WARN,
    Cell,
    Image,
    Para,
    Section,
    Sub,
    Table,
    Text,
    plain,
)
from levit_edge.report.formatting import fixed, fmt, generic, kl_text, mb, points
from levit_edge.report.views import artifact_figures, artifact_keys, as_map, as_num, as_seq, gate_max_drop

# keyed by the status strings of report.json (a Status compares and hashes as its string)
STATUS_TEXT: dict[str, tuple[str, str]] = {
    Status.PASSED: (GOOD, "every INT8 artifact is within the accuracy gate"),
    Status.FAILED: (BAD, "an INT8 artifact lost more accuracy than the gate allows"),
    Status.NO_ENGINE: (WARN, "everything was built except the TensorRT engine"),
    Status.UNVALIDATED: (WARN, "INT8 artifacts were built but not validated (no validation data)"),
}
TOP_CLASSES = 15
TOP_CONFUSIONS = 10


def _gate_lines(report: Mapping[str, Any]) -> list[Text]:
    """One line per gated artifact: 'int8.ort: drop 0.40 points ≤ max 1' (coloured), then failures."""
    max_drop = gate_max_drop(report)
    gate = as_map(report.get("gate"))
    lines: list[Text] = []
    for key in artifact_keys(report, "drop"):
        figures = artifact_figures(report, key)
        drop = figures.drop
        if drop is None or max_drop is None:
            continue
        ok = drop <= max_drop + 1e-9
        what = "drop" if figures.labelled else "disagreement with FP32"
        lines.append(
            Cell(
                f"{key}: {what} {drop:.2f} points {'≤' if ok else '>'} max {points(max_drop)}",
                GOOD if ok else BAD,
            )
        )
    for failure in as_seq(gate.get("failures")):
        text = str(failure)
        if not any(isinstance(x, Cell) and x.text.split(":")[0] == text.split(":")[0] for x in lines):
            lines.append(Cell(text, BAD))
    if not lines:
        int8 = [k for k in as_map(report.get("artifacts")) if k != "fp32"]
        why = (
            "no INT8 artifact"
            if not int8
            else "no validation data"
            if "validation" not in report
            else "nothing to compare with FP32"
        )
        limit = f" (max drop {points(max_drop)} points)" if max_drop is not None else ""
        lines.append(Cell(f"not applied: {why}{limit}", WARN))
    return lines


def headline(report: Mapping[str, Any]) -> tuple[str, tuple[Text, ...]]:
    status = str(report.get("status", "unknown"))
    summary = STATUS_TEXT.get(status, (None, "status not recognised by this renderer"))[1]
    if status == Status.PASSED and not as_map(report.get("drop")):
        summary = "export finished; no INT8 artifact was gated"
    engine = as_map(report.get("engine"))
    if status == Status.NO_ENGINE and engine.get("reason"):
        summary += f": {engine['reason']}"
    model, pre = as_map(report.get("model")), as_map(report.get("preprocess"))
    size = "x".join(str(s) for s in as_seq(pre.get("input_size"))[-2:])
    bits = [str(model.get("name") or "?")]
    if model.get("classes") is not None:
        bits.append(f"{model['classes']} classes")
    if size:
        bits.append(f"input {size}")
    facts: list[Text] = [f"Model: {' · '.join(bits)}"]
    facts += [
        Cell(f"Gate: {x.text}", x.tone) if isinstance(x, Cell) else f"Gate: {x}" for x in _gate_lines(report)
    ]
    ref = artifact_figures(report, "fp32")
    for key in artifact_keys(report, "artifacts", "sizes", "accuracy", "latency"):
        parts = []
        f = artifact_figures(report, key)
        if f.top1 is not None:
            delta = f" ({f.top1 - ref.top1:+.2f})" if ref.top1 is not None and key != "fp32" else ""
            parts.append(f"top-1 {f.top1:.2f}%{delta}")
        if f.top1 is None and f.agreement is not None:
            parts.append(f"agrees with FP32 on {f.agreement:.2f}%")
        if f.size is not None:
            ratio = (
                f" ({ref.size / f.size:.1f}x smaller)" if ref.size and key != "fp32" and f.size > 0 else ""
            )
            parts.append(f"{f.size / 1e6:.2f} MB{ratio}")
        if f.p50_ms is not None:
            parts.append(f"p50 {f.p50_ms:.2f} ms (batch {fmt(f.batch)})")
        if parts:
            facts.append(f"{key}: {', '.join(parts)}")
    run = as_map(report.get("run"))
    run_bits = [
        str(run.get("name", "?")),
        *([f"created {run['created']}"] if run.get("created") else []),
        *([f"levit-edge {report['levit_edge_version']}"] if report.get("levit_edge_version") else []),
        *([f"schema {report['schema_version']}"] if report.get("schema_version") is not None else []),
    ]
    facts.append(f"Run: {' · '.join(run_bits)}")
    return summary, tuple(facts)


def accuracy_section(report: Mapping[str, Any]) -> Section:
    sec = Section("Artifacts and accuracy")
    max_drop = gate_max_drop(report)
    rows = []
    for key in artifact_keys(report, "artifacts", "sizes", "accuracy", "drop", "agreement"):
        f = artifact_figures(report, key)
        tone = None if f.drop is None or max_drop is None else GOOD if f.drop <= max_drop + 1e-9 else BAD
        rows.append(
            (
                key,
                fmt(f.file),
                mb(f.size),
                fixed(f.top1),
                fixed(f.top5),
                Cell(fixed(f.drop), tone),
                fixed(f.agreement),
                kl_text(f.kl),
                fixed(f.cosine, 5),
            )
        )
    headers = ("artifact", "file", "size MB", "top-1 %", "top-5 %", "drop pts", "agreement %", "KL", "cosine")
    # columns with nothing in them (no labels: no top-k; FP32 only: no comparisons) are left out
    keep = [i for i in range(len(headers)) if i < 3 or any(plain(r[i]) != DASH for r in rows)]
    sec.blocks.append(Table(tuple(headers[i] for i in keep), tuple(tuple(r[i] for i in keep) for r in rows)))
    val = as_map(report.get("validation"))
    if val:
        n = val.get("n")
        if val.get("labelled"):
            sec.blocks.append(
                Para(f"{fmt(n)} labelled images; drop = FP32 top-1 minus the artifact's top-1.")
            )
        else:
            sec.blocks.append(
                Para(
                    f"{fmt(n)} unlabelled images (no top-1/top-5); drop = top-1 disagreement with FP32, pts."
                )
            )
    if as_map(report.get("drop")):
        sec.blocks.append(
            Para(
                "Agreement: same top-1 class as FP32. KL: mean KL(FP32 ‖ artifact) of the softmax, nats. "
                "Cosine: mean cosine similarity of the logits."
            )
        )
    parity = as_map(report.get("parity"))
    if parity:
        sec.blocks += [Sub("Export parity (max difference, fraction of the logit range)"), *generic(parity)]
    return sec


def per_class_section(report: Mapping[str, Any], plots: bool) -> Section | None:
    per_class = as_map(report.get("per_class"))
    if not any(as_seq(v) for v in per_class.values()):
        return None
    sec = Section("Per-class accuracy change")
    for key in artifact_keys(report, "per_class"):
        rows = [r for r in as_seq(per_class.get(key)) if isinstance(r, Mapping)]
        if not rows:
            continue
        deltas = [as_num(r.get("delta")) or 0.0 for r in rows]
        worse, better = sum(d < 0 for d in deltas), sum(d > 0 for d in deltas)
        changed = sorted(
            (r for r, d in zip(rows, deltas, strict=True) if d != 0),
            key=lambda r: (as_num(r.get("delta")) or 0.0, str(r.get("class"))),
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
            d = as_num(r.get("delta"))
            tone = None if d is None or d == 0 else BAD if d < 0 else GOOD
            table_rows.append(
                (
                    fmt(r.get("class")),
                    fmt(r.get("n")),
                    fixed(r.get("fp32")),
                    fixed(r.get("int8")),
                    Cell(fixed(d, sign=True), tone),
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


def confusions_section(report: Mapping[str, Any]) -> Section | None:
    changes = as_map(report.get("confusion_changes"))
    if not changes:
        return None
    sec = Section("New errors (confusion changes)")
    sec.blocks.append(
        Para("Images FP32 classified correctly that the INT8 model gets wrong, by (true, predicted) pair.")
    )
    for key in artifact_keys(report, "confusion_changes"):
        triples = [t for t in as_seq(changes.get(key)) if isinstance(t, list | tuple) and len(t) == 3]
        total = sum(int(as_num(t[2]) or 0) for t in triples)
        sec.blocks.append(Sub(key))
        if not triples:
            sec.blocks.append(Para(Cell("No new errors.", GOOD)))
            continue
        top = sorted(triples, key=lambda t: (-(as_num(t[2]) or 0), str(t[0]), str(t[1])))[:TOP_CONFUSIONS]
        sec.blocks.append(Para(f"{total} new errors in {len(triples)} pairs; the top {len(top)}:"))
        sec.blocks.append(
            Table(("true class", "predicted by INT8", "images"), tuple(tuple(fmt(x) for x in t) for t in top))
        )
    return sec
