"""The report section of ``platforms.<name>`` (report.json): CPU deliverables checked on another CPU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from levit_edge.report.render import BAD, GOOD, Bullets, Cell, Para, Section, Table, _fixed, _fmt, _map


def platforms_section(report: Mapping[str, Any]) -> Section | None:
    """One table per checked platform: top-1 on both CPUs, agreement, max |logit difference|, drop."""
    checked = _map(report.get("platforms"))
    if not checked:
        return None
    sec = Section("Other CPU platforms (emulated)")
    for name, raw in sorted(checked.items()):
        check = _map(raw)
        gate = _map(check.get("gate"))
        passed = gate.get("status") == "passed"
        sec.blocks.append(
            Para(
                f"{name}: ONNX Runtime {_fmt(check.get('onnxruntime'))} (aarch64 build) under "
                f"{_fmt(check.get('qemu'))}, CPU model '{_fmt(check.get('qemu_cpu'))}', against "
                f"ONNX Runtime {_fmt(check.get('onnxruntime_x86'))} on this host; "
                f"{_fmt(check.get('images'))} images of the validation set (seed {_fmt(check.get('seed'))}), "
                "preprocessed once: the same tensors on both."
            )
        )
        rows = []
        for file, m in _map(check.get("models")).items():
            mm = _map(m)
            drop = mm.get("drop")
            ok = not any(str(f).startswith(f"{name}:{file}:") for f in gate.get("failures") or ())
            rows.append(
                (
                    str(file),
                    _fixed(mm.get("top1_x86")),
                    _fixed(mm.get("top1_aarch64")),
                    _fixed(mm.get("agreement")),
                    f"{mm['max_abs_diff']:.3g}" if isinstance(mm.get("max_abs_diff"), float) else "—",
                    Cell(_fixed(drop), GOOD if ok else BAD),
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
