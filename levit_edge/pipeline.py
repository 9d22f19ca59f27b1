"""The export pipeline: load -> fuse -> export -> calibrate -> quantize -> validate -> report -> manifest.

Each stage is a library call producing one file in a staged run directory; this module only sequences
them, times them, and decides the run's status. It prints nothing: progress goes to an optional hook.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from levit_edge import __version__
from levit_edge.backends.base import Runner
from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import DataSpec, ImageSource, open_source
from levit_edge.errors import AccuracyGateFailed, EngineUnavailable, UserError
from levit_edge.export.onnx import (
    ExportSettings,
    check_graph,
    export_onnx,
    package_versions,
    verify_with_onnxruntime,
)
from levit_edge.export.ort_format import OrtFormatResult, convert_to_ort, ort_format_runners, split_parity
from levit_edge.model.fuse import check_fusion, fuse_levit
from levit_edge.model.load import LoadedModel, ModelSpec, load_model
from levit_edge.pausepoint import pause_point
from levit_edge.quant.calibrate import CALIBRATION_FILE, Calibration, calibrate, describe
from levit_edge.quant.fallback import Outcome, Target, accuracy_aware, report_sections
from levit_edge.quant.profiles import ORT_PROFILES, PROFILES, TRT_PROFILE, QuantProfile
from levit_edge.quant.quantize import QuantResult, quantize
from levit_edge.report.manifest import MANIFEST, staged_run, update_run, write_manifest
from levit_edge.report.render import write_reports
from levit_edge.settings import (
    FallbackSettings,
    GateSettings,
    PlatformSettings,
    QuantSettings,
    RuntimeSettings,
    Targets,
)
from levit_edge.validate.compare import Evaluation, evaluate
from levit_edge.validate.gate import FAILED, PASSED, GateResult, apply_gate
from levit_edge.validate.sanity import check_above_chance, check_labels_fit

FP32_FILE = "model.fp32.onnx"
ORT_FILE = "model.int8.ort.onnx"
TRT_FILE = "model.int8.trt.onnx"
PLAN_FILE = "model.int8.plan"
TIMING_CACHE = "timing.cache"
ARTIFACT_FILES = {"fp32": FP32_FILE, "int8.ort": ORT_FILE, "int8.trt": TRT_FILE, "int8.plan": PLAN_FILE}
REPORT_SCHEMA = 1
NO_ENGINE = "no-engine"
UNVALIDATED = "unvalidated"


class Hooks(Protocol):
    """Where the pipeline reports progress; the CLI implements it with rich, tests may pass None."""

    def stage(self, name: str) -> None: ...

    def progress(self, task: str, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class EngineOptions:
    """TensorRT engine options carried by an export run."""

    workspace_mb: int = 1024
    max_batch: int = 8
    version_compatible: bool = False
    hardware_compatibility: str = "none"

    def __post_init__(self) -> None:
        if self.workspace_mb < 16:
            raise UserError(f"--workspace-mb must be at least 16, got {self.workspace_mb}")
        if self.max_batch < 1:
            raise UserError(f"--max-batch must be at least 1, got {self.max_batch}")


@dataclass(frozen=True)
class ExportJob:
    """Everything one ``levit-edge export`` run needs, validated."""

    model: ModelSpec
    export: ExportSettings = field(default_factory=ExportSettings)
    targets: Targets = field(default_factory=Targets)
    calib: DataSpec | None = None
    val: DataSpec | None = None
    quant: QuantSettings = field(default_factory=QuantSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    engine: EngineOptions = field(default_factory=EngineOptions)
    fallback: FallbackSettings = field(default_factory=FallbackSettings)
    out: Path = Path("artifacts")
    name: str | None = None
    force: bool = False
    command: tuple[str, ...] = ()
    config: Path | None = None  # the --config file the options came from (recorded by name and sha256)

    def __post_init__(self) -> None:
        if self.targets.int8 and self.calib is None:
            raise UserError("--int8 needs calibration images: pass --calib DIR|LIST|NPY")
        if self.fallback.enabled:
            if not self.targets.int8 or self.val is None:
                raise UserError("--accuracy-budget needs --int8 and validation images (--val)")
            if self.gate.max_drop != self.fallback.budget:
                raise UserError("--accuracy-budget is also the accuracy gate: set the gate's max_drop to it")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.model.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class RunResult:
    """What a run produced and how it ended."""

    run_dir: Path
    status: str
    report: dict[str, Any]
    gate: GateResult | None
    engine_reason: str | None


class _Timer:
    def __init__(self, hooks: Hooks | None) -> None:
        self.hooks = hooks
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        pause_point(f"stage:{name}")
        if self.hooks:
            self.hooks.stage(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)

    def progress(self, task: str) -> Callable[[int, int], None] | None:
        hooks = self.hooks
        if hooks is None:
            return None
        return lambda done, total: hooks.progress(task, done, total)


def model_metadata(
    loaded: LoadedModel, preprocess: PreprocessConfig, class_names: tuple[str, ...] | None
) -> dict[str, str]:
    """The ONNX ``metadata_props`` that make the model file self-describing."""
    versions = package_versions()
    props = {
        "levit_edge.model": loaded.spec.name,
        "levit_edge.num_classes": str(loaded.num_classes),
        "levit_edge.preprocess": json.dumps(preprocess.to_dict(), sort_keys=True),
        "levit_edge.checkpoint_sha256": loaded.checkpoint_sha256 or "",
        "levit_edge.checkpoint_format": loaded.checkpoint_format,
        "levit_edge.checkpoint_key": loaded.checkpoint_key or "",
        "levit_edge.versions": json.dumps(versions, sort_keys=True),
    }
    if class_names:
        props["levit_edge.class_names"] = json.dumps(list(class_names))
    return props


def _parity_images(preprocess: PreprocessConfig, seed: int, batch: int | None = None) -> np.ndarray:
    """Seeded random parity inputs: two images, or exactly the fixed batch a --batch model takes."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch or 2, *preprocess.input_size)).astype(np.float32)


