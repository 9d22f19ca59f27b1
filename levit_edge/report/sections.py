"""The report mapping as a document: every section builder, most important first."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from levit_edge.report.document import Document, Section, Sub
from levit_edge.report.formatting import generic
from levit_edge.report.sections_accuracy import (
    STATUS_TEXT,
    accuracy_section,
    confusions_section,
    headline,
    per_class_section,
)
from levit_edge.report.sections_deploy import engine_section, firmware_section
from levit_edge.report.sections_platforms import platforms_section
from levit_edge.report.sections_quant import fallback_section, quantization_section, sensitivity_section
from levit_edge.report.sections_run import (
    bench_section,
    data_section,
    environment_section,
    latency_section,
    model_section,
    options_section,
    stages_section,
)
from levit_edge.report.views import as_map

KNOWN = {
    "schema_version", "levit_edge_version", "status", "run", "model", "preprocess", "parity", "artifacts",
    "sizes", "thresholds", "stages", "environment", "trtexec", "options", "calibration", "quantization",
    "engine", "validation", "accuracy", "drop", "agreement", "kl", "cosine", "per_class",
    "confusion_changes", "latency", "gate", "bench", "sensitivity", "fallback", "sensitivity_info",
    "accuracy_budget", "firmware", "platforms",
}  # fmt: skip


def build_document(report: Mapping[str, Any], plots: bool = True) -> Document:
    """The report as sections, most important first; ``plots=False`` skips the PNGs (for Markdown)."""
    summary, facts = headline(report)
    makers: list[Callable[[], Section | None]] = [
        lambda: accuracy_section(report),
        lambda: latency_section(report),
        lambda: bench_section(report, plots),
        lambda: quantization_section(report),
        lambda: data_section(report),
        lambda: per_class_section(report, plots),
        lambda: confusions_section(report),
        lambda: sensitivity_section(report, plots),
        lambda: fallback_section(report, plots),
        lambda: engine_section(report),
        lambda: firmware_section(report),
        lambda: platforms_section(report),
        lambda: stages_section(report),
        lambda: model_section(report),
        lambda: environment_section(report),
        lambda: options_section(report),
    ]
    sections = [s for s in (make() for make in makers) if s is not None]
    other = {k: v for k, v in report.items() if k not in KNOWN}
    if other:
        sections.append(Section("Other", [b for k, v in other.items() for b in (Sub(str(k)), *generic(v))]))
    name = as_map(report.get("run")).get("name", "?")
    status = str(report.get("status", "unknown"))
    tone = STATUS_TEXT.get(status, ("none", ""))[0] or "none"
    return Document(f"levit-edge report: {name}", status, summary, facts, tuple(sections), tone)
