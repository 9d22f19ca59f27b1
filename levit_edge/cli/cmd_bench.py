"""``levit-edge bench``: latency and throughput of every variant of a run, side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from levit_edge.bench import BenchSettings, results_table, run_dir_factories, time_variants
from levit_edge.cli.app import app, console, err_console
from levit_edge.cli.common import summary
from levit_edge.errors import UserError


def _ints(text: str, what: str, allow_all: bool = False) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if allow_all and part == "all":
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise UserError(f"{what} must be a comma-separated list of integers, got '{text}'") from None
    return tuple(out)


@app.command("bench")
def bench_cli(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'levit-edge export'."),
    batches: str | None = typer.Option(
        None,
        "--batches",
        help="Comma-separated batch sizes [default: 1,16; a --batch N model: N].",
    ),
    threads: str = typer.Option(
        "all", "--threads", help="Comma-separated thread counts ('all' = every core)."
    ),
    rounds: int = typer.Option(5, "--rounds", help="Interleaved rounds over all variants."),
    repeat: int = typer.Option(10, "--repeat", help="Timed calls per variant per round."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed calls per variant first."),
    budget: float | None = typer.Option(
        None,
        "--budget",
        help="Seconds of timed calls per batch/thread point: fewer --repeat calls where variants are slow.",
    ),
    torch_models: bool = typer.Option(
        True, "--torch/--no-torch", help="Include PyTorch eager (original and fused)."
    ),
    save: bool = typer.Option(
        True, "--save/--no-save", help="Store the results in report.json (and re-hash)."
    ),
) -> None:
    """Time PyTorch eager, ONNX Runtime FP32/INT8 and the TensorRT Q/DQ model (and engine) in one process."""
    from levit_edge.pipeline import FP32_FILE, fixed_batch_of

    fixed = fixed_batch_of(run_dir / FP32_FILE) if (run_dir / FP32_FILE).is_file() else None
    batch_values = tuple(b for b in _ints(batches or "1,16", "--batches") if b is not None)
    if fixed is not None:
        # the model takes exactly that batch: any other size would not run (or time a padded call)
        if batches is not None and batch_values != (fixed,):
            raise UserError(f"{run_dir} was exported with --batch {fixed}: --batches can only be {fixed}")
        batch_values = (fixed,)
    settings = BenchSettings(
        batches=batch_values,
        threads=_ints(threads, "--threads", allow_all=True),
        rounds=rounds,
        per_round=repeat,
        warmup=warmup,
        budget_s=budget,
    )
    factories, input_size = run_dir_factories(run_dir, torch_models)
    settings = BenchSettings(**{**settings.__dict__, "input_size": input_size})
    baselines = tuple(b for b in ("fp32", "torch") if b in factories)
    results = time_variants(
        factories, settings, baselines, progress=lambda m: err_console.print(f"[dim]timing {m}[/dim]")
    )
    table = Table(
        "variant",
        "batch",
        "threads",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "img/s",
        *(f"x vs {b}" for b in baselines),
    )
    for r in results:
        table.add_row(
            r.variant,
            str(r.batch),
            str(r.threads or "all"),
            f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.throughput:.1f}",
            *(f"{r.ratios.get(b, float('nan')):.2f}" for b in baselines),
        )
    console.print(table)
    if save:
        from levit_edge.pipeline import save_bench

        save_bench(run_dir, results_table(results), settings)
    best = {
        r.variant: r for r in results if r.batch == settings.batches[0] and r.threads == settings.threads[0]
    }
    if "int8.ort" in best and "fp32" in best:
        summary(
            f"batch {settings.batches[0]}: int8.ort {best['int8.ort'].p50_ms:.2f} ms vs fp32 "
            f"{best['fp32'].p50_ms:.2f} ms (x{best['int8.ort'].ratios.get('fp32', 0):.2f})"
        )
    else:
        summary(f"timed {len(factories)} variants at {len(settings.batches)} batch sizes")