def _check_chance(evaluation: Evaluation, source: ImageSource, num_classes: int, allow: bool) -> None:
    """Labelled FP32 top-1 at or below chance is a user error (levit_edge/validate/sanity.py)."""
    if evaluation.labels is None:
        return
    from levit_edge.validate.metrics import topk_accuracy

    top1 = topk_accuracy(evaluation.logits["fp32"], evaluation.labels).top1
    check_above_chance(top1, len(evaluation.labels), num_classes, source, allow)


def run_export(job: ExportJob, hooks: Hooks | None = None) -> RunResult:
    """Run the whole pipeline into ``job.out/job.run_name``; raise on user errors.

    The run directory appears only when complete. With a failed accuracy gate the artifacts are kept and
    :class:`AccuracyGateFailed` is raised afterwards; a requested engine that cannot be built here raises
    :class:`EngineUnavailable` once everything else is written.
    """
    timer = _Timer(hooks)
    # a fixed --batch N model takes exactly N images per call: every stage feeds it batches of N
    batch_size = job.export.batch or job.runtime.batch_size
    torch.manual_seed(job.runtime.seed)
    if job.runtime.threads:
        torch.set_num_threads(job.runtime.threads)
    # Open the data first: a bad --val should fail in a second, not after the export.
    calib_source = open_source(job.calib) if job.calib else None
    val_source = open_source(job.val) if job.val else None
    with staged_run(job.out, job.run_name, job.force) as run:
        with timer.stage("load"):
            loaded = load_model(job.model)
            preprocess = PreprocessConfig.from_model(loaded.model)
        class_names = _class_names(loaded.num_classes, val_source, calib_source)
        if val_source is not None:
            check_labels_fit(val_source, loaded.num_classes)
        with timer.stage("fuse"):
            fused = fuse_levit(loaded.model)
            images = _parity_images(preprocess, job.runtime.seed, job.export.batch)
            fusion = check_fusion(loaded.model, fused, torch.from_numpy(images))
        with timer.stage("export"):
            meta = model_metadata(loaded, preprocess, class_names)
            onnx_bytes = export_onnx(fused, preprocess.input_size, job.export, meta)
            import onnx

            check_graph(onnx.load_from_string(onnx_bytes))
            ort_parity = verify_with_onnxruntime(onnx_bytes, fused, images)
            fp32_path = run.dir / FP32_FILE
            from levit_edge.report.manifest import write_atomic

            write_atomic(fp32_path, onnx_bytes)
        del fused

        quant_results: dict[str, QuantResult] = {}
        calibration: Calibration | None = None
        fallback: list[Outcome] = []
        if job.targets.int8 and calib_source is not None:
            with timer.stage("calibrate"):
                calibration = calibrate(
                    fp32_path,
                    calib_source,
                    preprocess,
                    job.quant,
                    batch_size,
                    timer.progress("calibrate"),
                    fixed_batch=job.export.batch,
                )
                calibration.save(run.dir / CALIBRATION_FILE)
            for key, profile, filename in _profiles(job.targets, job.quant.ort_profile):
                with timer.stage(f"quantize.{profile.name}"):
                    quant_results[key] = quantize(fp32_path, calibration, profile, run.dir / filename)
            if job.fallback.enabled and val_source is not None and job.calib is not None:
                with timer.stage("fallback"):
                    fallback = _accuracy_aware(job, run.dir, calibration, preprocess, val_source, timer)
                quant_results.update({o.artifact: o.quant for o in fallback if o.quant is not None})
            if job.targets.trt_int8 and job.quant.trt_fp16:
                from levit_edge.quant.fp16 import convert_file

                with timer.stage("trt-fp16"):
                    convert_file(run.dir / TRT_FILE)
            if job.targets.trt_int8:
                with timer.stage("check-trt"):
                    _require_trt_ready(run.dir / TRT_FILE)

        ort_format: OrtFormatResult | None = None
        if job.targets.ort_format:  # firmware deliverables: .ort models + reduced-build operator configs
            with timer.stage("ort-format"):
                sources = {"int8.ort": run.dir / ORT_FILE} if job.targets.ort_int8 else {}
                if job.targets.ort_format_fp32:
                    sources["fp32"] = fp32_path
                ort_format = convert_to_ort(sources, run.dir, images, job.runtime.threads)

        engine_reason: str | None = None
        engine_info: dict[str, Any] = {}
        trtexec = ""
        if job.targets.trt_int8:
            engine_reason, engine_info, trtexec = _maybe_build_engine(run.dir, job, timer)

        evaluation: Evaluation | None = None
        format_parity: dict[str, Any] = {}
        if val_source is not None:
            with timer.stage("validate"):
                runners = _runners(
                    run.dir, job, bool(engine_info.get("built")) and not engine_info.get("runner")
                )
                if ort_format is not None:
                    runners.update(ort_format_runners(ort_format, job.runtime.threads))
                evaluation = evaluate(
                    runners,
                    val_source,
                    preprocess,
                    batch_size,
                    timer.progress("validate"),
                )
                _check_chance(evaluation, val_source, loaded.num_classes, job.gate.allow_chance)
                if ort_format is not None:
                    evaluation, format_parity = split_parity(evaluation, ort_format)
        gate = apply_gate(evaluation.comparisons("fp32"), job.gate) if evaluation else None
        status = _status(gate, engine_reason, job)
        report = build_report(
            job=job,
            run_dir=run.final,
            loaded=loaded,
            preprocess=preprocess,
            class_names=class_names,
            calibration=calibration,
            quant_results=quant_results,
            evaluation=evaluation,
            val_source=val_source,
            gate=gate,
            status=status,
            stages=timer.seconds,
            parity={**fusion.to_dict(), "onnxruntime_vs_torch_fused": ort_parity},
            engine=engine_info,
            trtexec=trtexec,
            files={k: run.dir / f for k, f in ARTIFACT_FILES.items() if (run.dir / f).exists()},
        )
        if ort_format is not None:
            report["firmware"] = {**ort_format.describe(), "parity": format_parity or None}
        if fallback:
            report.update(report_sections(fallback, job.fallback))
        report["inputs"] = run_inputs(job, report)
        write_reports(run.dir, report)
        write_manifest(run.dir, manifest_body(job, report))
        final = run.commit()
    result = RunResult(final, status, report, gate, engine_reason)
    if gate is not None and not gate.passed:
        unmet = [o.message for o in fallback if not o.met]
        raise AccuracyGateFailed(
            f"accuracy gate failed ({'; '.join(unmet or gate.failures)}); artifacts kept in {final}",
            result,
        )
    if engine_reason is not None:
        raise EngineUnavailable(
            f"TensorRT engine not built: {engine_reason}. Everything else is in {final}; build the engine on "
            f"the target with: levit-edge build-engine {final / TRT_FILE}",
            result,
        )
    return result


