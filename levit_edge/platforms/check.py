"""Check a run's CPU deliverables on emulated aarch64 against x86, on the same preprocessed images.

Images are decoded and preprocessed once, here on the host; the same float32 tensors go to ONNX Runtime
on x86 and to its aarch64 build under emulation, so any difference comes from the kernels (NEON,
dot-product) and not from image decoding. Emulation is slow, so the images are a seeded subset of the
validation set and each model is one emulator process. No timing is reported: emulated speed says
nothing about a board's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from levit_edge.artifacts import Status
from levit_edge.backends.emulated import EmulatedOrtRunner
from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
from levit_edge.data.open_source import open_source
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import DataSpec
from levit_edge.errors import UserError
from levit_edge.platforms.aarch64 import QEMU_CPU, Aarch64Platform, Runtime, load_platform
from levit_edge.settings import GateSettings, PlatformSettings
from levit_edge.validate.gate import GateResult, apply_gate
from levit_edge.validate.metrics import compare, topk_accuracy

# The run's CPU deliverables: (report key, file, graph optimization at load). The .ort files run without
# load-time optimization, as a minimal build runs them (levit_edge.export.ort_format.ort_format_runners).
CPU_MODELS = (
    ("fp32", "model.fp32.onnx", "all"),
    ("int8.ort", "model.int8.ort.onnx", "all"),
    ("int8.ort (.ort)", "model.int8.ort", "disable"),
    ("fp32 (.ort)", "model.fp32.ort", "disable"),
)
REFERENCE = "fp32 (x86)"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelCheck:
    """One model on both CPUs, on the same images."""

    file: str
    artifact: str
    top1_aarch64: float | None  # percent; None without labels
    top1_x86: float | None
    agreement: float  # percent of images with the same top-1 class on aarch64 as on x86
    max_abs_diff: float  # largest |logit difference| aarch64 vs x86 over every image and class
    drop: float  # aarch64 top-1 points below x86 FP32 (without labels: disagreement with x86 FP32)


@dataclass(frozen=True)
class PlatformCheck:
    """The aarch64 check of a run: per model, the x86 and aarch64 figures, and the gate on aarch64."""

    platform: str
    images: int
    seed: int
    labelled: bool
    data_hash: str
    reference_top1: float | None  # x86 FP32 top-1 on these images
    models: tuple[ModelCheck, ...]
    gate: GateResult
    onnxruntime: str  # the aarch64 build's release (the run's)
    onnxruntime_x86: str
    numpy: str
    python: str
    qemu: str
    qemu_cpu: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["models"] = {m.file: {k: v for k, v in asdict(m).items() if k != "file"} for m in self.models}
        out["emulated"] = True
        out["timings"] = None  # emulated speed is no measure of a board's: never reported
        return out


def prepare(onnxruntime: object, settings: PlatformSettings, where: str) -> tuple[Aarch64Platform, Runtime]:
    """The provisioned platform and the runtime of the ONNX Runtime release a run records (``where``
    names the run for the error line); a one-line UserError naming the set-up command when either is
    missing (checked before any work)."""
    found = load_platform(settings.cache)
    if not isinstance(onnxruntime, str) or not onnxruntime[:1].isdigit():
        raise UserError(f"{where} records no onnxruntime release to check on aarch64")
    return found, found.runtime(onnxruntime)


def check_platform(
    models: Sequence[tuple[str, Path, str]],
    prepared: tuple[Aarch64Platform, Runtime],
    val: DataSpec,
    preprocess: PreprocessConfig,
    settings: PlatformSettings,
    gate_settings: GateSettings,
    threads: int | None = None,
    progress: Progress | None = None,
) -> PlatformCheck:
    """Run each CPU deliverable (``models``: artifact key, file, graph optimization at load; the FP32
    ONNX model first) on x86 and on emulated aarch64 over a seeded subset of ``val``; compare top-1,
    agreement and logits, and gate the aarch64 top-1 drop against x86 FP32."""
    say = progress or (lambda _msg: None)
    found, runtime = prepared
    paths = {path.name: path for _key, path, _opt in models}
    names = [(key, path.name, opt) for key, path, opt in models]
    source = open_source(replace(val, size=settings.images, seed=settings.seed))
    batches = list(source.batches(preprocess, 64))
    images = np.concatenate([b.images for b in batches])
    labels = np.concatenate([b.labels for b in batches]) if source.labelled else None
    x86: dict[str, np.ndarray] = {}
    arm: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    for _key, name, opt in names:
        with OnnxRuntimeRunner(paths[name], threads, optimization=opt) as runner:
            x86[name] = runner.infer(images)
        say(f"aarch64: {name} on {len(images)} images under emulation")
        with EmulatedOrtRunner(paths[name], found, runtime, threads, opt) as emulated:
            arm[name] = emulated.infer(images)  # one emulator process for all images
            info = emulated.info
    reference = x86["model.fp32.onnx"]
    comparisons = {
        f"aarch64:{name}": compare(f"aarch64:{name}", REFERENCE, reference, arm[name], labels)
        for _key, name, _opt in names
    }
    checks = tuple(
        ModelCheck(
            file=name,
            artifact=key,
            top1_aarch64=None if labels is None else topk_accuracy(arm[name], labels).top1,
            top1_x86=None if labels is None else topk_accuracy(x86[name], labels).top1,
            agreement=float(np.mean(arm[name].argmax(axis=1) == x86[name].argmax(axis=1)) * 100.0),
            max_abs_diff=float(np.max(np.abs(arm[name].astype(np.float64) - x86[name]))),
            drop=comparisons[f"aarch64:{name}"].drop,
        )
        for key, name, _opt in names
    )
    if info.get("onnxruntime") != runtime.onnxruntime or info.get("machine") != "aarch64":
        raise UserError(
            f"the emulated run reported {info}, expected aarch64 onnxruntime {runtime.onnxruntime}"
        )
    return PlatformCheck(
        platform=settings.platform,
        images=len(images),
        seed=settings.seed,
        labelled=labels is not None,
        data_hash=source.fingerprint(),
        reference_top1=None if labels is None else topk_accuracy(reference, labels).top1,
        models=checks,
        gate=apply_gate(comparisons, gate_settings),
        onnxruntime=str(info["onnxruntime"]),
        onnxruntime_x86=metadata.version("onnxruntime"),
        numpy=str(info["numpy"]),
        python=str(info["python"]),
        qemu=str(found.record["qemu"].get("reports") or found.qemu_version),
        qemu_cpu=QEMU_CPU,
    )


def combined_gate(gate: GateResult, check: PlatformCheck | None) -> GateResult:
    """The x86 gate with the aarch64 gate's failures added: one status, one exit code (3) for both."""
    if check is None or check.gate.passed:
        return gate
    return GateResult(Status.FAILED, gate.max_drop, gate.failures + check.gate.failures)


def describe_check(report: dict[str, Any]) -> str:
    """A short clause for the CLI's closing line from ``report.json``'s ``platforms`` section."""
    parts = []
    for name, check in sorted((report.get("platforms") or {}).items()):
        models = check["models"].values()
        agreement = min(m["agreement"] for m in models)
        diff = max(m["max_abs_diff"] for m in models)
        parts.append(
            f"{name} (emulated, {check['images']} images): gate {check['gate']['status']}, "
            f"same top-1 as x86 on >= {agreement:.1f}%, max |logit diff| {diff:.2g}"
        )
    return "; ".join(parts)
