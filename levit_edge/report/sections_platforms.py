"""The report section of ``platforms.<name>`` (report.json): CPU deliverables checked on another CPU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from levit_edge.artifacts import Status
from levit_edge.report.document import BAD, DASH, GOOD, Bullets, Cell, Para, Section, Table
from levit_edge.report.formatting import fixed, fmt
from levit_edge.report.views import as_map


def platforms_section(report: Mapping[str, Any]) -> Section | None:
    """One table per checked platform: top-1 on both CPUs, agreement, max |logit difference|, drop."""
    checked = as_map(report.get("platforms"))
    if not checked:
        return None
    sec = Section("Other CPU platforms (emulated)")
    for name, raw in sorted(checked.items()):
        check = as_map(raw)
        gate = as_map(check.get("gate"))
        passed = gate.get("status") == Status.PASSED
        sec.blocks.append(
            Para(
                f"{name}: ONNX Runtime {fmt(check.get('onnxruntime'))} (aarch64 build) under "
                f"{fmt(check.get('qemu'))}, CPU model '{fmt(check.get('qemu_cpu'))}', against "
                f"ONNX Runtime {fmt(check.get('onnxruntime_x86'))} on this host; "
                f"{fmt(check.get('images'))} images of the validation set (seed {fmt(check.get('seed'))}), "
                "preprocessed once: the same tensors on both."
            )
        )
        rows = []
        for file, m in as_map(check.get("models")).items():
            mm = as_map(m)
            drop = mm.get("drop")
            ok = not any(str(f).startswith(f"{name}:{file}:") for f in gate.get("failures") or ())
            rows.append(
                (
                    str(file),
                    fixed(mm.get("top1_x86")),
                    fixed(mm.get("top1_aarch64")),
                    fixed(mm.get("agreement")),
                    f"{mm['max_abs_diff']:.3g}" if isinstance(mm.get("max_abs_diff"), float) else DASH,
                    Cell(fixed(drop), GOOD if ok else BAD),
                )
            )
        drop_header = (
            "drop vs x86 FP32 (points)" if check.get("labelled") else "disagreement with x86 FP32 (points)"
        )
        sec.blocks.append(
            Table(
                (
                    "model",
                    "top-1 x86 (%)",
                    f"top-1 {name} (%)",
                    "same top-1 (%)",
                    "max |logit diff|",
                    drop_header,
                ),
                tuple(rows),
            )
        )
        state = Cell(f"{name} gate passed", GOOD) if passed else Cell(f"{name} gate failed", BAD)
        sec.blocks.append(Bullets((state, *(Cell(str(f), BAD) for f in gate.get("failures") or ()))))
        sec.blocks.append(
            Para("No timings: emulated speed says nothing about a board's speed, so none are reported.")
        )
    return sec