def _accuracy_aware(
    job: ExportJob,
    run_dir: Path,
    calibration: Calibration,
    preprocess: PreprocessConfig,
    val_source: ImageSource,
    timer: _Timer,
) -> list[Outcome]:
    """Keep each INT8 artifact within --accuracy-budget (levit_edge/quant/fallback.py)."""
    import dataclasses

    assert job.calib is not None
    size = min(job.fallback.samples, job.calib.size or job.fallback.samples)
    samples = open_source(dataclasses.replace(job.calib, size=max(size, 1)))
    targets = [
        Target(key, profile, run_dir / filename)
        for key, profile, filename in _profiles(job.targets, job.quant.ort_profile)
    ]
    return accuracy_aware(
        targets,
        run_dir / FP32_FILE,
        calibration,
        val_source,
        samples,
        preprocess,
        job.fallback,
        job.runtime.batch_size,
        job.runtime.threads,
        job.runtime.seed,
        timer.progress,
    )


def _profiles(targets: Targets, ort_profile: str = "ort") -> list[tuple[str, QuantProfile, str]]:
    out = []
    if targets.ort_int8:
        out.append(("int8.ort", ORT_PROFILES[ort_profile], ORT_FILE))
    if targets.trt_int8:
        out.append(("int8.trt", TRT_PROFILE, TRT_FILE))
    return out


