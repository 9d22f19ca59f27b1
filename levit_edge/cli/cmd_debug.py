"""``levit-edge debug``: per-layer quantization sensitivity of a run's INT8 models, ranked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Column, Table

from levit_edge.cli.app import app, console
from levit_edge.cli.common import RichHooks, summary
from levit_edge.cli.output import output_options
from levit_edge.settings import FallbackSettings

if TYPE_CHECKING:  # ONNX Runtime is imported when the command runs
    from levit_edge.quant.sensitivity import Sensitivity

SQNR_SAMPLES = FallbackSettings.samples  # levit_edge.quant.sensitivity.SQNR_SAMPLES
RANK_IMAGES = FallbackSettings.rank_images  # levit_edge.quant.sensitivity.RANK_IMAGES


def _db(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


def sensitivity_table(result: Sensitivity, top: int) -> Table:
    """The ranked table printed for one artifact."""
    table = Table(
        "#",
        Column("node", overflow="fold"),
        "op",
        Column("SQNR dB", justify="right"),
        Column("in dB", justify="right"),
        Column("w dB", justify="right"),
        Column("agree +pts", justify="right"),
        Column("KL alone", justify="right"),
        Column("KL removed", justify="right"),
        title=f"{result.artifact} ({result.profile} profile): all-INT8 agreement "
        f"{result.base_agreement:.2f}%, KL {result.base_kl:.2e}; {result.calib_samples} calibration / "
        f"{result.rank_images} validation images",
        title_justify="left",
    )
    for layer in result.layers[:top]:
        table.add_row(
            str(layer.rank),
            layer.node,
            layer.op_type,
            _db(layer.sqnr_db),
            _db(layer.input_sqnr_db),
            _db(layer.weight_sqnr_db),
            f"{layer.agreement_delta:+.2f}",
            f"{layer.kl:.1e}",
            f"{layer.kl_gain:+.1e}",
        )
    return table


@app.command("debug")
@output_options
def debug_cli(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'levit-edge export --int8'."),
    val: Path | None = typer.Option(
        None, "--val", help="Validation images (default: the run's --val) for each layer's effect in float."
    ),
    calib: Path | None = typer.Option(
        None, "--calib", help="Calibration images (default: the run's --calib) for the SQNR pass."
    ),
    samples: int = typer.Option(SQNR_SAMPLES, "--samples", help="Calibration images for the SQNR pass."),
    rank_images: int = typer.Option(
        RANK_IMAGES, "--rank-images", help="Validation images (seeded subset) for the in-float effect."
    ),
    top: int = typer.Option(20, "--top", help="Rows to print per INT8 model (all are saved)."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    save: bool = typer.Option(
        True, "--save/--no-save", help="Store the ranking in report.json (and re-hash)."
    ),
) -> None:
    """Rank every quantized layer: SQNR vs FP32 and the agreement/KL it costs, most harmful first.

    For each quantized node: SQNR (dB) of its output in the INT8 model vs the FP32 model (on calibration
    images, via onnxruntime's qdq_loss_debug), the local SQNR of its quantized inputs and weights, and the
    top-1 agreement and KL vs FP32 when that node alone stays in float. Ranked by the KL removed.
    """
    from levit_edge.errors import UserError
    from levit_edge.flows.debug import debug_run

    if samples < 0 or rank_images < 1 or top < 1:
        raise UserError("--samples must be >= 0, --rank-images and --top >= 1")
    with RichHooks(lines=True) as hooks:
        results = debug_run(
            run_dir,
            val,
            calib,
            samples,
            rank_images,
            threads,
            lambda task: lambda done, total: hooks.progress(task, done, total),
            save=save,
        )
    # node names are long and meant to be copied whole: off a terminal the console has no width limit
    for result in results:
        console.print(sensitivity_table(result, top))
    worst = ", ".join(f"{r.artifact}: {r.layers[0].node}" for r in results if r.layers)
    summary(
        f"most harmful layer {worst}" + (f"; saved in {run_dir / 'report.json'}" if save else ""),
        {
            "status": "ok",
            "run_dir": str(run_dir),
            "saved": save,
            "sensitivity_info": [r.summary() for r in results],
            "sensitivity": [row for r in results for row in r.rows()[:top]],
        },
    )
