"""``levit-edge debug``: per-layer quantization sensitivity of a run's INT8 models, ranked."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from levit_edge.cli.app import app, console
from levit_edge.cli.common import RichHooks, summary
from levit_edge.quant.sensitivity import RANK_IMAGES, SQNR_SAMPLES, Sensitivity, measure_run


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
    from levit_edge.pipeline import save_sections

    if samples < 0 or rank_images < 1 or top < 1:
        raise UserError("--samples must be >= 0, --rank-images and --top >= 1")
    if save and (run_dir / "manifest.json").is_file():
        from levit_edge.report.manifest import require_intact

        require_intact(run_dir, "save the ranking into")  # before minutes of measuring
    with RichHooks() as hooks:
        results = measure_run(
            run_dir,
            val,
            calib,
            samples,
            rank_images,
            threads,
            lambda task: lambda done, total: hooks.progress(task, done, total),
        )
    # node names are long and meant to be copied whole: at least 160 columns even in a pipe (rich says 80)
    wide = Console(width=max(console.width, 160), highlight=False)
    for result in results:
        wide.print(sensitivity_table(result, top))
    if save:
        save_sections(
            run_dir,
            {
                "sensitivity": [row for r in results for row in r.rows()],
                "sensitivity_info": [r.summary() for r in results],
            },
        )
    worst = ", ".join(f"{r.artifact}: {r.layers[0].node}" for r in results if r.layers)
    summary(f"most harmful layer {worst}" + (f"; saved in {run_dir / 'report.json'}" if save else ""))
