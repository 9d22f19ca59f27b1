"""``levit-edge validate`` and ``levit-edge verify``: re-check a finished run."""

from __future__ import annotations

from pathlib import Path

import typer

from levit_edge.cli.app import app, console, result_document
from levit_edge.cli.common import RichHooks, summary
from levit_edge.cli.output import output_options
from levit_edge.errors import RunMismatch
from levit_edge.settings import EXPORT_DEFAULTS


@app.command("validate")
@output_options
def validate_cli(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'levit-edge export'."),
    val: Path = typer.Option(
        ..., "--val", help="Validation images: folder, class folders, list file, .npy/.npz."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Base folder of list-file paths."),
    exclude: Path | None = typer.Option(None, "--exclude", help="List of image names to leave out."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip unreadable images (counted in the report)."
    ),
    max_drop: float = typer.Option(
        EXPORT_DEFAULTS["max_drop"],
        "--max-drop",
        help="Largest allowed top-1 drop in points; above it exit 3.",
    ),
    batch_size: int = typer.Option(
        EXPORT_DEFAULTS["batch_size"], "--batch-size", help="Validation batch size."
    ),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    class_order: str = typer.Option(
        "natural", "--class-order", help="Class folder order: natural (timm: 1, 2, 10) | lexical (1, 10, 2)."
    ),
    class_list: Path | None = typer.Option(
        None, "--class-list", help="Class names, one per line, line i = class i (wins over --class-order)."
    ),
    allow_chance_accuracy: bool = typer.Option(
        False, "--allow-chance-accuracy", help="Accept labelled FP32 top-1 at or below chance."
    ),
    platform: str | None = typer.Option(
        None, "--platform", help="Also check the CPU models on this CPU under emulation: aarch64."
    ),
    platform_images: int = typer.Option(64, "--platform-images", help="Images of --val checked there."),
    platform_seed: int = typer.Option(0, "--platform-seed", help="Seed of that subset."),
    platform_cache: Path | None = typer.Option(
        None, "--platform-cache", help="Where setup-platform put it [default: ~/.cache/levit-edge/platforms]."
    ),
) -> None:
    """Re-validate every model of a run on a validation set; update its reports and manifest.

    Exit 3 when the accuracy gate fails.
    """
    from levit_edge.settings import GateSettings, PlatformSettings, RuntimeSettings

    # checked before the heavy imports below (torch, timm): a bad value fails in a second
    emulated = (
        PlatformSettings(platform, platform_images, platform_seed, platform_cache) if platform else None
    )
    from levit_edge.cli.cmd_export import describe_result
    from levit_edge.data.sources import DataSpec
    from levit_edge.flows.validate import validate_run

    spec = DataSpec(val, data_root, None, 0, skip_bad, exclude, class_order, class_list)
    with RichHooks() as hooks:
        result = validate_run(
            run_dir,
            spec,
            GateSettings(max_drop, allow_chance=allow_chance_accuracy),
            RuntimeSettings(batch_size=batch_size, threads=threads),
            hooks,
            emulated,
        )
    text = describe_result(result)
    if emulated:
        from levit_edge.platforms.check import describe_check

        text += f"; {describe_check(result.report)}"
    summary(text, result_document(result))


@app.command("verify")
@output_options
def verify_cli(run_dir: Path = typer.Argument(..., help="A run directory with a manifest.json.")) -> None:
    """Re-hash every file of a run against its manifest; exit 5 on any mismatch (1: not a run)."""
    from levit_edge.api import verify
    from levit_edge.cli.output import log, set_result

    log.debug("%s: re-hashing every file against manifest.json", run_dir)
    try:
        verify(run_dir)
    except RunMismatch as exc:
        for line in exc.problems:
            console.print(f"mismatch: {line}", markup=False)
        set_result({"status": "mismatch", "run_dir": str(run_dir), "mismatches": exc.problems})
        raise
    summary(
        f"{run_dir}: every file matches manifest.json",
        {"status": "ok", "run_dir": str(run_dir), "mismatches": []},
    )
