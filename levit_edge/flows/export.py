"""``levit-edge export``: load -> fuse -> export -> calibrate -> quantize -> engine -> validate -> report.

Each stage is a library call producing one file in a staged run directory (levit_edge/runs/staging.py);
this module only sequences them, times them, decides the run's status and builds the report from their
results. It prints nothing: progress goes to an optional hook.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from levit_edge import __version__
from levit_edge.artifacts import Artifact, EngineStatus, Status
from levit_edge.backends.base import Runner
from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
from levit_edge.data.open_source import open_source
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import ImageSource
from levit_edge.errors import AccuracyGateFailed, EngineUnavailable, UserError
from levit_edge.export.metadata import model_metadata
from levit_edge.export.onnx import check_graph, export_onnx, verify_with_onnxruntime
from levit_edge.export.ort_format import (
    OrtFormatResult,
    convert_to_ort,
    ort_format_runners,
    validation_parity,
)
from levit_edge.flows import engine as engine_flow
from levit_edge.flows.job import ExportJob, Hooks, RunResult, StageTimer
from levit_edge.io import sha256_file, write_atomic
from levit_edge.model.fuse import check_fusion, fuse_levit
from levit_edge.model.load import load_model
from levit_edge.quant.calibrate import Calibration, calibrate, describe
from levit_edge.quant.fallback import Outcome, Target, accuracy_aware, report_sections
from levit_edge.quant.fp16 import convert_file
from levit_edge.quant.profiles import ORT_PROFILES, TRT_PROFILE, QuantProfile
from levit_edge.quant.quantize import QuantResult, quantize
from levit_edge.quant.trt_rules import check_trt_ready
from levit_edge.report import build
from levit_edge.report.write import write_reports
from levit_edge.runs.layout import ARTIFACT_FILES, CALIBRATION_FILE, FP32_FILE, ORT_FILE, PLAN_FILE, TRT_FILE
from levit_edge.runs.manifest import write_manifest
from levit_edge.runs.staging import staged_run
from levit_edge.settings import Targets
from levit_edge.validate.compare import Evaluation, evaluate
from levit_edge.validate.gate import GateResult, apply_gate
from levit_edge.validate.metrics import Comparison
from levit_edge.validate.sanity import check_above_chance, check_labels_fit


def run_export(job: ExportJob, hooks: Hooks | None = None) -> RunResult:
    """Run the whole pipeline into ``job.out/job.run_name``; raise on user errors.

    The run directory appears only when complete. With a failed accuracy gate the artifacts are kept and
    :class:`AccuracyGateFailed` (``result``: the run) is raised afterwards; a requested engine that cannot
    be built here raises :class:`EngineUnavailable` (likewise) once everything else is written.
    """
    timer = StageTimer(hooks)
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
        class_names = class_names_of(loaded.num_classes, val_source, calib_source)
        if val_source is not None:
            check_labels_fit(val_source, loaded.num_classes)
        with timer.stage("fuse"):
            fused = fuse_levit(loaded.model)
            images = parity_images(preprocess, job.runtime.seed, job.export.batch)
            fusion = check_fusion(loaded.model, fused, torch.from_numpy(images))
        with timer.stage("export"):
            meta = model_metadata(loaded, preprocess, class_names)
            onnx_bytes = export_onnx(fused, preprocess.input_size, job.export, meta)
            check_graph(onnx.load_from_string(onnx_bytes))
            ort_parity = verify_with_onnxruntime(onnx_bytes, fused, images)
            fp32_path = run.dir / FP32_FILE
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
            for key, profile, filename in int8_profiles(job.targets, job.quant.ort_profile):
                with timer.stage(f"quantize.{profile.name}"):
                    quant_results[key] = quantize(fp32_path, calibration, profile, run.dir / filename)
            if job.fallback.enabled and val_source is not None and job.calib is not None:
                with timer.stage("fallback"):
                    fallback = _accuracy_aware(job, run.dir, calibration, preprocess, val_source, timer)
                quant_results.update({o.artifact: o.quant for o in fallback if o.quant is not None})
            if job.targets.trt_int8 and job.quant.trt_fp16:
                with timer.stage("trt-fp16"):
                    convert_file(run.dir / TRT_FILE)
            if job.targets.trt_int8:
                with timer.stage("check-trt"):
                    _require_trt_ready(run.dir / TRT_FILE)

        ort_format: OrtFormatResult | None = None
        if job.targets.ort_format:  # firmware deliverables: .ort models + reduced-build operator configs
            with timer.stage("ort-format"):
                sources: dict[str, Path] = (
                    {Artifact.INT8_ORT: run.dir / ORT_FILE} if job.targets.ort_int8 else {}
                )
                if job.targets.ort_format_fp32:
                    sources[Artifact.FP32] = fp32_path
                ort_format = convert_to_ort(sources, run.dir, images, job.runtime.threads)

        engine: engine_flow.EngineOutcome | None = None
        if job.targets.trt_int8:
            engine = engine_flow.build(
                engine_flow.export_request(run.dir, job),
                skip=not job.targets.trt_engine,
                base=run.dir,  # trtexec paths relative to the finished run
                timer=timer,
            )
        engine_reason = engine.reason if engine and engine.status in _ENGINE_MISSING else None

        evaluation: Evaluation | None = None
        comparisons: dict[str, Comparison] = {}
        if val_source is not None:
            with timer.stage("validate"):
                # a built engine is validated too, where this machine can run it (a CUDA binding)
                runnable = (
                    engine is not None
                    and engine.status is EngineStatus.BUILT
                    and "runner" not in engine.details
                )
                evaluation = evaluate(
                    artifact_runners(run.dir, job, runnable),
                    val_source,
                    preprocess,
                    batch_size,
                    timer.progress("validate"),
                    companions=ort_format_runners(ort_format, job.runtime.threads) if ort_format else None,
                )
                check_chance(evaluation, val_source, loaded.num_classes, job.gate.allow_chance)
            comparisons = evaluation.comparisons(Artifact.FP32)
        gate = apply_gate(comparisons, job.gate) if evaluation else None
        status = run_status(gate, engine_reason, job)

        report = build.merge(
            build.header(run.final.name, status),
            build.model_section(loaded, class_names),
            build.export_sections(
                preprocess,
                {**fusion.to_dict(), "onnxruntime_vs_torch_fused": ort_parity},
                {k: run.dir / f for k, f in ARTIFACT_FILES.items() if (run.dir / f).exists()},
                engine.trtexec if engine else "",
                job.options(),
            ),
            build.thresholds(job.gate.max_drop),
            build.stages(timer.seconds),
        )
        if calibration is not None:
            build.merge(report, build.calibration_section(describe(calibration)))
        if quant_results:
            build.merge(report, build.quantization_section(quant_results, job.quant.trt_fp16))
        if engine is not None:
            build.merge(report, build.engine_section(engine.status, engine.reason, engine.details))
        if evaluation is not None and val_source is not None:
            build.merge(
                report,
                build.validation_sections(evaluation, comparisons, val_source, job.runtime.threads, gate),
            )
            build.merge(report, build.latency(report))
        if ort_format is not None:
            parity = validation_parity(evaluation, ort_format) if evaluation is not None else None
            build.merge(report, build.firmware_section(ort_format.describe(), parity))
        if fallback:
            build.merge(report, build.sections(report_sections(fallback, job.fallback)))
        build.merge(report, inputs(job, report))
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


# a requested engine that is missing makes the run "no-engine" (exit 4); a skipped one (--no-engine) not
_ENGINE_MISSING = (EngineStatus.UNAVAILABLE, EngineStatus.FAILED)


def parity_images(preprocess: PreprocessConfig, seed: int, batch: int | None = None) -> np.ndarray:
    """Seeded random parity inputs: two images, or exactly the fixed batch a --batch model takes."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch or 2, *preprocess.input_size)).astype(np.float32)


