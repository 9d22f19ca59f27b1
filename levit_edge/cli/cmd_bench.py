"""``levit-edge bench``: latency and throughput of every variant of a run, side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from levit_edge.cli.app import app, console
from levit_edge.cli.common import summary
from levit_edge.cli.output import log, output_options
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


def _threads(requested: int | None, used: int | None) -> str:
    """The thread count a row ran at, as the runtime reported it; 'all' shown with its number."""
    if requested is None:
        return f"all ({used})" if used is not None else "all"
    return str(requested) if used in (None, requested) else f"{requested} (ran {used})"


@app.command("bench")
@output_options
def bench_cli(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'levit-edge export'."),
    batches: str | None = typer.Option(
        None,
        "--batches",
        help="Comma-separated batch sizes [default: 1,16] (for a --batch N model: only N).",
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
    compile_torch: bool = typer.Option(
        True, "--compile/--no-compile", help="Include torch.compile of the PyTorch model (with --torch)."
    ),
    openvino: bool = typer.Option(
        True, "--openvino/--no-openvino", help="Include OpenVINO on the ONNX files, when it is installed."
    ),
    save: bool = typer.Option(
        True, "--save/--no-save", help="Store the results in report.json (and re-hash)."
    ),
) -> None:
    """Time PyTorch eager, ONNX Runtime FP32/INT8 and the TensorRT Q/DQ model (and engine) in one process."""
    from levit_edge.bench import BenchSettings
    from levit_edge.flows.bench import BenchVariants, bench_run

    settings = BenchSettings(
        batches=tuple(b for b in _ints(batches or "1,16", "--batches") if b is not None),
        threads=_ints(threads, "--threads", allow_all=True),
        rounds=rounds,
        per_round=repeat,
        warmup=warmup,
        budget_s=budget,
    )
    outcome = bench_run(
        run_dir,
        settings,
        BenchVariants(torch=torch_models, compile=compile_torch, openvino=openvino),
        save=save,
        batches_given=batches is not None,
        progress=lambda m: log.info("timing %s", m),
        skipped=lambda name, reason: log.info("skipped %s: %s", name, reason),
    )
    results, settings, baselines = outcome.results, outcome.settings, outcome.baselines
    table = Table(
        Column("variant", no_wrap=True),
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
            _threads(r.threads, r.threads_used),
            f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.throughput:.1f}",
            *(f"{r.ratios.get(b, float('nan')):.2f}" for b in baselines),
        )
    if console.is_terminal:
        console.print(table)
    elif not console.quiet:  # -q and --json (stdout is the JSON document alone) print no table
        # a CI log, a pipe: as wide as the table needs, so no variant name or number is cut
        wide = console.options.update(max_width=100_000)
        width = max(console.width, console.measure(table, options=wide).maximum)
        Console(file=console.file, width=width, highlight=False, color_system=None).print(table)
    best = {
        r.variant: r for r in results if r.batch == settings.batches[0] and r.threads == settings.threads[0]
    }
    document = {"status": "ok", "run_dir": str(run_dir), "saved": save, "results": outcome.rows()}
    if "int8.ort" in best and "fp32" in best:
        summary(
            f"batch {settings.batches[0]}: int8.ort {best['int8.ort'].p50_ms:.2f} ms vs fp32 "
            f"{best['fp32'].p50_ms:.2f} ms (x{best['int8.ort'].ratios.get('fp32', 0):.2f})",
            document,
        )
    else:
        summary(f"timed {outcome.variants} variants at {len(settings.batches)} batch sizes", document)
