"""Side-by-side latency of every variant of a model, in one process, so their ratios compare.

Variants are timed in interleaved rounds (A B C A B C ...) rather than one after another, so that a
machine that slows down or speeds up mid-run shifts every variant alike and the ratios stay honest.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from levit_edge.backends.base import Runner
from levit_edge.errors import UserError
from levit_edge.settings import MAX_THREADS

RunnerFactory = Callable[[int | None], Runner]  # threads -> runner


# Limits of what a benchmark point may ask for: beyond them the request is a typo, not a measurement (a
# batch of 10**9 images would be allocated before the first call; an infinite budget overflows).
MAX_BATCH = 4096
MAX_CALLS = 100_000
MAX_BUDGET_S = 3600.0


@dataclass(frozen=True)
class BenchSettings:
    """What to time: batch sizes, thread counts, warm-up and repetitions."""

    batches: tuple[int, ...] = (1, 16)
    threads: tuple[int | None, ...] = (None,)
    warmup: int = 5
    rounds: int = 5
    per_round: int = 10
    input_size: tuple[int, int, int] = (3, 224, 224)
    budget_s: float | None = None  # set: fewer calls per round, so one point takes about this long
    # os.getloadavg() just before timing (a record, not a knob): the report flags a loaded machine
    load_average: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.batches or any(not 1 <= b <= MAX_BATCH for b in self.batches):
            raise UserError(f"--batches must be integers from 1 to {MAX_BATCH}, got {list(self.batches)}")
        if any(t is not None and not 1 <= t <= MAX_THREADS for t in self.threads):
            raise UserError(f"--threads must be between 1 and {MAX_THREADS}, got {list(self.threads)}")
        if not (
            1 <= self.rounds <= MAX_CALLS
            and 1 <= self.per_round <= MAX_CALLS
            and 0 <= self.warmup <= MAX_CALLS
        ):
            raise UserError(f"--rounds and --repeat must be 1 to {MAX_CALLS}, --warmup 0 to {MAX_CALLS}")
        if self.budget_s is not None and not 0 < self.budget_s <= MAX_BUDGET_S:
            raise UserError(f"--budget must be seconds in (0, {MAX_BUDGET_S:g}], got {self.budget_s}")


@dataclass(frozen=True)
class BenchResult:
    """Latency of one variant at one batch size and thread count."""

    variant: str
    batch: int
    threads: int | None
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # images per second at p50
    calls: int
    ratios: dict[str, float] = field(default_factory=dict)  # baseline name -> baseline_p50 / this_p50
    threads_used: int | None = None  # read back from the runtime after timing (None: not a CPU runner)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_variants(
    factories: Mapping[str, RunnerFactory],
    settings: BenchSettings,
    baselines: tuple[str, ...] = ("fp32",),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """Time every variant at every (batch, threads) point, interleaved, and attach speed-up ratios."""
    rng = np.random.default_rng(seed)
    results: list[BenchResult] = []
    for threads in settings.threads:
        # An ExitStack exits runners in the reverse order of entering: PyTorch's thread count is
        # process-wide, and each runner restores the count it found, so only LIFO order restores the right
        # one (dict order left PyTorch on one thread after a one-thread pass).
        with contextlib.ExitStack() as stack:
            entered = {name: stack.enter_context(make(threads)) for name, make in factories.items()}
            for batch in settings.batches:
                images = rng.standard_normal((batch, *settings.input_size)).astype(np.float32)
                if progress:
                    progress(f"batch {batch}, threads {threads or 'all'}")
                samples = _interleaved(entered, images, settings)
                used = {name: runner.threads_in_use() for name, runner in entered.items()}
                results.extend(_summarize(samples, batch, threads, baselines, used))
    return results


def _interleaved(
    runners: Mapping[str, Runner], images: np.ndarray, settings: BenchSettings
) -> dict[str, list[float]]:
    last_ms: dict[str, float] = {}
    for name, runner in runners.items():
        for _ in range(max(settings.warmup, 1 if settings.budget_s else 0)):
            start = time.perf_counter()
            runner.infer(images)
            last_ms[name] = (time.perf_counter() - start) * 1000.0
    per_round = settings.per_round
    if settings.budget_s is not None:
        # The slowest variants (PyTorch eager at batch 16 on one thread) set the pace for every variant alike.
        round_s = sum(last_ms.values()) / 1000.0
        per_round = max(1, min(per_round, int(settings.budget_s / (settings.rounds * max(round_s, 1e-9)))))
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(settings.rounds):
        for name, runner in runners.items():
            for _ in range(per_round):
                start = time.perf_counter()
                runner.infer(images)
                samples[name].append((time.perf_counter() - start) * 1000.0)
    return samples


def _summarize(
    samples: Mapping[str, list[float]],
    batch: int,
    threads: int | None,
    baselines: tuple[str, ...],
    used: Mapping[str, int | None],
) -> list[BenchResult]:
    p50 = {name: float(np.percentile(v, 50)) for name, v in samples.items()}
    out = []
    for name, values in samples.items():
        arr = np.asarray(values)
        ratios = {b: p50[b] / p50[name] for b in baselines if b in p50 and p50[name] > 0}
        out.append(
            BenchResult(
                variant=name,
                batch=batch,
                threads=threads,
                p50_ms=p50[name],
                p90_ms=float(np.percentile(arr, 90)),
                p99_ms=float(np.percentile(arr, 99)),
                mean_ms=float(arr.mean()),
                throughput=batch * 1000.0 / p50[name],
                calls=int(arr.size),
                ratios=ratios,
                threads_used=used.get(name),
            )
        )
    return out


def run_dir_factories(
    run_dir: Path, torch_models: bool = True, compile_torch: bool = True, openvino: bool = True
) -> tuple[dict[str, RunnerFactory], tuple[int, int, int]]:
    """Runner factories for every artifact of a run directory (and PyTorch eager and ``torch.compile``
    when its checkpoint is still where the manifest says; OpenVINO on the ONNX files when importable),
    plus the model's input size. :func:`skipped_variants` says why an optional variant is missing."""
    from levit_edge.pipeline import ARTIFACT_FILES, FP32_FILE
    from levit_edge.report.manifest import MANIFEST, read_json
    from levit_edge.validate.run_models import run_preprocess

    if not (run_dir / FP32_FILE).is_file():
        raise UserError(f"{run_dir} has no {FP32_FILE}: not a levit-edge run directory")
    preprocess = run_preprocess(run_dir, ARTIFACT_FILES.values())  # every model takes the same images
    factories: dict[str, RunnerFactory] = {}
    if torch_models and (run_dir / MANIFEST).is_file():
        factories.update(_torch_factories(read_json(run_dir / MANIFEST), compile_torch))
    for key, name in ARTIFACT_FILES.items():
        path = run_dir / name
        if key == "int8.plan" or not path.is_file():
            continue
        factories[key] = _ort_factory(path)
    plan = run_dir / ARTIFACT_FILES["int8.plan"]
    if plan.is_file():
        from levit_edge.backends.tensorrt import TensorRTRunner, tensorrt_unavailable_reason

        if tensorrt_unavailable_reason() is None:
            compatible = plan_is_version_compatible(run_dir)
            factories["int8.plan"] = lambda threads: TensorRTRunner(plan, version_compatible=compatible)
    if openvino:
        factories.update(_openvino_factories(run_dir))
    return factories, preprocess.input_size