def _require_trt_ready(path: Path) -> None:
    from levit_edge.quant.trt_rules import check_trt_ready

    violations = check_trt_ready(path)
    if violations:
        # Our own quantizer produced a model TensorRT would reject: that is a bug, not a user error.
        raise RuntimeError(f"{path.name} breaks TensorRT rules: " + "; ".join(map(str, violations[:5])))


def _class_names(
    num_classes: int, val: ImageSource | None, calib: ImageSource | None
) -> tuple[str, ...] | None:
    """Class names from the labelled validation set (which must match the model), else from a matching
    labelled calibration set (calibration ignores labels, so a mismatch there is no error)."""
    if val is not None and val.class_names:
        if len(val.class_names) != num_classes:
            raise UserError(
                f"--val has {len(val.class_names)} class folders but the model has {num_classes} classes; "
                "check --num-classes or the folder layout"
            )
        return val.class_names
    if calib is not None and calib.class_names and len(calib.class_names) == num_classes:
        return calib.class_names
    return None


def _runners(run_dir: Path, job: ExportJob, with_engine: bool) -> dict[str, Runner]:
    threads = job.runtime.threads
    runners: dict[str, Runner] = {"fp32": OnnxRuntimeRunner(run_dir / FP32_FILE, threads)}
    for key, _profile, filename in _profiles(job.targets):
        runners[key] = OnnxRuntimeRunner(run_dir / filename, threads)
    if with_engine and (run_dir / PLAN_FILE).exists():
        from levit_edge.backends.tensorrt import TensorRTRunner

        runners["int8.plan"] = TensorRTRunner(
            run_dir / PLAN_FILE, version_compatible=job.engine.version_compatible
        )
    return runners


