"""report.json built from the stages' typed results: one builder per top-level key.

Every key of report.json (README.md, "report.json keys") is produced by exactly one function here; the
flows call these and :func:`merge` the parts, and nothing else writes into a report mapping
(tests/test_architecture.py holds that). Reopened runs (validate, bench, debug) call the same builders, so
a re-validated report is built like a fresh one.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from levit_edge import __version__
from levit_edge.artifacts import Artifact, EngineStatus, Status
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import ImageSource
from levit_edge.export.onnx import package_versions
from levit_edge.model.load import LoadedModel
from levit_edge.quant.profiles import PROFILES
from levit_edge.quant.quantize import QuantResult
from levit_edge.validate.compare import Evaluation
from levit_edge.validate.gate import GateResult
from levit_edge.validate.metrics import Comparison, topk_accuracy

REPORT_SCHEMA = 1
# The keys a validation pass owns: dropped and rebuilt together when a run is re-validated.
VALIDATION_KEYS = (
    "validation",
    "accuracy",
    "drop",
    "agreement",
    "kl",
    "cosine",
    "per_class",
    "confusion_changes",
    "gate",
    # another CPU's check is part of the validation it gated: a re-validation without it drops it, since
    # the new status no longer covers those figures
    "platforms",
)
Report = dict[str, Any]


def merge(report: Report, *parts: Mapping[str, Any]) -> Report:
    """Add builder outputs to ``report`` (in place; returned for chaining)."""
    for part in parts:
        report.update(part)
    return report


def without_validation(report: Report) -> Report:
    """``report`` with the keys of a validation pass dropped (in place), before a re-validation."""
    for key in VALIDATION_KEYS:
        report.pop(key, None)
    return report


def header(run_name: str, status: Status) -> Report:
    """``schema_version``, ``levit_edge_version``, ``status``, ``run``."""
    return {
        "schema_version": REPORT_SCHEMA,
        "levit_edge_version": __version__,
        "status": status,
        "run": {"name": run_name, "created": datetime.now(UTC).isoformat(timespec="seconds")},
    }


def status(value: Status) -> Report:
    """``status`` alone (a re-validation changes it)."""
    return {"status": value}


def model_section(loaded: LoadedModel, class_names: tuple[str, ...] | None) -> Report:
    """``model``: what was exported, from which checkpoint."""
    return {
        "model": {
            "name": loaded.spec.name,
            "classes": loaded.num_classes,
            "class_names": list(class_names) if class_names else None,
            "checkpoint": str(loaded.spec.checkpoint) if loaded.spec.checkpoint else None,
            "checkpoint_sha256": loaded.checkpoint_sha256,
            "checkpoint_format": loaded.checkpoint_format,
            "checkpoint_key": loaded.checkpoint_key,
            "checkpoint_weight_sets": list(loaded.weight_sets),
        }
    }


def export_sections(
    preprocess: PreprocessConfig,
    parity: Mapping[str, Any],
    files: Mapping[Artifact, Path],
    trtexec: str,
    options: Mapping[str, Any],
) -> Report:
    """``preprocess``, ``parity``, ``artifacts``, ``sizes``, ``environment``, ``trtexec``, ``options``."""
    return {
        "preprocess": preprocess.to_dict(),
        "parity": dict(parity),
        "artifacts": {str(k): p.name for k, p in files.items()},
        "sizes": {str(k): p.stat().st_size for k, p in files.items()},
        "environment": environment(),
        "trtexec": trtexec or None,
        "options": dict(options),
    }


def thresholds(max_drop: float) -> Report:
    """``thresholds``: the gate the status was decided with."""
    return {"thresholds": {"max_drop": max_drop}}


def stages(seconds: Mapping[str, float], previous: Mapping[str, Any] | None = None) -> Report:
    """``stages``: seconds per stage (a later command's stages are added to the run's own)."""
    return {"stages": {**(previous or {}), **seconds}}


def calibration_section(description: Mapping[str, Any]) -> Report:
    """``calibration`` (levit_edge.quant.calibrate.describe)."""
    return {"calibration": dict(description)}


def quantization_section(results: Mapping[str, QuantResult], trt_fp16: bool) -> Report:
    """``quantization``: each INT8 artifact's recipe and what was quantized."""
    return {
        "quantization": {
            key: {
                "profile": r.profile,
                **PROFILES[r.profile].describe(),
                "quantized_nodes": r.quantized_nodes,
                "excluded_nodes": list(r.excluded_nodes),
                "qdq_pairs": r.qdq_pairs,
                **(
                    {
                        "note": "TensorRT Q/DQ simulated on CPU by ONNX Runtime",
                        "float_regions": "fp16" if trt_fp16 else "fp32",
                    }
                    if key == Artifact.INT8_TRT
                    else {}
                ),
            }
            for key, r in results.items()
        }
    }


def engine_section(
    status: EngineStatus, reason: str | None, details: Mapping[str, Any] | None = None
) -> Report:
    """``engine``: whether the TensorRT engine was built, and why not."""
    return {
        "engine": {
            "built": status is EngineStatus.BUILT,
            "status": status,
            "reason": reason,
            **(details or {}),
        }
    }


def latency_summary(latencies_ms: Sequence[float], batch: int, threads: int | None) -> dict[str, Any]:
    """p50/p90/p99 of per-batch latencies (the first call, a warm-up, is dropped when there are more)."""
    values = np.asarray(latencies_ms[1:] if len(latencies_ms) > 1 else latencies_ms, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "batch": batch,
        "threads": threads,
        "calls": int(values.size),
    }