def check_chance(evaluation: Evaluation, source: ImageSource, num_classes: int, allow: bool) -> None:
    """Labelled FP32 top-1 at or below chance is a user error (levit_edge/validate/sanity.py)."""
    if evaluation.labels is None:
        return
    from levit_edge.validate.metrics import topk_accuracy

    top1 = topk_accuracy(evaluation.logits[Artifact.FP32], evaluation.labels).top1
    check_above_chance(top1, len(evaluation.labels), num_classes, source, allow)


def _accuracy_aware(
    job: ExportJob,
    run_dir: Path,
    calibration: Calibration,
    preprocess: PreprocessConfig,
    val_source: ImageSource,
    timer: StageTimer,
) -> list[Outcome]:
    """Keep each INT8 artifact within --accuracy-budget (levit_edge/quant/fallback.py)."""
    assert job.calib is not None
    size = min(job.fallback.samples, job.calib.size or job.fallback.samples)
    samples = open_source(dataclasses.replace(job.calib, size=max(size, 1)))
    targets = [
        Target(key, profile, run_dir / filename)
        for key, profile, filename in int8_profiles(job.targets, job.quant.ort_profile)
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


def int8_profiles(targets: Targets, ort_profile: str = "ort") -> list[tuple[Artifact, QuantProfile, str]]:
    """(artifact, quantization profile, file name) of each INT8 model the targets ask for."""
    out = []
    if targets.ort_int8:
        out.append((Artifact.INT8_ORT, ORT_PROFILES[ort_profile], ORT_FILE))
    if targets.trt_int8:
        out.append((Artifact.INT8_TRT, TRT_PROFILE, TRT_FILE))
    return out


def _require_trt_ready(path: Path) -> None:
    violations = check_trt_ready(path)
    if violations:
        # Our own quantizer produced a model TensorRT would reject: that is a bug, not a user error.
        raise RuntimeError(f"{path.name} breaks TensorRT rules: " + "; ".join(map(str, violations[:5])))


def class_names_of(
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


def artifact_runners(run_dir: Path, job: ExportJob, with_engine: bool) -> dict[str, Runner]:
    """ONNX Runtime runners for the run's FP32 and INT8 models (and TensorRT for a validated engine)."""
    threads = job.runtime.threads
    runners: dict[str, Runner] = {Artifact.FP32: OnnxRuntimeRunner(run_dir / FP32_FILE, threads)}
    for key, _profile, filename in int8_profiles(job.targets):
        runners[key] = OnnxRuntimeRunner(run_dir / filename, threads)
    if with_engine and (run_dir / PLAN_FILE).exists():
        from levit_edge.backends.tensorrt import TensorRTRunner

        runners[Artifact.INT8_PLAN] = TensorRTRunner(
            run_dir / PLAN_FILE, version_compatible=job.engine.version_compatible
        )
    return runners


def run_status(gate: GateResult | None, engine_reason: str | None, job: ExportJob) -> Status:
    """failed-accuracy > no-engine > unvalidated (INT8 without validation data) > passed."""
    if gate is not None and not gate.passed:
        return Status.FAILED
    if engine_reason is not None:
        return Status.NO_ENGINE
    if gate is None and job.targets.int8:
        return Status.UNVALIDATED
    return Status.PASSED


def inputs(job: ExportJob, report: dict[str, Any]) -> build.Report:
    """report.json / manifest.json ``inputs`` of an export job."""
    data: dict[str, tuple[Path, str | None]] = {}
    for key, spec, section in (("calib", job.calib, "calibration"), ("val", job.val, "validation")):
        if spec is not None:
            data[key] = (Path(spec.path), (report.get(section) or {}).get("data_hash"))
    config = (
        (job.config, sha256_file(job.config)) if job.config is not None and job.config.is_file() else None
    )
    return build.inputs_section(job.model.checkpoint, report["model"]["checkpoint_sha256"], config, data)


def manifest_body(job: ExportJob, report: dict[str, Any]) -> dict[str, Any]:
    """What ``manifest.json`` records besides the file hashes: enough to rebuild the run."""
    return {
        "inputs": report["inputs"],
        "levit_edge_version": __version__,
        "status": report["status"],
        "command": list(job.command),
        "options": job.options(),
        "model": report["model"],
        "preprocess": report["preprocess"],
        "calibration": report.get("calibration"),
        "validation_data_hash": report.get("validation", {}).get("data_hash"),
        "class_order_rule": report.get("validation", {}).get("class_order_rule"),
        "seed": job.runtime.seed,
        "versions": report["environment"]["versions"],
        "created": report["run"]["created"],
    }