def _engine_settings(run_dir: Path, job: ExportJob) -> Any:
    from levit_edge.backends.tensorrt import EngineSettings

    max_batch = job.export.batch or job.engine.max_batch
    return EngineSettings(
        onnx_path=run_dir / TRT_FILE,
        plan_path=run_dir / PLAN_FILE,
        timing_cache_path=run_dir / TIMING_CACHE,
        min_batch=job.export.batch or 1,
        opt_batch=job.export.batch or 1,
        max_batch=max_batch,
        workspace_mb=job.engine.workspace_mb,
        version_compatible=job.engine.version_compatible,
        hardware_compatibility=job.engine.hardware_compatibility,
    )


def _maybe_build_engine(
    run_dir: Path, job: ExportJob, timer: _Timer
) -> tuple[str | None, dict[str, Any], str]:
    """Build the engine where asked and possible: (reason it is missing or None, report's ``engine``
    section, trtexec line). A TensorRT failure is recorded, not raised: the CPU artifacts stay."""
    from levit_edge.backends.tensorrt import (
        build_engine,
        cuda_binding_unavailable_reason,
        tensorrt_unavailable_reason,
        trtexec_command,
    )

    settings = _engine_settings(run_dir, job)
    trtexec = trtexec_command(settings, base=run_dir)  # paths relative to the finished run
    if not job.targets.trt_engine:
        skipped = "skipped (--no-engine): build it on the target with build-engine or the trtexec line"
        return None, {"built": False, "status": "skipped", "reason": skipped}, trtexec
    reason = tensorrt_unavailable_reason(runner=False)
    if reason is not None:
        return reason, {"built": False, "status": "unavailable", "reason": reason}, trtexec
    try:
        with timer.stage("build-engine"):
            result = build_engine(settings)
    except (UserError, EngineUnavailable, RuntimeError, OSError) as exc:  # parse, build, load back, write
        for leftover in (run_dir / PLAN_FILE, run_dir / TIMING_CACHE):
            leftover.unlink(missing_ok=True)
        failed = f"TensorRT build failed: {' '.join(str(exc).split())}"
        return failed, {"built": False, "status": "failed", "reason": failed}, trtexec
    info: dict[str, Any] = {
        "built": True,
        "status": "built",
        "reason": None,
        "tensorrt_version": result.tensorrt_version,
        "gpu": result.gpu_name,
        "batch_range": list(result.batch_range),
        "seconds": result.seconds,
    }
    runner = cuda_binding_unavailable_reason()  # building needs none; validating the engine does
    if runner is not None:
        info["runner"] = f"engine not validated here: {runner}"
    return None, info, trtexec


def _status(gate: GateResult | None, engine_reason: str | None, job: ExportJob) -> str:
    if gate is not None and not gate.passed:
        return FAILED
    if engine_reason is not None:
        return NO_ENGINE
    if gate is None and job.targets.int8:
        return UNVALIDATED
    return PASSED


# ---- report ----------------------------------------------------------------------------------------


def latency_summary(latencies_ms: list[float], batch: int, threads: int | None) -> dict[str, Any]:
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
    import os
    import platform

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


