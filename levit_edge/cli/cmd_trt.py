"""``levit-edge check-trt`` and ``levit-edge build-engine``: the TensorRT side of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from levit_edge.artifacts import Status
from levit_edge.cli.app import app, console
from levit_edge.cli.common import summary
from levit_edge.cli.output import output_options, set_result
from levit_edge.errors import EngineUnavailable, UserError
from levit_edge.runs.layout import PLAN_FILE, TIMING_CACHE

HardwareCompatibility = Literal["none", "ampere_plus", "same_compute_capability"]


@app.command("check-trt")
@output_options
def check_trt_cli(
    model: Path = typer.Argument(..., help="A Q/DQ ONNX model, e.g. RUN/model.int8.trt.onnx."),
) -> None:
    """Check a model offline against TensorRT's explicit-quantization rules; exit 1 on any violation."""
    from levit_edge.quant.trt_rules import check_trt_ready, count_qdq

    violations = check_trt_ready(model)
    for v in violations:
        console.print(f"{v.rule}: {v}", markup=False, soft_wrap=True)
    found = [{"rule": v.rule, "message": str(v)} for v in violations]
    if violations:
        set_result({"status": "violations", "model": str(model), "violations": found})
        raise UserError(f"{model}: {len(violations)} TensorRT rule violation(s)")
    q, dq = count_qdq(model)
    summary(
        f"{model}: TensorRT-ready ({q} QuantizeLinear, {dq} DequantizeLinear)",
        {
            "status": "ok",
            "model": str(model),
            "violations": [],
            "quantize_linear": q,
            "dequantize_linear": dq,
        },
    )


@app.command("build-engine")
@output_options
def build_engine_cli(
    model: Path = typer.Argument(..., help="RUN/model.int8.trt.onnx (or any TensorRT-ready ONNX)."),
    plan: Path | None = typer.Option(
        None, "--plan", help="Engine file [default: model.int8.plan beside the model]."
    ),
    timing_cache: Path | None = typer.Option(
        None,
        "--timing-cache",
        help="Timing cache reused across builds [default: timing.cache beside the model].",
    ),
    min_batch: int = typer.Option(1, "--min-batch", help="Optimization profile: smallest batch."),
    opt_batch: int = typer.Option(1, "--opt-batch", help="Optimization profile: batch tuned for."),
    max_batch: int = typer.Option(8, "--max-batch", help="Optimization profile: largest batch."),
    workspace_mb: int = typer.Option(1024, "--workspace-mb", help="Builder workspace limit in MiB."),
    version_compatible: bool = typer.Option(
        False, "--version-compatible", help="Build a version-compatible engine."
    ),
    hardware_compatibility: HardwareCompatibility = typer.Option(
        "none", "--hardware-compatibility", help="Engine portability across GPUs."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing engine file."),
) -> None:
    """Build a TensorRT engine (strongly typed, explicit quantization) on this GPU host.

    Exit 4 where TensorRT or a GPU is missing, with the equivalent trtexec command to run on the target.
    """
    from levit_edge.backends.trt_build import TRTEXEC_LOCATIONS, EngineSettings
    from levit_edge.flows.engine import build_engine_file

    plan_path = plan or model.with_name(PLAN_FILE)
    request = EngineSettings(
        onnx_path=model,
        plan_path=plan_path,
        timing_cache_path=timing_cache or model.with_name(TIMING_CACHE),
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_mb=workspace_mb,
        version_compatible=version_compatible,
        hardware_compatibility=hardware_compatibility,
    )
    try:
        outcome = build_engine_file(request, force=force)
    except EngineUnavailable as exc:
        trtexec = exc.result.trtexec
        console.print(f"equivalent command on the target: {trtexec}", markup=False, soft_wrap=True)
        console.print(f"trtexec: {'; '.join(TRTEXEC_LOCATIONS)}", markup=False, soft_wrap=True)
        set_result(
            {"status": Status.NO_ENGINE, "model": str(model), "trtexec": trtexec, "reason": exc.result.reason}
        )
        raise
    d = outcome.details
    summary(
        f"engine {plan_path} built in {d['seconds']:.1f}s with TensorRT {d['tensorrt_version']} "
        f"on {d['gpu']}, batch {d['batch_range'][0]}-{d['batch_range'][2]}",
        {
            "status": "ok",
            "plan": str(plan_path),
            "seconds": d["seconds"],
            "tensorrt_version": d["tensorrt_version"],
            "gpu": d["gpu"],
            "batch_range": d["batch_range"],
        },
    )
