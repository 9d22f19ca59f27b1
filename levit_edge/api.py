"""The Python API: every command as a function, with the CLI's defaults (``settings.EXPORT_DEFAULTS``).

Functions return data and print nothing. Failures raise the exceptions of :mod:`levit_edge.errors`:
:class:`UserError` for bad input, :class:`AccuracyGateFailed` / :class:`EngineUnavailable` carrying the
finished run as ``result``, :class:`RunMismatch` from :func:`verify`. Heavy libraries (torch, timm,
ONNX Runtime) are imported by the functions that need them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from levit_edge.errors import RunMismatch, UserError
from levit_edge.settings import CONFIG_KEYS, EXPORT_DEFAULTS, FallbackSettings, load_config, unknown_key

if TYPE_CHECKING:
    from levit_edge.flows.job import ExportJob, RunResult
    from levit_edge.quant.trt_rules import Violation


def export_job(
    options: Mapping[str, Any], command: tuple[str, ...] = (), config: Path | None = None
) -> ExportJob:
    """An export job from option values named like the config keys; missing ones take their defaults.
    ``config``: the TOML file the options came from (recorded in the run by name and sha256)."""
    from levit_edge.data.sources import DataSpec
    from levit_edge.export.onnx import ExportSettings
    from levit_edge.flows.job import EngineOptions, ExportJob
    from levit_edge.model.load import ModelSpec
    from levit_edge.settings import FallbackSettings, GateSettings, QuantSettings, RuntimeSettings, Targets

    given: dict[str, Any] = {}
    for key, value in options.items():
        norm = key.replace("-", "_")
        if norm not in CONFIG_KEYS:
            raise unknown_key(key, "export option")
        given[norm] = value
    o = {**EXPORT_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}

    def path(key: str) -> Path | None:
        return Path(o[key]) if o[key] is not None else None

    quant = QuantSettings(
        method=o["calib_method"],
        percentile=float(o["percentile"]),
        calib_size=o["calib_size"],
        trt_fp16=o["trt_fp16"],
        ort_profile=o["ort_profile"],
    )
    budget = o["accuracy_budget"]
    fallback = FallbackSettings(
        budget=float(budget) if budget is not None else None, max_float_layers=o["max_float_layers"]
    )
    calib, val, data_root = path("calib"), path("val"), path("data_root")
    order, classes = o["class_order"], path("class_list")
    return ExportJob(
        model=ModelSpec(
            name=o["model"],
            checkpoint=path("checkpoint"),
            num_classes=o["num_classes"],
            img_size=o["img_size"],
            pretrained=o["pretrained"],
            checkpoint_key=o["checkpoint_key"],
        ),
        export=ExportSettings(opset=o["opset"], batch=o["batch"]),
        targets=Targets.parse(o["target"], o["int8"], o["engine"], o["ort_format_fp32"]),
        calib=DataSpec(calib, data_root, quant.calib_size, o["seed"], o["skip_bad"], None, order, classes)
        if calib
        else None,
        val=DataSpec(val, data_root, None, o["seed"], o["skip_bad"], path("exclude"), order, classes)
        if val
        else None,
        quant=quant,
        # the accuracy budget is the gate too: a run that met it passes, one that could not fails (exit 3)
        gate=GateSettings(
            max_drop=fallback.budget if fallback.budget is not None else float(o["max_drop"]),
            allow_chance=o["allow_chance_accuracy"],
        ),
        fallback=fallback,
        runtime=RuntimeSettings(batch_size=o["batch_size"], threads=o["threads"], seed=o["seed"]),
        engine=EngineOptions(workspace_mb=o["workspace_mb"], max_batch=o["max_batch"]),
        out=Path(o["out"]),
        name=o["name"],
        force=o["force"],
        command=command,
        config=config,
    )


def job_from_config(path: str | Path, **overrides: Any) -> ExportJob:
    """The job a TOML config describes (``levit-edge export --config``); ``overrides`` win over the file."""
    return export_job({**load_config(Path(path)), **overrides})


def export(checkpoint: str | Path | None = None, **options: Any) -> RunResult:
    """``levit-edge export``: run the pipeline; options as in the config file (``target="ort"``, ...).

    Raises :class:`AccuracyGateFailed` (``.result``: the kept run) when the gate fails.
    """
    from levit_edge.flows.export import run_export

    return run_export(export_job({"checkpoint": checkpoint, **options}))


def run(job: ExportJob) -> RunResult:
    """Run a job made by :func:`export_job` or :func:`job_from_config`."""
    from levit_edge.flows.export import run_export

    return run_export(job)


def validate(
    run_dir: str | Path,
    val: str | Path,
    *,
    max_drop: float = EXPORT_DEFAULTS["max_drop"],
    data_root: str | Path | None = None,
    exclude: str | Path | None = None,
    skip_bad: bool = False,
    batch_size: int = EXPORT_DEFAULTS["batch_size"],
    threads: int | None = None,
    class_order: str = EXPORT_DEFAULTS["class_order"],
    class_list: str | Path | None = None,
    allow_chance_accuracy: bool = EXPORT_DEFAULTS["allow_chance_accuracy"],
    platform: str | None = None,
    platform_images: int = 64,
    platform_seed: int = 0,
    platform_cache: str | Path | None = None,
) -> RunResult:
    """``levit-edge validate``: re-check a run's models on ``val``; rewrites its reports and manifest.
    ``platform="aarch64"`` also checks its CPU models on that CPU under emulation (``setup-platform``)."""
    from levit_edge.data.sources import DataSpec
    from levit_edge.flows.validate import validate_run
    from levit_edge.settings import GateSettings, PlatformSettings, RuntimeSettings

    emulated = (
        PlatformSettings(
            platform, platform_images, platform_seed, Path(platform_cache) if platform_cache else None
        )
        if platform
        else None
    )
    spec = DataSpec(
        Path(val),
        Path(data_root) if data_root else None,
        None,
        0,
        skip_bad,
        Path(exclude) if exclude else None,
        class_order,
        Path(class_list) if class_list else None,
    )
    gate = GateSettings(max_drop, allow_chance=allow_chance_accuracy)
    runtime = RuntimeSettings(batch_size=batch_size, threads=threads)
    return validate_run(Path(run_dir), spec, gate, runtime, None, emulated)


def bench(
    run_dir: str | Path,
    *,
    batches: tuple[int, ...] | None = None,
    threads: tuple[int | None, ...] = (None,),
    rounds: int = 5,
    repeat: int = 10,
    warmup: int = 5,
    budget: float | None = None,
    torch_models: bool = True,
    compile_torch: bool = True,
    openvino: bool = True,
    save: bool = False,
) -> list[dict[str, Any]]:
    """``levit-edge bench``: time every variant of a run side by side; the rows ``report.json`` keeps
    (``variant``, ``batch``, ``threads``, ``threads_used``, ``p50_ms``, ...). ``save=True`` stores them in
    the run (after checking it against its manifest). ``batches``: default 1 and 16 (a model exported
    with a fixed batch: that one); ``threads``: ``None`` means every core."""
    from levit_edge.bench import BenchSettings
    from levit_edge.flows.bench import BenchVariants, bench_run

    settings = BenchSettings(
        batches=batches or (1, 16),
        threads=threads,
        warmup=warmup,
        rounds=rounds,
        per_round=repeat,
        budget_s=budget,
    )
    variants = BenchVariants(torch=torch_models, compile=compile_torch, openvino=openvino)
    return bench_run(Path(run_dir), settings, variants, save=save, batches_given=batches is not None).rows()


def debug(
    run_dir: str | Path,
    *,
    val: str | Path | None = None,
    calib: str | Path | None = None,
    samples: int = FallbackSettings.samples,
    rank_images: int = FallbackSettings.rank_images,
    threads: int | None = None,
    save: bool = False,
) -> list[dict[str, Any]]:
    """``levit-edge debug``: rank every quantized layer of each INT8 model of a run, most harmful first
    (the ``sensitivity`` rows of ``report.json``); ``save=True`` stores them in the run."""
    from levit_edge.flows.debug import debug_run

    results = debug_run(
        Path(run_dir),
        Path(val) if val else None,
        Path(calib) if calib else None,
        samples,
        rank_images,
        threads,
        save=save,
    )
    return [row for r in results for row in r.rows()]


def verify(run_dir: str | Path) -> None:
    """``levit-edge verify``: raise :class:`RunMismatch` (``.problems``) unless every file matches."""
    from levit_edge.runs.manifest import verify_manifest

    folder = Path(run_dir)
    if not folder.is_dir():
        raise UserError(f"not a run directory: {folder}")
    problems = verify_manifest(folder)
    if problems:
        names = [line.split(":", 1)[0] for line in problems]
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise RunMismatch(f"{folder}: {len(problems)} file(s) do not match manifest.json: {listed}", problems)


def inspect(path: str | Path) -> dict[str, Any]:
    """``levit-edge inspect``: a model, manifest or run directory described as plain data."""
    from levit_edge.inspect import inspect_path

    return inspect_path(Path(path))


def check_trt(model: str | Path) -> list[Violation]:
    """``levit-edge check-trt``: TensorRT explicit-quantization rule violations (empty: ready)."""
    from levit_edge.quant.trt_rules import check_trt_ready

    return check_trt_ready(Path(model))
