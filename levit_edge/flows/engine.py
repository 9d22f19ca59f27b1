"""Building a TensorRT engine: the one sequence behind ``export --target trt`` and ``build-engine``.

TensorRT is imported lazily (levit_edge/backends/trt_*.py): a machine without it gets an
:class:`EngineOutcome` that says why, with the equivalent trtexec line to run on the target.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from levit_edge.artifacts import EngineStatus
from levit_edge.backends import trt_build, trt_cuda, trt_env
from levit_edge.backends.trt_build import EngineSettings
from levit_edge.errors import EngineUnavailable, UserError
from levit_edge.flows.job import ExportJob, StageTimer
from levit_edge.quant.trt_rules import check_trt_ready
from levit_edge.runs.layout import PLAN_FILE, TIMING_CACHE, TRT_FILE


@dataclass(frozen=True)
class EngineOutcome:
    """What became of an engine request: built, skipped, unavailable here, or failed (with the reason),
    the trtexec line that builds the same engine, and the build's details when built."""

    status: EngineStatus
    reason: str | None
    trtexec: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"status": str(self.status), "reason": self.reason, "trtexec": self.trtexec, **self.details}


def export_request(run_dir: Path, job: ExportJob) -> EngineSettings:
    """The engine an export run asks for: a fixed --batch model gets exactly that batch."""
    return EngineSettings(
        onnx_path=run_dir / TRT_FILE,
        plan_path=run_dir / PLAN_FILE,
        timing_cache_path=run_dir / TIMING_CACHE,
        min_batch=job.export.batch or 1,
        opt_batch=job.export.batch or 1,
        max_batch=job.export.batch or job.engine.max_batch,
        workspace_mb=job.engine.workspace_mb,
        version_compatible=job.engine.version_compatible,
        hardware_compatibility=job.engine.hardware_compatibility,
    )


def build(
    request: EngineSettings,
    *,
    skip: bool = False,
    base: Path | None = None,
    timer: StageTimer | None = None,
) -> EngineOutcome:
    """Build the engine where possible; never raises for TensorRT's own failures (they are the outcome's
    reason, and a half-written plan or timing cache is removed). ``base``: write the trtexec line's paths
    relative to it (a finished run's folder)."""
    trtexec = trt_build.trtexec_command(request, base=base)
    if skip:
        reason = "skipped (--no-engine): build it on the target with build-engine or the trtexec line"
        return EngineOutcome(EngineStatus.SKIPPED, reason, trtexec)
    unavailable = trt_env.tensorrt_unavailable_reason(runner=False)  # building needs no CUDA binding
    if unavailable is not None:
        return EngineOutcome(EngineStatus.UNAVAILABLE, unavailable, trtexec)
    try:
        with timer.stage("build-engine") if timer is not None else contextlib.nullcontext():
            result = trt_build.build_engine(request)
    except (UserError, EngineUnavailable, RuntimeError, OSError) as exc:  # parse, build, load back, write
        for leftover in (request.plan_path, request.timing_cache_path):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        return EngineOutcome(
            EngineStatus.FAILED, f"TensorRT build failed: {' '.join(str(exc).split())}", trtexec
        )
    details: dict[str, Any] = {
        "tensorrt_version": result.tensorrt_version,
        "gpu": result.gpu_name,
        "batch_range": list(result.batch_range),
        "seconds": result.seconds,
    }
    runner = trt_cuda.cuda_binding_unavailable_reason()  # building needs none; validating the engine does
    if runner is not None:
        details["runner"] = f"engine not validated here: {runner}"
    return EngineOutcome(EngineStatus.BUILT, None, trtexec, details)


def build_engine_file(request: EngineSettings, force: bool = False) -> EngineOutcome:
    """``levit-edge build-engine``: check the model against TensorRT's rules and the plan path, then
    build. Raises :class:`EngineUnavailable` (exit 4, ``result`` = the outcome) where TensorRT is
    missing and UserError when the build fails or the inputs are wrong."""
    model, plan = request.onnx_path, request.plan_path
    if not model.is_file():
        raise UserError(f"model not found: {model}")
    violations = check_trt_ready(model)
    if violations:
        raise UserError(
            f"{model} is not TensorRT-ready: {violations[0]} (run 'levit-edge check-trt' for all)"
        )
    if plan.is_dir() or (plan.is_symlink() and not plan.exists()):
        raise UserError(f"--plan {plan} is a directory or a dangling link; give an engine file path")
    if plan.exists() and not force:
        raise UserError(f"{plan} already exists; pass --force to replace it")
    outcome = build(request)
    if outcome.status is EngineStatus.UNAVAILABLE:
        raise EngineUnavailable(
            f"{outcome.reason}; build on the target GPU (engines are specific to GPU and TensorRT version) "
            "with 'levit-edge build-engine' there or the trtexec command above",
            outcome,
        )
    if outcome.status is EngineStatus.FAILED:
        raise UserError(outcome.reason or "TensorRT build failed")
    return outcome
