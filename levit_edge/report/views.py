"""Reading report.json for the section builders: tolerant accessors and small typed views.

report.json may come from an older or newer levit-edge, or be edited by hand, so every read is
tolerant: a missing or mistyped value reads as empty / None and is shown as a dash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ARTIFACT_ORDER = ("fp32", "int8.ort", "int8.trt", "int8.plan")


def as_map(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def as_seq(x: Any) -> Sequence[Any]:
    return x if isinstance(x, list | tuple) else ()


def as_num(x: Any) -> float | None:
    """``x`` as a finite float, else None (bools, strings, None, NaN and inf are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def artifact_keys(report: Mapping[str, Any], *sections: str) -> list[str]:
    """Artifact keys found in ``sections`` of the report, FP32 first, then the INT8 flavours."""
    keys = {k for s in sections for k in as_map(report.get(s))}
    return sorted(
        keys, key=lambda k: (ARTIFACT_ORDER.index(k) if k in ARTIFACT_ORDER else len(ARTIFACT_ORDER), k)
    )


def gate_max_drop(report: Mapping[str, Any]) -> float | None:
    """The gate's max drop (points), from the gate result or else the thresholds."""
    for source in (as_map(report.get("gate")), as_map(report.get("thresholds"))):
        value = as_num(source.get("max_drop"))
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class ArtifactFigures:
    """One artifact's entries in the report's per-artifact maps; None where absent or not a finite number."""

    key: str
    file: Any  # as written (a file name)
    size: float | None  # bytes
    labelled: bool  # it has an accuracy entry, so its drop is in top-1 points, not disagreement with FP32
    top1: float | None
    top5: float | None
    drop: float | None
    agreement: float | None
    kl: float | None
    cosine: float | None
    p50_ms: float | None
    batch: Any  # as written


def artifact_figures(report: Mapping[str, Any], key: str) -> ArtifactFigures:
    """``key``'s figures from artifacts / sizes / accuracy / drop / agreement / kl / cosine / latency."""
    accuracy = as_map(report.get("accuracy"))
    top = as_map(accuracy.get(key))
    latency = as_map(as_map(report.get("latency")).get(key))
    return ArtifactFigures(
        key=key,
        file=as_map(report.get("artifacts")).get(key),
        size=as_num(as_map(report.get("sizes")).get(key)),
        labelled=key in accuracy,
        top1=as_num(top.get("top1")),
        top5=as_num(top.get("top5")),
        drop=as_num(as_map(report.get("drop")).get(key)),
        agreement=as_num(as_map(report.get("agreement")).get(key)),
        kl=as_num(as_map(report.get("kl")).get(key)),
        cosine=as_num(as_map(report.get("cosine")).get(key)),
        p50_ms=as_num(latency.get("p50_ms")),
        batch=latency.get("batch"),
    )