def build_report(
    *,
    job: ExportJob,
    run_dir: Path,
    loaded: LoadedModel,
    preprocess: PreprocessConfig,
    class_names: tuple[str, ...] | None,
    calibration: Calibration | None,
    quant_results: dict[str, QuantResult],
    evaluation: Evaluation | None,
    val_source: ImageSource | None,
    gate: GateResult | None,
    status: str,
    stages: dict[str, float],
    parity: dict[str, Any],
    engine: dict[str, Any],
    trtexec: str,
    files: dict[str, Path],
) -> dict[str, Any]:
    """The versioned ``report.json`` body (keys documented in README.md, "report.json keys")."""
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA,
        "levit_edge_version": __version__,
        "status": status,
        "run": {"name": run_dir.name, "created": datetime.now(UTC).isoformat(timespec="seconds")},
        "model": {
            "name": loaded.spec.name,
            "classes": loaded.num_classes,
            "class_names": list(class_names) if class_names else None,
            "checkpoint": str(loaded.spec.checkpoint) if loaded.spec.checkpoint else None,
            "checkpoint_sha256": loaded.checkpoint_sha256,
            "checkpoint_format": loaded.checkpoint_format,
            "checkpoint_key": loaded.checkpoint_key,
            "checkpoint_weight_sets": list(loaded.weight_sets),
        },
        "preprocess": preprocess.to_dict(),
        "parity": parity,
        "artifacts": {k: p.name for k, p in files.items()},
        "sizes": {k: p.stat().st_size for k, p in files.items()},
        "thresholds": {"max_drop": job.gate.max_drop},
        "stages": stages,
        "environment": environment(),
        "trtexec": trtexec or None,
        "options": job_options(job),
    }
    if calibration is not None:
        report["calibration"] = describe(calibration)
    if quant_results:
        report["quantization"] = {
            key: {
                "profile": r.profile,
                **PROFILES[r.profile].describe(),
                "quantized_nodes": r.quantized_nodes,
                "excluded_nodes": list(r.excluded_nodes),
                "qdq_pairs": r.qdq_pairs,
                **(
                    {
                        "note": "TensorRT Q/DQ simulated on CPU by ONNX Runtime",
                        "float_regions": "fp16" if job.quant.trt_fp16 else "fp32",
                    }
                    if key == "int8.trt"
                    else {}
                ),
            }
            for key, r in quant_results.items()
        }
    if job.targets.trt_int8:
        report["engine"] = engine
    if evaluation is not None and val_source is not None:
        report.update(validation_section(evaluation, val_source, job.runtime.threads, gate))
    return report


def validation_section(
    evaluation: Evaluation, source: ImageSource, threads: int | None, gate: GateResult | None
) -> dict[str, Any]:
    """Accuracy, drop, agreement, KL, cosine, per-class and confusion changes, latency, gate."""
    comparisons = evaluation.comparisons("fp32")
    out: dict[str, Any] = {
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
        },
        "accuracy": {},
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
        "latency": {
            k: {**latency_summary(v, evaluation.batch_size, threads), "source": "validation batches"}
            for k, v in evaluation.latencies_ms.items()
            if v
        },
        "gate": asdict(gate) if gate else None,
    }
    for key, comp in comparisons.items():
        if comp.reference_accuracy is not None:
            out["accuracy"]["fp32"] = asdict(comp.reference_accuracy)
        if comp.accuracy is not None:
            out["accuracy"][key] = asdict(comp.accuracy)
    if not comparisons and evaluation.labels is not None:
        from levit_edge.validate.metrics import topk_accuracy

        out["accuracy"]["fp32"] = asdict(topk_accuracy(evaluation.logits["fp32"], evaluation.labels))
    return out


