"""Section builders for what ships: the TensorRT engine and the ONNX Runtime firmware files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from levit_edge.report.document import DASH, GOOD, WARN, Bullets, Cell, Code, Para, Section, Sub, Table
from levit_edge.report.formatting import fixed, fmt, kv_table, mb
from levit_edge.report.views import as_map, as_seq

ENGINE_LABELS = {
    "tensorrt_version": "TensorRT version",
    "gpu": "GPU",
    "batch_range": "batch range (min, opt, max)",
    "seconds": "build seconds",
    "runner": "engine validation",
}


def engine_section(report: Mapping[str, Any]) -> Section | None:
    engine, trtexec = as_map(report.get("engine")), report.get("trtexec")
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
        sec.blocks.append(kv_table([("status", state), *rest]))
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
        f"{short}{index}: {', '.join(str(t) for t in as_seq(names))}"
        for kind, short in (("inputs", "in"), ("outputs", "out"))
        for index, names in sorted(as_map(as_map(types).get(kind)).items(), key=lambda kv: str(kv[0]))
    ]
    if as_map(types).get("custom"):
        parts.append(f"custom: {fmt(as_map(types)['custom'])}")
    return "; ".join(parts) or "all (no type reduction for this op)"


def firmware_section(report: Mapping[str, Any]) -> Section | None:
    fw = as_map(report.get("firmware"))
    if not fw:
        return None
    sec = Section("Firmware deliverables (ONNX Runtime format)")
    sec.blocks.append(
        kv_table(
            [
                ("format", fw.get("format")),
                (
                    "converter",
                    f"{fmt(fw.get('converter'))} (onnxruntime {fmt(fw.get('onnxruntime_version'))})",
                ),
                (
                    "optimization",
                    f"{fmt(fw.get('optimization_style'))}, level {fmt(fw.get('optimization_level'))}",
                ),
                ("target platform", fw.get("target_platform")),
                ("type reduction", fw.get("type_reduction")),
                ("operators", fw.get("operator_count")),
                (
                    "domains and opsets",
                    "; ".join(f"{d}: {fmt(v)}" for d, v in as_map(fw.get("domains")).items()),
                ),
            ]
        )
    )
    models = as_map(fw.get("models"))
    if models:
        rows = []
        for name, m in models.items():
            m, check = as_map(m), as_map(as_map(m).get("check"))
            verdict = DASH
            if check:
                same = (
                    "identical"
                    if check.get("identical")
                    else f"max diff {fixed(check.get('max_abs_diff'), 6)}"
                )
                verdict = f"{same} vs {fmt(check.get('against'))}"
            rows.append(
                (str(name), fmt(m.get("source")), mb(m.get("size")), mb(m.get("source_size")), verdict)
            )
        sec.blocks += [
            Sub("Model files"),
            Table(("file", "from", "size (MB)", "source size (MB)", "load-and-run check"), tuple(rows)),
        ]
    configs = as_map(fw.get("configs"))
    if configs:
        sec.blocks += [Sub("Operator configs"), kv_table(list(configs.items()), ("file", "bytes"))]
    ops = [as_map(o) for o in as_seq(fw.get("operators"))]
    if ops:
        op_rows = tuple(
            (
                fmt(o.get("domain")),
                fmt(o.get("opset")),
                fmt(o.get("op")),
                _types_text(o.get("types")),
                ", ".join(str(m) for m in as_seq(o.get("models"))) or DASH,
            )
            for o in ops
        )
        sec.blocks += [
            Sub("Operators a reduced build needs"),
            Table(("domain", "opset", "operator", "types", "models"), op_rows),
        ]
    parity = as_map(fw.get("parity"))
    if parity:
        p_rows = tuple(
            (
                str(name),
                fmt(as_map(p).get("against")),
                fmt(as_map(p).get("n")),
                fixed(as_map(p).get("max_abs_diff"), 6),
                f"{fixed(as_map(p).get('argmax_agreement'))}%",
                fixed(as_map(p).get("p50_ms")),
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