def validation_sections(
    evaluation: Evaluation,
    comparisons: Mapping[str, Comparison],
    source: ImageSource,
    threads: int | None,
    gate: GateResult | None,
) -> Report:
    """The keys of :data:`VALIDATION_KEYS`: accuracy, drop, agreement, KL, cosine, per-class and
    confusion changes, and the gate, from one evaluation and its comparisons with FP32."""
    accuracy: dict[str, Any] = {}
    for key, comp in comparisons.items():
        if comp.reference_accuracy is not None:
            accuracy[Artifact.FP32] = asdict(comp.reference_accuracy)
        if comp.accuracy is not None:
            accuracy[key] = asdict(comp.accuracy)
    if not comparisons and evaluation.labels is not None:
        accuracy[Artifact.FP32] = asdict(topk_accuracy(evaluation.logits[Artifact.FP32], evaluation.labels))
    return {
        "validation": {
            "source": str(source.path),
            "kind": source.kind,
            "n": len(evaluation.names),
            "labelled": evaluation.labels is not None,
            "class_order": list(source.class_names) if source.class_names else None,
            "class_order_rule": source.class_order,
            "data_hash": source.fingerprint(),
            "excluded": source.excluded,
            "skipped": [list(s) for s in evaluation.skipped],
            # files decoded in another mode and converted to RGB as timm does (mode -> count)
            "converted_to_rgb": dict(sorted(source.conversions.items())),
            # per-artifact latency of the validation batches; ``latency`` shows them unless a bench ran
            "latency": {
                k: {**latency_summary(v, evaluation.batch_size, threads), "source": "validation batches"}
                for k, v in evaluation.latencies_ms.items()
                if v
            },
        },
        "accuracy": accuracy,
        "drop": {k: c.drop for k, c in comparisons.items()},
        "agreement": {k: c.agreement for k, c in comparisons.items()},
        "kl": {k: c.kl for k, c in comparisons.items()},
        "cosine": {k: c.cosine for k, c in comparisons.items()},
        "per_class": {
            k: [
                {"class": p.name, "n": p.n, "fp32": p.reference, "int8": p.candidate, "delta": p.delta}
                for p in c.per_class
            ]
            for k, c in comparisons.items()
        },
        "confusion_changes": {k: [list(t) for t in c.confusion_changes] for k, c in comparisons.items()},
        "gate": asdict(gate) if gate else None,
    }


def bench_section(rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> Report:
    """``bench``: every timed row of ``levit-edge bench``, its settings and the machine."""
    return {
        "bench": {
            "settings": dict(settings),
            "results": [dict(r) for r in rows],
            "environment": environment(),
        }
    }


def latency(report: Mapping[str, Any]) -> Report:
    """``latency.<artifact>``, derived from the report's own sections: the validation batches' latency,
    replaced by ``levit-edge bench``'s first batch size and thread count where a bench ran."""
    validation = report.get("validation")
    out: dict[str, Any] = dict(validation.get("latency") or {}) if isinstance(validation, dict) else {}
    bench = report.get("bench")
    if isinstance(bench, dict):
        settings = bench.get("settings") or {}
        first = ((settings.get("batches") or [None])[0], (settings.get("threads") or [None])[0])
        for row in bench.get("results") or []:
            if (row.get("batch"), row.get("threads")) == first:
                out[row["variant"]] = {
                    k: row[k] for k in ("p50_ms", "p90_ms", "p99_ms", "batch", "threads", "calls")
                } | {"source": "levit-edge bench"}
    return {"latency": out}


def firmware_section(description: Mapping[str, Any], parity: Mapping[str, Any] | None) -> Report:
    """``firmware``: the .ort deliverables and their parity on the validation images."""
    return {"firmware": {**description, "parity": dict(parity) if parity else None}}


def inputs_section(
    checkpoint: Path | None,
    checkpoint_sha256: str | None,
    config: tuple[Path, str] | None,
    data: Mapping[str, tuple[Path, str | None]],
) -> Report:
    """``inputs``: every input of the run by name and content hash; the path is information only (the
    path on the machine that made the run), so a copied run still says what it was built from."""
    inputs: dict[str, Any] = {}
    if checkpoint is not None:
        inputs["checkpoint"] = {"name": checkpoint.name, "sha256": checkpoint_sha256, "path": str(checkpoint)}
    if config is not None:
        inputs["config"] = {"name": config[0].name, "sha256": config[1], "path": str(config[0])}
    for key, (path, data_hash) in data.items():
        inputs[key] = {"name": path.name, "data_hash": data_hash, "path": str(path)}
    return {"inputs": inputs}


def sections(part: Mapping[str, Any]) -> Report:
    """Sections a stage describes itself (``accuracy_budget``, ``fallback``, ``sensitivity``,
    ``sensitivity_info``: levit_edge.quant.fallback / sensitivity), added as they are."""
    return dict(part)


def platforms_section(platform: str, check: Mapping[str, Any]) -> Report:
    """``platforms.<platform>``: the run's CPU deliverables checked on another CPU (levit_edge.platforms)."""
    return {"platforms": {platform: dict(check)}}


def cpu_flags() -> list[str]:
    """The SIMD features that decide INT8 speed (AVX2, AVX-512 VNNI, AMX, NEON dot product)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "asimddp", "i8mm")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return [f for f in wanted if f in flags]


def environment() -> dict[str, Any]:
    """Versions and CPU features of the machine that produced the run."""
    model_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": model_name,
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
    }