def job_options(job: ExportJob) -> dict[str, Any]:
    """Every option of the run as plain JSON values (for the report and the manifest)."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, frozenset | set):
            return sorted(obj)
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [plain(v) for v in obj]
        return obj

    raw = asdict(job)
    raw.pop("command", None)
    return {k: plain(v) for k, v in raw.items()}


def run_inputs(job: ExportJob, report: dict[str, Any]) -> dict[str, Any]:
    """Every input of the run by name and content hash; the path is information only (it is the path on
    the machine that made the run), so a copied run folder still says exactly what it was built from."""
    from levit_edge.model.load import sha256_file

    inputs: dict[str, Any] = {}
    if job.model.checkpoint is not None:
        inputs["checkpoint"] = {
            "name": job.model.checkpoint.name,
            "sha256": report["model"]["checkpoint_sha256"],
            "path": str(job.model.checkpoint),
        }
    if job.config is not None and job.config.is_file():
        inputs["config"] = {
            "name": job.config.name,
            "sha256": sha256_file(job.config),
            "path": str(job.config),
        }
    for key, spec, data_hash in (
        ("calib", job.calib, (report.get("calibration") or {}).get("data_hash")),
        ("val", job.val, (report.get("validation") or {}).get("data_hash")),
    ):
        if spec is not None:
            inputs[key] = {"name": Path(spec.path).name, "data_hash": data_hash, "path": str(spec.path)}
    return inputs


def manifest_body(job: ExportJob, report: dict[str, Any]) -> dict[str, Any]:
    """What ``manifest.json`` records besides the file hashes: enough to rebuild the run."""
    return {
        "inputs": run_inputs(job, report),
        "levit_edge_version": __version__,
        "status": report["status"],
        "command": list(job.command),
        "options": job_options(job),
        "model": report["model"],
        "preprocess": report["preprocess"],
        "calibration": report.get("calibration"),
        "validation_data_hash": report.get("validation", {}).get("data_hash"),
        "class_order_rule": report.get("validation", {}).get("class_order_rule"),
        "seed": job.runtime.seed,
        "versions": report["environment"]["versions"],
        "created": report["run"]["created"],
    }


# ---- re-validating an existing run -------------------------------------------------------------------


def preprocess_from_onnx(path: Path) -> tuple[PreprocessConfig, tuple[str, ...] | None, int]:
    """Preprocessing, class names and class count recorded in a levit-edge ONNX model's metadata."""
    from levit_edge.export.onnx import load_onnx, metadata_json

    model = load_onnx(path)
    pre = metadata_json(model, "levit_edge.preprocess")
    if not isinstance(pre, dict):
        raise UserError(f"{path}: malformed levit_edge.preprocess metadata")
    props = {p.key: p.value for p in model.metadata_props}
    try:
        names = json.loads(props["levit_edge.class_names"]) if "levit_edge.class_names" in props else None
        num_classes = int(props.get("levit_edge.num_classes", "0"))
    except ValueError:
        raise UserError(f"{path}: malformed levit_edge.class_names / num_classes metadata") from None
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise UserError(f"{path}: malformed levit_edge.class_names metadata (not a list of names)")
    return PreprocessConfig.from_dict(pre), tuple(names) if names else None, num_classes


def fixed_batch_of(path: Path) -> int | None:
    """The fixed batch size of an exported model's input (None: dynamic)."""
    from levit_edge.export.onnx import load_onnx

    dim = load_onnx(path).graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