def plan_is_version_compatible(run_dir: Path) -> bool:
    """Whether the run's engine was built version-compatible (its report's engine options say so):
    such a plan embeds the lean runtime and loads only with host code allowed."""
    from levit_edge.report.manifest import read_json

    path = run_dir / "report.json"
    if not path.is_file():
        return False
    options = read_json(path).get("options")
    engine = options.get("engine") if isinstance(options, dict) else None
    return isinstance(engine, dict) and engine.get("version_compatible") is True


# OpenVINO variants: (ONNX artifact key, inference precision hint). None keeps OpenVINO's default, which is
# bf16 on CPUs with AMX or AVX-512 BF16: the speed a user gets, at another precision than ours.
OPENVINO_VARIANTS: dict[str, tuple[str, str | None]] = {
    "openvino.fp32": ("fp32", None),
    "openvino.fp32-f32": ("fp32", "f32"),
    "openvino.int8.ort": ("int8.ort", None),
    "openvino.int8.trt": ("int8.trt", None),
}


def skipped_variants(
    torch_models: bool = True, compile_torch: bool = True, openvino: bool = True
) -> dict[str, str]:
    """Optional variants this machine cannot time, and why (for the user, not an error)."""
    from levit_edge.backends.openvino import openvino_unavailable_reason

    out: dict[str, str] = {}
    if torch_models and compile_torch:
        from levit_edge.backends.torch import compile_unavailable_reason

        reason = compile_unavailable_reason()
        if reason:
            out["torch.compile"] = reason
    reason = openvino_unavailable_reason() if openvino else None
    if reason:
        out["openvino.*"] = reason
    return out


