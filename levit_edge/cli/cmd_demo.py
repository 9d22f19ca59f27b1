"""``levit-edge demo``: the whole pipeline offline, on a generated image set and a LeViT trained here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from levit_edge.cli.app import app, result_document
from levit_edge.cli.common import RichHooks, summary
from levit_edge.cli.output import log, output_options
from levit_edge.errors import UserError
from levit_edge.settings import EXPORT_DEFAULTS, GateSettings, Targets


def default_cache() -> Path:
    """Where the generated fixture is kept between runs ($LEVIT_EDGE_CACHE or ~/.cache/levit-edge)."""
    root = os.environ.get("LEVIT_EDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "levit-edge"
    )
    return Path(root)


@app.command("demo")
@output_options
def demo_cli(
    out: Path = typer.Option(Path("artifacts"), "--out", "-o", help="Output root."),
    name: str | None = typer.Option(None, "--name", help="Run directory name [default: demo-TIMESTAMP]."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run directory."),
    cache: Path | None = typer.Option(None, "--cache", help="Fixture cache [default: ~/.cache/levit-edge]."),
    max_drop: float = typer.Option(
        EXPORT_DEFAULTS["max_drop"], "--max-drop", help="Largest allowed top-1 drop in points."
    ),
) -> None:
    """Generate a labelled image set, train a small LeViT on it (cached), and export FP32 + INT8 models
    for ONNX Runtime and TensorRT with the accuracy gate: no network, no downloads."""
    from datetime import UTC, datetime

    from levit_edge.cli.cmd_export import describe_result
    from levit_edge.data.sources import DataSpec
    from levit_edge.fixture.cache import ensure_fixture
    from levit_edge.flows.export import run_export
    from levit_edge.flows.job import ExportJob
    from levit_edge.model.load import ModelSpec
    from levit_edge.runs.staging import StagedRun

    # Check the options before generating the fixture (minutes): a bad value must fail in a second.
    gate = GateSettings(max_drop=max_drop)
    run_name = name or f"demo-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    StagedRun.check_name(run_name)
    if (out / run_name).exists() and not force:
        raise UserError(f"run directory {out / run_name} already exists; pass --force to replace it")
    log.info("preparing the demo fixture (generated once, then cached; about 1-2 minutes)")
    data, fixture, checkpoint = ensure_fixture(cache or default_cache(), progress=log.info)
    job = ExportJob(
        model=ModelSpec(fixture.model_name, checkpoint, len(fixture.classes), fixture.img_size),
        targets=Targets.parse("all", int8=True, engine=False),
        calib=DataSpec(data.calib),
        val=DataSpec(data.val),
        gate=gate,
        out=out,
        name=run_name,
        force=force,
        command=("levit-edge", *sys.argv[1:]),
    )
    with RichHooks() as hooks:
        result = run_export(job, hooks)
    summary(describe_result(result), result_document(result))
