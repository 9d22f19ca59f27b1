"""``levit-edge bench RUN``: time every variant of a finished run side by side, and keep the results."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from levit_edge.artifacts import Artifact
from levit_edge.bench import (
    BenchResult,
    BenchSettings,
    RunnerFactory,
    openvino_factories,
    ort_factory,
    results_table,
    skipped_variants,
    time_variants,
    torch_factories,
)
from levit_edge.errors import UserError
from levit_edge.export.metadata import fixed_batch_of
from levit_edge.model.load import ModelSpec
from levit_edge.report import build
from levit_edge.report.write import write_reports
from levit_edge.runs.finished import FinishedRun


@dataclass(frozen=True)
class BenchVariants:
    """Which optional variants to time besides the run's own models."""

    torch: bool = True  # PyTorch eager, original and fused (needs the checkpoint where the run recorded it)
    compile: bool = True  # torch.compile of the timm model (with ``torch``)
    openvino: bool = True  # OpenVINO on the ONNX files, where it is installed


@dataclass(frozen=True)
class BenchOutcome:
    """The timed rows, the settings they were timed at, and the baselines the ratios are against."""

    run_dir: Path
    results: list[BenchResult]
    settings: BenchSettings
    baselines: tuple[str, ...]
    variants: int
    saved: bool

    def rows(self) -> list[dict[str, Any]]:
        return results_table(self.results)


def bench_run(
    run_dir: Path,
    settings: BenchSettings,
    variants: BenchVariants = BenchVariants(),
    *,
    save: bool = True,
    batches_given: bool = True,
    progress: Callable[[str], None] | None = None,
    skipped: Callable[[str, str], None] | None = None,
) -> BenchOutcome:
    """Time the run's variants at ``settings``; with ``save`` store them in its report.json (``bench``,
    and ``latency`` where a bench point is the first one) as one all-or-nothing rewrite, after checking
    the run against its manifest (before minutes of timing). A model exported with a fixed ``--batch N``
    is timed at N only (``batches_given``: the user asked for other sizes, which is an error then).
    ``skipped(variant, reason)`` hears of each optional variant this machine cannot time, once the run
    has been checked."""
    run = FinishedRun.open(
        run_dir, "save benchmark results into" if save else None, manifest=save, hint="; pass --no-save"
    )
    fixed = fixed_batch_of(run.fp32)
    if fixed is not None and settings.batches != (fixed,):
        # the model takes exactly that batch: any other size would not run (or time a padded call)
        if batches_given:
            raise UserError(f"{run_dir} was exported with --batch {fixed}: --batches can only be {fixed}")
        settings = replace(settings, batches=(fixed,))
    factories, input_size = variant_factories(run, variants)  # checks every model against the manifest
    if skipped is not None:
        for name, reason in skipped_variants(variants.torch, variants.compile, variants.openvino).items():
            skipped(name, reason)
    # the load before timing starts (the benchmark's own threads would count once it runs)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    settings = replace(settings, input_size=input_size, load_average=load)
    baselines = tuple(b for b in (Artifact.FP32, "torch") if b in factories)
    results = time_variants(factories, settings, baselines, progress=progress)
    outcome = BenchOutcome(run_dir, results, settings, baselines, len(factories), save)
    if save:
        report = run.report()
        build.merge(report, build.bench_section(outcome.rows(), asdict(settings)))
        build.merge(report, build.latency(report))
        run.rewrite(lambda folder: write_reports(folder, report))
    return outcome


def variant_factories(
    run: FinishedRun, variants: BenchVariants
) -> tuple[dict[str, RunnerFactory], tuple[int, int, int]]:
    """Runner factories for every model of the run (and PyTorch eager and ``torch.compile`` when its
    checkpoint is still where the manifest says; OpenVINO on the ONNX files when importable), plus the
    model's input size. levit_edge.bench.skipped_variants says why an optional variant is missing."""
    preprocess = run.preprocess()  # every model takes the same images
    factories: dict[str, RunnerFactory] = {}
    spec = _recorded_model(run) if variants.torch else None
    if spec is not None:
        factories.update(torch_factories(spec, variants.compile))
    models = run.onnx_models()
    factories.update({str(key): ort_factory(path) for key, path in models.items()})
    plan = run.file(Artifact.INT8_PLAN)
    if plan is not None:
        from levit_edge.backends.tensorrt import TensorRTRunner
        from levit_edge.backends.trt_env import tensorrt_unavailable_reason

        if tensorrt_unavailable_reason() is None:
            compatible = plan_is_version_compatible(run)
            factories[Artifact.INT8_PLAN] = lambda threads: TensorRTRunner(
                plan, version_compatible=compatible
            )
    if variants.openvino:
        factories.update(openvino_factories({str(k): p for k, p in models.items()}))
    return factories, preprocess.input_size


def _recorded_model(run: FinishedRun) -> ModelSpec | None:
    """The model the run was exported from, where its checkpoint is still on this machine."""
    options = run.options()
    opts = options.get("model") or {}
    if not opts:
        return None
    checkpoint = opts.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_file():
        return None
    classes = opts.get("num_classes") or run.manifest().get("model", {}).get("classes")
    return ModelSpec(
        name=opts["name"],
        checkpoint=Path(checkpoint) if checkpoint else None,
        num_classes=classes,
        img_size=opts.get("img_size"),
    )


def plan_is_version_compatible(run: FinishedRun) -> bool:
    """Whether the run's engine was built version-compatible (its report's engine options say so):
    such a plan embeds the lean runtime and loads only with host code allowed."""
    try:
        options = run.report().get("options")
    except UserError:
        return False
    engine = options.get("engine") if isinstance(options, dict) else None
    return isinstance(engine, dict) and engine.get("version_compatible") is True