def _openvino_factories(run_dir: Path) -> dict[str, RunnerFactory]:
    from levit_edge.backends.openvino import openvino_unavailable_reason
    from levit_edge.pipeline import ARTIFACT_FILES

    if openvino_unavailable_reason() is not None:
        return {}
    out: dict[str, RunnerFactory] = {}
    for name, (key, precision) in OPENVINO_VARIANTS.items():
        path = run_dir / ARTIFACT_FILES[key]
        if path.is_file():
            out[name] = functools.partial(_openvino_runner, path, precision=precision)
    return out


def _openvino_runner(path: Path, threads: int | None, precision: str | None) -> Runner:
    from levit_edge.backends.openvino import OpenVinoRunner

    return OpenVinoRunner(path, threads, precision)


# Interleaving many sessions in one process: a session's worker threads must stop spinning when its Run
# returns, or they steal the cores of the next variant (seen as a 2-7x slow-down of multi-thread runs).
INTERLEAVED_SESSION_CONFIG = {"session.force_spinning_stop": "1"}


def _ort_factory(path: Path) -> RunnerFactory:
    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner

    return lambda threads: OnnxRuntimeRunner(path, threads, config=INTERLEAVED_SESSION_CONFIG)


def _torch_factories(manifest: Mapping[str, Any], compile_torch: bool = True) -> dict[str, RunnerFactory]:
    from levit_edge.backends.torch import TorchRunner, compile_unavailable_reason
    from levit_edge.model.fuse import fuse_levit
    from levit_edge.model.load import ModelSpec, load_model

    opts = manifest.get("options", {}).get("model", {})
    checkpoint = opts.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_file():
        return {}
    spec = ModelSpec(
        name=opts["name"],
        checkpoint=Path(checkpoint) if checkpoint else None,
        num_classes=opts.get("num_classes") or manifest.get("model", {}).get("classes"),
        img_size=opts.get("img_size"),
    )
    loaded = load_model(spec)
    fused = fuse_levit(loaded.model)
    out: dict[str, RunnerFactory] = {
        "torch": lambda threads: TorchRunner(loaded.model, threads),
        "torch.fused": lambda threads: TorchRunner(fused, threads),
    }
    if compile_torch and compile_unavailable_reason() is None:
        # The timm model as a PyTorch user would deploy it: compiled by inductor (compiled again for each
        # thread pass and batch size; the warm-up calls absorb that).
        out["torch.compile"] = lambda threads: TorchRunner(loaded.model, threads, compile=True)
    return out


def results_table(results: list[BenchResult]) -> list[dict[str, Any]]:
    """Plain rows for report.json."""
    return [r.to_dict() for r in results]