def validate_run(
    run_dir: Path,
    val: DataSpec,
    gate_settings: GateSettings,
    runtime: RuntimeSettings,
    hooks: Hooks | None = None,
    platform: PlatformSettings | None = None,
) -> RunResult:
    """Re-check a finished run on a (new) validation set; update its reports and manifest in place.

    With ``platform``, also check its CPU deliverables on that (emulated) CPU (levit_edge.platforms.check).
    """
    from levit_edge.platforms import check as platforms
    from levit_edge.report.manifest import read_json, require_intact

    if not (run_dir / MANIFEST).is_file():
        raise UserError(f"{run_dir} is not a complete run directory (no {MANIFEST})")
    if not (run_dir / FP32_FILE).is_file():
        raise UserError(f"{run_dir} has no {FP32_FILE}")
    require_intact(run_dir, "re-validate")  # before reading a model that may have been swapped
    if platform is not None:
        platforms.prepare(run_dir, platform)  # not set up: one error line before any work
    timer = _Timer(hooks)
    source = open_source(val)
    preprocess, class_names, num_classes = preprocess_from_onnx(run_dir / FP32_FILE)
    if source.class_names and num_classes and len(source.class_names) != num_classes:
        raise UserError(
            f"--val has {len(source.class_names)} class folders but the model has {num_classes} classes"
        )
    if source.class_names and class_names and tuple(source.class_names) != tuple(class_names):
        raise UserError("--val class folders differ from the class names the model was exported with")
    if num_classes:
        check_labels_fit(source, num_classes)
    fixed = fixed_batch_of(run_dir / FP32_FILE)
    runners: dict[str, Runner] = {
        key: OnnxRuntimeRunner(run_dir / name, runtime.threads)
        for key, name in ARTIFACT_FILES.items()
        if key != "int8.plan" and (run_dir / name).is_file()
    }
    with timer.stage("validate"):
        evaluation = evaluate(
            runners, source, preprocess, fixed or runtime.batch_size, timer.progress("validate")
        )
    if num_classes:  # recorded by every levit-edge export; without it there is no chance level to test
        _check_chance(evaluation, source, num_classes, gate_settings.allow_chance)
    gate = apply_gate(evaluation.comparisons("fp32"), gate_settings)
    checked = None
    if platform is not None:
        with timer.stage(platform.platform):  # not recorded in stages: emulated time means nothing
            checked = platforms.check_platform(
                run_dir, val, preprocess, platform, gate_settings, runtime.threads
            )
    gate = platforms.combined_gate(gate, checked)
    report = read_json(run_dir / "report.json")
    manifest = read_json(run_dir / MANIFEST)
    previous = report.get("status")
    status = FAILED if not gate.passed else (NO_ENGINE if previous == NO_ENGINE else PASSED)
    for key in ("accuracy", "drop", "agreement", "kl", "cosine", "per_class", "confusion_changes", "latency"):
        report.pop(key, None)
    report.update(validation_section(evaluation, source, runtime.threads, gate))
    report["status"] = status
    report["thresholds"] = {"max_drop": gate_settings.max_drop}
    report.setdefault("stages", {})["revalidate"] = timer.seconds["validate"]
    body = {k: v for k, v in manifest.items() if k not in ("files", "schema_version")}
    body["status"] = status
    body["validation_data_hash"] = report["validation"]["data_hash"]
    body["class_order_rule"] = report["validation"]["class_order_rule"]
    platforms.record_check(report, body, checked)
    update_run(run_dir, lambda folder: write_reports(folder, report), body)  # all or nothing
    result = RunResult(run_dir, status, report, gate, None)
    if not gate.passed:
        raise AccuracyGateFailed(
            f"accuracy gate failed ({'; '.join(gate.failures)}); report in {run_dir}", result
        )
    return result


def save_bench(run_dir: Path, rows: list[dict[str, Any]], settings: Any) -> None:
    """Store benchmark rows in the run's report.json (``bench``) and refresh its reports and manifest."""
    from levit_edge.report.manifest import read_json

    report = read_json(run_dir / "report.json")
    manifest = read_json(run_dir / MANIFEST)
    report["bench"] = {"settings": asdict(settings), "results": rows, "environment": environment()}
    # report.json's latency.<artifact> (README.md) at batch 1 comes from the benchmark when there is one.
    latency = report.setdefault("latency", {})
    for row in rows:
        if row["batch"] == settings.batches[0] and row["threads"] == settings.threads[0]:
            latency[row["variant"]] = {
                k: row[k] for k in ("p50_ms", "p90_ms", "p99_ms", "batch", "threads", "calls")
            } | {"source": "levit-edge bench"}
    body = {k: v for k, v in manifest.items() if k not in ("files", "schema_version")}
    update_run(run_dir, lambda folder: write_reports(folder, report), body)  # all or nothing


def save_sections(run_dir: Path, sections: dict[str, Any]) -> None:
    """Store sections (``sensitivity``, ...) in a finished run's report.json; re-render and re-hash."""
    from levit_edge.report.manifest import read_json

    report = read_json(run_dir / "report.json")
    manifest = read_json(run_dir / MANIFEST)
    report.update(sections)
    body = {k: v for k, v in manifest.items() if k not in ("files", "schema_version")}
    update_run(run_dir, lambda folder: write_reports(folder, report), body)  # all or nothing


__all__ = ["MANIFEST", "ExportJob", "RunResult", "run_export", "validate_run"]
