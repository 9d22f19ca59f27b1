"""``levit-edge validate RUN --val DIR``: re-check a finished run on a (new) validation set."""

from __future__ import annotations

from pathlib import Path

from levit_edge.artifacts import Artifact, Status
from levit_edge.backends.base import Runner
from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
from levit_edge.data.open_source import open_source
from levit_edge.data.sources import DataSpec
from levit_edge.errors import AccuracyGateFailed, UserError
from levit_edge.export.metadata import fixed_batch_of, preprocess_from_onnx
from levit_edge.flows.export import check_chance
from levit_edge.flows.job import Hooks, RunResult, StageTimer
from levit_edge.paths import check_lengths
from levit_edge.platforms import check as platforms
from levit_edge.report import build
from levit_edge.report.write import write_reports
from levit_edge.runs.finished import FinishedRun
from levit_edge.settings import GateSettings, PlatformSettings, RuntimeSettings
from levit_edge.validate.compare import evaluate
from levit_edge.validate.gate import apply_gate
from levit_edge.validate.sanity import check_labels_fit


def validate_run(
    run_dir: Path,
    val: DataSpec,
    gate_settings: GateSettings,
    runtime: RuntimeSettings,
    hooks: Hooks | None = None,
    platform: PlatformSettings | None = None,
) -> RunResult:
    """Re-validate every ONNX model of a finished run; update its reports and manifest in one step.
    With ``platform``, also check its CPU deliverables on that (emulated) CPU (levit_edge.platforms).

    Raises :class:`AccuracyGateFailed` (``result``: the updated run) when the gate fails.
    """
    check_lengths({"--val": val.path, "--data-root": val.data_root, "--exclude": val.exclude})
    run = FinishedRun.open(run_dir, "re-validate")
    prepared = None
    if platform is not None:  # not set up: one error line before any work
        versions = run.manifest().get("versions")
        release = versions.get("onnxruntime") if isinstance(versions, dict) else None
        prepared = platforms.prepare(release, platform, f"{run_dir}/manifest.json")
    timer = StageTimer(hooks)
    source = open_source(val)
    preprocess = run.preprocess()  # the manifest's, every model agreeing
    _, class_names, num_classes = preprocess_from_onnx(run.fp32)
    if source.class_names and num_classes and len(source.class_names) != num_classes:
        raise UserError(
            f"--val has {len(source.class_names)} class folders but the model has {num_classes} classes"
        )
    if source.class_names and class_names and tuple(source.class_names) != tuple(class_names):
        raise UserError("--val class folders differ from the class names the model was exported with")
    if num_classes:
        check_labels_fit(source, num_classes)
    fixed = fixed_batch_of(run.fp32)
    runners: dict[str, Runner] = {
        key: OnnxRuntimeRunner(path, runtime.threads) for key, path in run.onnx_models().items()
    }
    with timer.stage("validate"):
        evaluation = evaluate(
            runners, source, preprocess, fixed or runtime.batch_size, timer.progress("validate")
        )
    if num_classes:  # recorded by every levit-edge export; without it there is no chance level to test
        check_chance(evaluation, source, num_classes, gate_settings.allow_chance)
    comparisons = evaluation.comparisons(Artifact.FP32)
    gate = apply_gate(comparisons, gate_settings)
    checked = None
    if platform is not None and prepared is not None:
        models = [(k, run.path / f, opt) for k, f, opt in platforms.CPU_MODELS if (run.path / f).is_file()]
        with timer.stage(platform.platform):  # not recorded in stages: emulated time means nothing
            checked = platforms.check_platform(
                models, prepared, val, preprocess, platform, gate_settings, runtime.threads
            )
        gate = platforms.combined_gate(gate, checked)
    report = run.report()
    previous = report.get("status")
    status = (
        Status.FAILED
        if not gate.passed
        else (Status.NO_ENGINE if previous == Status.NO_ENGINE else Status.PASSED)
    )
    build.merge(
        build.without_validation(report),
        build.validation_sections(evaluation, comparisons, source, runtime.threads, gate),
        build.status(status),
        build.thresholds(gate_settings.max_drop),
        build.stages({"revalidate": timer.seconds["validate"]}, report.get("stages")),
    )
    if checked is not None:  # without the check, an earlier one stays dropped (build.VALIDATION_KEYS)
        build.merge(report, build.platforms_section(checked.platform, checked.to_dict()))
    build.merge(report, build.latency(report))
    run.rewrite(
        lambda folder: write_reports(folder, report),
        {
            "status": status,
            "validation_data_hash": report["validation"]["data_hash"],
            "class_order_rule": report["validation"]["class_order_rule"],
            **({"platforms": report["platforms"]} if "platforms" in report else {}),
        },
        remove=("platforms",),  # replaced by this validation's check, or dropped without one
    )
    result = RunResult(run_dir, status, report, gate, None)
    if not gate.passed:
        raise AccuracyGateFailed(
            f"accuracy gate failed ({'; '.join(gate.failures)}); report in {run_dir}", result
        )
    return result
