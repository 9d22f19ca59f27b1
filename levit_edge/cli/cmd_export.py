"""``levit-edge export``: checkpoint to fused ONNX, INT8 models, validation report and manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from levit_edge.artifacts import Status
from levit_edge.cli.app import app, result_document
from levit_edge.cli.common import RichHooks, summary
from levit_edge.cli.output import output_options
from levit_edge.settings import DEFAULT_OPSET, CalibMethod, OrtProfileName, Target, load_config

if TYPE_CHECKING:  # the pipeline (torch, timm) is imported when the command runs, not for --help
    from levit_edge.flows.job import RunResult

_DATA = "Data"
_QUANT = "Quantization"
_OUT = "Output"


@app.command("export")
@output_options
def export_cli(
    model: str | None = typer.Option(
        None, "--model", "-m", help="timm LeViT name, e.g. levit_128s [default: levit_128s]"
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        "-c",
        help="Weights: timm/training state_dict, safetensors or facebookresearch LeViT.",
    ),
    checkpoint_key: str | None = typer.Option(
        None,
        "--checkpoint-key",
        help="Weight set of a training checkpoint (model, model_ema, state_dict_ema, ...) "
        "[default: the checkpoint project's own choice].",
    ),
    num_classes: int | None = typer.Option(
        None, "--num-classes", help="Classifier size (default: from the checkpoint)."
    ),
    img_size: int | None = typer.Option(
        None, "--img-size", help="Input resolution the model was trained at [default: 224]."
    ),
    pretrained: bool | None = typer.Option(
        None, "--pretrained/--no-pretrained", help="Load timm's hub weights (needs network)."
    ),
    target: Target | None = typer.Option(None, "--target", "-t", help="What to build [default: onnx]."),
    int8: bool | None = typer.Option(None, "--int8/--no-int8", help="Quantize to INT8 (needs --calib)."),
    opset: int | None = typer.Option(None, "--opset", help=f"ONNX opset (13-21) [default: {DEFAULT_OPSET}]"),
    batch: int | None = typer.Option(None, "--batch", help="Fixed batch size (default: dynamic batch)."),
    calib: Path | None = typer.Option(
        None, "--calib", help="Calibration images: folder, list file, .npy/.npz.", rich_help_panel=_DATA
    ),
    val: Path | None = typer.Option(
        None, "--val", help="Validation images (class folders give top-1/top-5).", rich_help_panel=_DATA
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Base folder of list-file paths.", rich_help_panel=_DATA
    ),
    calib_size: int | None = typer.Option(
        None,
        "--calib-size",
        help="Seeded subset of calibration images [default: 512].",
        rich_help_panel=_DATA,
    ),
    exclude: Path | None = typer.Option(
        None, "--exclude", help="List of image names to leave out of validation.", rich_help_panel=_DATA
    ),
    class_order: str | None = typer.Option(
        None,
        "--class-order",
        help="Class folder order: natural (timm: 1, 2, 10) | lexical (torchvision: 1, 10, 2) "
        "[default: natural].",
        rich_help_panel=_DATA,
    ),
    class_list: Path | None = typer.Option(
        None,
        "--class-list",
        help="Class names, one per line, line i = class i (wins over --class-order).",
        rich_help_panel=_DATA,
    ),
    allow_chance_accuracy: bool | None = typer.Option(
        None,
        "--allow-chance-accuracy/--no-allow-chance-accuracy",
        help="Accept labelled FP32 top-1 at or below chance (otherwise exit 1: labels do not fit).",
        rich_help_panel=_DATA,
    ),
    skip_bad: bool | None = typer.Option(
        None,
        "--skip-bad/--no-skip-bad",
        help="Skip unreadable images (counted in the report).",
        rich_help_panel=_DATA,
    ),
    calib_method: CalibMethod | None = typer.Option(
        None,
        "--calib-method",
        help="How activation ranges are set [default: minmax].",
        rich_help_panel=_QUANT,
    ),
    percentile: float | None = typer.Option(
        None,
        "--percentile",
        help="Percentile for --calib-method percentile [default: 99.999].",
        rich_help_panel=_QUANT,
    ),
    max_drop: float | None = typer.Option(
        None,
        "--max-drop",
        help="Largest allowed top-1 drop in points; above it exit 3 [default: 1.0].",
        rich_help_panel=_QUANT,
    ),
    accuracy_budget: float | None = typer.Option(
        None,
        "--accuracy-budget",
        help="Accuracy-aware INT8: when an INT8 model's top-1 drop exceeds POINTS, keep its most harmful "
        "layers in float until it fits; also the gate (replaces --max-drop). Exit 3 if no step fits.",
        rich_help_panel=_QUANT,
    ),
    max_float_layers: int | None = typer.Option(
        None,
        "--max-float-layers",
        help="Most layers --accuracy-budget may keep in float per INT8 model [default: 8].",
        rich_help_panel=_QUANT,
    ),
    ort_profile: OrtProfileName | None = typer.Option(
        None,
        "--ort-profile",
        help="ONNX Runtime INT8 recipe: ort (any CPU: stem convs in float) or ort-vnni (AVX-512 VNNI/AMX "
        "CPUs: QLinearConv stem) [default: ort]",
        rich_help_panel=_QUANT,
    ),
    trt_fp16: bool | None = typer.Option(
        None,
        "--trt-fp16/--no-trt-fp16",
        help="TensorRT model: float regions in FP16.",
        rich_help_panel=_QUANT,
    ),
    ort_format_fp32: bool | None = typer.Option(
        None,
        "--ort-format-fp32/--no-ort-format-fp32",
        help="With ort: also write model.fp32.ort (ONNX Runtime format; model.int8.ort is always written "
        "with --int8) and cover it in required_operators*.config.",
        rich_help_panel=_QUANT,
    ),
    engine: bool | None = typer.Option(
        None,
        "--engine/--no-engine",
        help="With trt: also build the engine here [default: engine]; --no-engine stops at the "
        "TensorRT-ready ONNX (build it on the target).",
        rich_help_panel=_QUANT,
    ),
    workspace_mb: int | None = typer.Option(
        None, "--workspace-mb", help="TensorRT builder workspace [default: 1024].", rich_help_panel=_QUANT
    ),
    max_batch: int | None = typer.Option(
        None, "--max-batch", help="TensorRT profile's largest batch [default: 8].", rich_help_panel=_QUANT
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Batch size for calibration and validation [default: 32]."
    ),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for subsets and parity inputs [default: 0]."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output root [default: artifacts].", rich_help_panel=_OUT
    ),
    name: str | None = typer.Option(
        None, "--name", help="Run directory name [default: MODEL-TIMESTAMP].", rich_help_panel=_OUT
    ),
    force: bool | None = typer.Option(
        None, "--force/--no-force", help="Replace an existing run directory.", rich_help_panel=_OUT
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML file with the same options (flags override)."
    ),
) -> None:
    """Export a LeViT to fused FP32 ONNX and, with --int8, to INT8 ONNX Runtime / TensorRT models.

    Exit codes: 0 success, 1 bad input, 2 usage error, 3 accuracy gate failed (artifacts kept),
    4 TensorRT engine not built here (everything else produced).
    """
    # every parameter but --config is named like its config key (settings.CONFIG_KEYS)
    flags = {k: v for k, v in locals().items() if k != "config"}
    from levit_edge.api import export_job
    from levit_edge.flows.export import run_export

    cfg: dict[str, Any] = load_config(config) if config else {}
    options = {**cfg, **{k: v for k, v in flags.items() if v is not None}}  # flag > config > default
    job = export_job(options, command=("levit-edge", *sys.argv[1:]), config=config)
    with RichHooks(lines=job.fallback.enabled) as hooks:
        result = run_export(job, hooks)
    summary(describe_result(result), result_document(result))


def describe_result(result: RunResult) -> str:
    """The closing line: status, accuracy and where the run is."""
    rep = result.report
    parts = [f"{result.status}:"]
    acc = rep.get("accuracy", {})
    for key, value in acc.items():
        drop = rep.get("drop", {}).get(key)
        parts.append(
            f"{key} top-1 {value['top1']:.2f}%" + (f" (drop {drop:+.2f})" if drop is not None else "") + ","
        )
    if not acc and rep.get("agreement"):
        parts.extend(f"{k} agreement {v:.2f}%," for k, v in rep["agreement"].items())
    for art, info in rep.get("accuracy_budget", {}).get("artifacts", {}).items():
        if info.get("promoted"):
            parts.append(f"{art} with {len(info.get('float_layers') or [])} layer(s) in float,")
    if result.status == Status.UNVALIDATED:
        parts.append("accuracy NOT checked (no --val),")
    parts.append(f"report {result.run_dir / 'report.html'}")
    return " ".join(parts)
