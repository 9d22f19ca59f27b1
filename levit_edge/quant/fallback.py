"""Accuracy-aware quantization: keep the most harmful layers in float until the drop fits a budget.

For each INT8 artifact (ONNX Runtime and TensorRT profiles alike, both from the one ``calibration.json``):

1. step 0 is the all-quantized model; if its top-1 drop is within the budget, nothing else runs;
2. layers are ranked once (:mod:`levit_edge.quant.sensitivity`: the KL each removes when it alone stays
   float);
3. the cheap fix first: for the activations feeding the highest-ranked layers, another calibration method
   per tensor (the calibration's own range, a wider min/max, or a percentile clip of the calibration
   samples), chosen by each tensor's own quantization SQNR; kept only when the validated drop improves;
4. then the top-k ranked layers stay float, k = 1, 2, 4, ... up to ``max_float_layers``; once a k meets
   the budget, bisection between the last failing and the first passing k finds the smallest prefix. That
   is at most about 2 log2(limit) + 1 re-quantizations (each ~3 s plus one validation pass) instead of
   ``limit``, and the answer is never more than the measured minimum under the (usual) assumption that
   adding float layers does not hurt.

Every step is re-quantized with :func:`~levit_edge.quant.quantize.quantize` (``exclude=`` the float
layers) into a temporary file and validated on the full validation set with the same batches as the
pipeline's validation. A TensorRT step must still pass :func:`check_trt_ready` (the float layers simply
lose their Q/DQ). Only a step that meets the budget replaces the run's INT8 file ("promoted"); when none
does, the all-quantized file stays, every attempt is reported, and the pipeline fails the gate (exit 3).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import ImageSource
from levit_edge.io import write_atomic
from levit_edge.quant import sensitivity
from levit_edge.quant.calibrate import Calibration
from levit_edge.quant.profiles import QuantProfile
from levit_edge.quant.quantize import QuantResult, quantize
from levit_edge.settings import FallbackSettings
from levit_edge.validate.metrics import Comparison, compare

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], Callable[[int, int], None] | None]

IN_MEMORY_BYTES = 1 << 30  # validation sets up to this size are preprocessed once and kept in memory
LATENCY_RUNS = 30
MIN_RANGE_GAIN_DB = 1.0  # a per-tensor range change must improve that tensor's SQNR by this much
PERCENTILES = (99.9, 99.99, 99.999)


@dataclass(frozen=True)
class Target:
    """One INT8 artifact to keep within the budget: its report key, recipe and file in the run."""

    key: str
    profile: QuantProfile
    path: Path


@dataclass(frozen=True)
class Step:
    """One measured candidate."""

    artifact: str
    step: int
    action: str  # "all-quantized" | "ranges" | "float"
    float_layers: tuple[str, ...]
    range_overrides: int  # tensors whose calibration range was replaced
    top1: float | None  # percent (None without labels)
    drop: float  # top-1 points vs FP32 (disagreement points without labels)
    agreement: float
    kl: float
    size: int  # bytes of the model file
    latency_ms: float  # batch 1, p50 of LATENCY_RUNS calls
    meets_budget: bool

    def row(self, chosen: bool) -> dict[str, Any]:
        """The ``fallback`` row of report.json (the shape report/sections_quant.py draws)."""
        d = dataclasses.asdict(self)
        d["float_layers"] = list(self.float_layers)
        d["chosen"] = chosen
        for k in ("top1", "drop", "agreement", "kl", "latency_ms"):
            if isinstance(d[k], float):
                d[k] = round(d[k], 6)
        return d


@dataclass(frozen=True)
class Outcome:
    """What the loop did for one artifact."""

    artifact: str
    budget: float
    max_float_layers: int
    steps: tuple[Step, ...]
    chosen: int | None  # index into steps of the model now in the run; None: budget not met
    sensitivity: sensitivity.Sensitivity | None  # None when the all-quantized model already met the budget
    quant: QuantResult | None  # the promoted model (None: the all-quantized file is unchanged)
    range_overrides: dict[str, dict[str, Any]]  # tensor -> method, range, SQNR before/after (if used)
    seconds: float

    @property
    def met(self) -> bool:
        return self.chosen is not None

    @property
    def message(self) -> str:
        if self.chosen is not None:
            s = self.steps[self.chosen]
            head = f"{self.artifact}: drop {s.drop:.2f} within budget {self.budget:g} with "
            if self.chosen == 0:
                return head + "every layer quantized"
            tuned = " and tuned ranges" if s.range_overrides else ""
            return head + f"{len(s.float_layers)} layer(s) in float{tuned}"
        best = min(self.steps, key=lambda s: (s.drop, s.kl))
        return (
            f"{self.artifact}: accuracy budget {self.budget:g} not met: best drop {best.drop:.2f} with "
            f"{len(best.float_layers)} layer(s) in float (limit --max-float-layers {self.max_float_layers}); "
            "kept the all-quantized model"
        )

    def summary(self) -> dict[str, Any]:
        chosen = self.steps[self.chosen] if self.chosen is not None else None
        return {
            "met": self.met,
            "promoted": self.quant is not None,
            "float_layers": list(chosen.float_layers) if chosen else None,
            "range_overrides": self.range_overrides if chosen and chosen.range_overrides else {},
            "steps": len(self.steps),
            "seconds": round(self.seconds, 2),
            "message": self.message,
        }


# ---- data ------------------------------------------------------------------------------------------


class ValidationData:
    """The validation set, preprocessed once and kept in memory when small enough, else streamed."""

    def __init__(
        self,
        source: ImageSource,
        preprocess: PreprocessConfig,
        batch_size: int,
        max_bytes: int = IN_MEMORY_BYTES,
    ) -> None:
        self.source, self.preprocess, self.batch_size = source, preprocess, batch_size
        c, h, w = preprocess.input_size
        self._cached: list[np.ndarray] | None = None
        labels: list[np.ndarray] = []
        if len(source) * c * h * w * 4 <= max_bytes:
            self._cached = []
            for batch in source.batches(preprocess, batch_size):
                self._cached.append(batch.images)
                if batch.labels is not None:
                    labels.append(batch.labels)
        else:
            for batch in source.batches(preprocess, batch_size):
                if batch.labels is not None:
                    labels.append(batch.labels)
        self.labels = np.concatenate(labels) if labels and source.labelled else None
        self.class_names = source.class_names

    def batches(self) -> Iterator[np.ndarray]:
        """The images in the pipeline's batches (same order, same batch boundaries)."""
        if self._cached is not None:
            yield from self._cached
        else:
            for batch in self.source.batches(self.preprocess, self.batch_size):
                yield batch.images

    def subset(self, n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """A seeded subset of ``n`` images: (their indices, their images in batches)."""
        total = len(self.labels) if self.labels is not None else sum(len(b) for b in self.batches())
        index = np.sort(np.random.default_rng(seed).permutation(total)[: min(n, total)])
        wanted, picked, offset = set(index.tolist()), [], 0
        for images in self.batches():
            rows = [i - offset for i in range(offset, offset + len(images)) if i in wanted]
            if rows:
                picked.append(images[rows])
            offset += len(images)
        stacked = np.concatenate(picked)
        return index, [stacked[i : i + self.batch_size] for i in range(0, len(stacked), self.batch_size)]


# ---- measuring a candidate -------------------------------------------------------------------------


def batch1_latency_ms(model: Path, input_size: tuple[int, int, int], threads: int | None) -> float:
    """Median batch-1 latency of ``model`` (3 warm-up calls, then LATENCY_RUNS timed ones)."""
    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner

    image = np.random.default_rng(0).standard_normal((1, *input_size)).astype(np.float32)
    with OnnxRuntimeRunner(model, threads) as runner:
        for _ in range(3):
            runner.infer(image)
        runner.latencies_ms.clear()
        for _ in range(LATENCY_RUNS):
            runner.infer(image)
        return float(np.median(runner.latencies_ms))


class _Judge:
    """Validates candidates of one artifact against the FP32 logits and records them as steps."""

    def __init__(
        self,
        target: Target,
        data: ValidationData,
        fp32_logits: np.ndarray,
        budget: float,
        threads: int | None,
    ) -> None:
        self.target, self.data, self.fp32_logits = target, data, fp32_logits
        self.budget, self.threads = budget, threads
        self.steps: list[Step] = []
        self.files: list[Path] = []
        self.quants: list[QuantResult | None] = []

    def comparison(self, model: Path) -> Comparison:
        logits = sensitivity.run_logits(model, self.data.batches(), self.threads)
        return compare(
            self.target.key, "fp32", self.fp32_logits, logits, self.data.labels, self.data.class_names
        )

    def record(
        self, model: Path, action: str, floats: Sequence[str], overrides: int, quant: QuantResult | None
    ) -> Step:
        c = self.comparison(model)
        step = Step(
            artifact=self.target.key,
            step=len(self.steps),
            action=action,
            float_layers=tuple(floats),
            range_overrides=overrides,
            top1=c.accuracy.top1 if c.accuracy else None,
            drop=c.drop,
            agreement=c.agreement,
            kl=c.kl,
            size=model.stat().st_size,
            latency_ms=batch1_latency_ms(model, self.data.preprocess.input_size, self.threads),
            meets_budget=c.drop <= self.budget + 1e-9,
        )
        self.steps.append(step)
        self.files.append(model)
        self.quants.append(quant)
        # one line per step: minutes of work must show in a CI log (the CLI prints levit_edge records)
        log.info(
            "%s step %d (%s): %d layer(s) in float%s: drop %.2f, agreement %.2f%%%s",
            step.artifact,
            step.step,
            step.action,
            len(step.float_layers),
            f" [{', '.join(step.float_layers)}]" if step.float_layers else "",
            step.drop,
            step.agreement,
            ", within budget" if step.meets_budget else "",
        )
        return step


# ---- the cheap fix: another calibration method per tensor -----------------------------------------------


def qdq_sqnr(x: np.ndarray, lo: float, hi: float, profile: QuantProfile) -> float:
    """SQNR (dB) of ``x`` after the profile's activation Q/DQ with range (lo, hi), scale and zero point as ORT
    computes them."""
    signed = profile.activation_type == "int8"
    if profile.symmetric_activations:
        qmin, qmax = (-127, 127) if signed else (0, 255)
        a = max(abs(lo), abs(hi))
        rmin, rmax = (-a, a) if signed else (0.0, a)
    else:
        qmin, qmax = (-128, 127) if signed else (0, 255)
        rmin, rmax = min(lo, 0.0), max(hi, 0.0)
    scale = (rmax - rmin) / (qmax - qmin)
    if not (scale > 0 and math.isfinite(scale)):
        return -math.inf
    zp = 0 if profile.symmetric_activations and signed else round(qmin - rmin / scale)
    y = (np.clip(np.round(x / scale) + zp, qmin, qmax) - zp) * scale
    noise = float(np.sum((x.astype(np.float64) - y) ** 2))
    signal = float(np.sum(x.astype(np.float64) ** 2))
    return 10.0 * math.log10(max(signal, 1e-30) / max(noise, 1e-30))


def float_activations(model_path: Path, tensors: Sequence[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Values of ``tensors`` of the FP32 model on ``images`` (flattened per tensor)."""
    from levit_edge.backends.onnxruntime import load_session

    model = onnx.load(str(model_path), load_external_data=False)
    present = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    session = load_session(model.SerializeToString(), None, "basic")
    feed = session.get_inputs()[0].name
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for start in range(0, len(images), 16):
        outs = session.run(list(tensors), {feed: images[start : start + 16]})
        for t, v in zip(tensors, outs, strict=True):
            chunks[t].append(np.asarray(v, np.float32).ravel())
    return {t: np.concatenate(v) for t, v in chunks.items()}


def tune_ranges(
    fp32_path: Path,
    calibration: Calibration,
    profile: QuantProfile,
    tensors: Sequence[str],
    images: np.ndarray,
) -> tuple[Calibration, dict[str, dict[str, Any]]]:
    """Per tensor, the range (calibration's own, wider min/max, percentile clip) with the best Q/DQ SQNR.

    Candidates are computed on the calibration samples ``images``; a tensor changes only when its SQNR
    improves by at least MIN_RANGE_GAIN_DB. Returns the calibration with those ranges and what changed.
    """
    tensors = [t for t in dict.fromkeys(tensors) if t in calibration.ranges]
    if not tensors or not len(images):
        return calibration, {}
    acts = float_activations(fp32_path, tensors, images)
    ranges = dict(calibration.ranges)
    changed: dict[str, dict[str, Any]] = {}
    for t in tensors:
        x = acts[t]
        lo, hi = calibration.ranges[t]
        candidates: dict[str, tuple[float, float]] = {
            f"calibration ({calibration.method})": (lo, hi),
            "minmax": (min(lo, float(x.min())), max(hi, float(x.max()))),
        }
        for p in PERCENTILES:
            if profile.symmetric_activations:
                a = float(np.percentile(np.abs(x), p))
                candidates[f"percentile {p:g}"] = (-a, a)
            else:
                lo_p, hi_p = np.percentile(x, [100 - p, p])
                candidates[f"percentile {p:g}"] = (float(lo_p), float(hi_p))
        scores = {m: qdq_sqnr(x, r[0], r[1], profile) for m, r in candidates.items()}
        own = scores[f"calibration ({calibration.method})"]
        best = max(scores, key=lambda m: scores[m])
        if scores[best] >= own + MIN_RANGE_GAIN_DB:
            ranges[t] = candidates[best]
            changed[t] = {
                "method": best,
                "range": [round(v, 6) for v in candidates[best]],
                "was": [round(v, 6) for v in (lo, hi)],
                "sqnr_db": round(scores[best], 2),
                "was_sqnr_db": round(own, 2),
            }
    return dataclasses.replace(calibration, ranges=ranges), changed


# ---- the loop --------------------------------------------------------------------------------------


def _better(a: Step, b: Step) -> bool:
    return (a.drop, a.kl) < (b.drop, b.kl)


def keep_within_budget(
    target: Target,
    fp32_path: Path,
    calibration: Calibration,
    data: ValidationData,
    fp32_logits: np.ndarray,
    calib_images: np.ndarray,
    settings: FallbackSettings,
    threads: int | None = None,
    seed: int = 0,
    progress: ProgressFactory | None = None,
) -> Outcome:
    """Run the loop of the module docstring for one artifact; promote a model only if it meets the budget."""
    start = time.perf_counter()
    budget = settings.budget if settings.budget is not None else math.inf
    judge = _Judge(target, data, fp32_logits, budget, threads)
    plain = judge.record(target.path, "all-quantized", (), 0, None)
    if plain.meets_budget:
        return _outcome(target, settings, judge, 0, None, {}, start)
    index, rank_batches = data.subset(settings.rank_images, seed)
    sens = sensitivity.measure(
        target.key,
        target.profile,
        fp32_path,
        target.path,
        calib_images,
        rank_batches,
        fp32_logits[index],
        threads,
        progress(f"sensitivity {target.key}") if progress else None,
    )
    ranking = sens.ranking
    limit = min(settings.max_float_layers, len(ranking))
    with tempfile.TemporaryDirectory(prefix="levit-edge-fallback-") as tmp:
        work = Path(tmp)

        def attempt(cal: Calibration, floats: Sequence[str], action: str, overrides: dict[str, Any]) -> Step:
            out = work / f"step{len(judge.steps)}.onnx"
            meta = {"levit_edge.float_nodes": json.dumps(list(floats))}
            if overrides:
                meta["levit_edge.range_overrides"] = json.dumps(overrides, sort_keys=True)
            result = quantize(fp32_path, cal, target.profile, out, exclude=floats, metadata=meta)
            if target.profile.name == "trt":
                _require_trt_ready(out)
            return judge.record(out, action, floats, len(overrides), result)

        chosen: int | None = None
        base_cal: Calibration = calibration
        base_overrides: dict[str, dict[str, Any]] = {}
        # 1. the cheap fix: per-tensor ranges for the inputs of the layers the loop would float
        qdq = onnx.load(str(target.path), load_external_data=False)
        feeding = sensitivity.quantized_inputs(qdq, ranking[: max(limit, 1)])
        tensors = [t for node in ranking[: max(limit, 1)] for t in feeding[node]]
        tuned, overrides = tune_ranges(fp32_path, calibration, target.profile, tensors, calib_images)
        if overrides:
            step = attempt(tuned, (), "ranges", overrides)
            if step.meets_budget:
                chosen, base_overrides = step.step, overrides
            elif _better(step, plain):
                base_cal, base_overrides = tuned, overrides
        # 2. float layers: doubling, then bisection down to the smallest passing prefix
        if chosen is None and limit > 0:
            passing: dict[int, int] = {}
            failing = 0
            k = 1
            while True:
                k = min(k, limit)
                step = attempt(base_cal, ranking[:k], "float", base_overrides)
                if step.meets_budget:
                    passing[k] = step.step
                    break
                failing = k
                if k == limit:
                    break
                k *= 2
            if passing:
                hi = min(passing)
                while hi - failing > 1:
                    mid = (failing + hi) // 2
                    step = attempt(base_cal, ranking[:mid], "float", base_overrides)
                    if step.meets_budget:
                        passing[mid] = step.step
                        hi = mid
                    else:
                        failing = mid
                chosen = passing[hi]
        quant: QuantResult | None = None
        if chosen is not None and chosen > 0:
            write_atomic(target.path, judge.files[chosen].read_bytes())
            q = judge.quants[chosen]
            assert q is not None
            quant = dataclasses.replace(q, path=target.path)
        used = judge.steps[chosen].range_overrides if chosen is not None else 0
        return _outcome(target, settings, judge, chosen, quant, base_overrides if used else {}, start, sens)


def _outcome(
    target: Target,
    settings: FallbackSettings,
    judge: _Judge,
    chosen: int | None,
    quant: QuantResult | None,
    overrides: dict[str, dict[str, Any]],
    start: float,
    sens: sensitivity.Sensitivity | None = None,
) -> Outcome:
    return Outcome(
        artifact=target.key,
        budget=settings.budget if settings.budget is not None else math.inf,
        max_float_layers=settings.max_float_layers,
        steps=tuple(judge.steps),
        chosen=chosen,
        sensitivity=sens,
        quant=quant,
        range_overrides=overrides,
        seconds=time.perf_counter() - start,
    )


def _require_trt_ready(path: Path) -> None:
    from levit_edge.quant.trt_rules import check_trt_ready

    violations = check_trt_ready(path)
    if violations:
        # Removing Q/DQ from a valid model cannot break TensorRT's rules: if it does, that is our bug.
        raise RuntimeError("fallback model breaks TensorRT rules: " + "; ".join(map(str, violations[:5])))


def accuracy_aware(
    targets: Sequence[Target],
    fp32_path: Path,
    calibration: Calibration,
    val: ImageSource,
    calib_samples: ImageSource | None,
    preprocess: PreprocessConfig,
    settings: FallbackSettings,
    batch_size: int = 32,
    threads: int | None = None,
    seed: int = 0,
    progress: ProgressFactory | None = None,
) -> list[Outcome]:
    """Keep every target within ``settings.budget`` (see the module docstring); one Outcome per target.

    ``calib_samples`` supplies the images of the SQNR pass and the per-tensor range fix (a few
    calibration images); the validation set is preprocessed once for all targets and steps.
    """
    data = ValidationData(val, preprocess, batch_size)
    fp32_logits = sensitivity.run_logits(fp32_path, data.batches(), threads)
    calib_images = (
        sensitivity.load_images(calib_samples.batches(preprocess, batch_size), settings.samples)
        if calib_samples is not None and settings.samples > 0
        else np.zeros((0, *preprocess.input_size), np.float32)
    )
    return [
        keep_within_budget(
            t, fp32_path, calibration, data, fp32_logits, calib_images, settings, threads, seed, progress
        )
        for t in targets
    ]


def report_sections(outcomes: Sequence[Outcome], settings: FallbackSettings) -> dict[str, Any]:
    """report.json sections: ``accuracy_budget`` (per artifact), ``fallback`` (every step), and when layers
    were ranked ``sensitivity`` (rows) and ``sensitivity_info`` (how they were measured)."""
    rows: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for o in outcomes:
        steps.extend(s.row(i == o.chosen) for i, s in enumerate(o.steps))
        if o.sensitivity is not None:
            rows.extend(o.sensitivity.rows())
    out: dict[str, Any] = {
        "accuracy_budget": {
            "budget": settings.budget,
            "max_float_layers": settings.max_float_layers,
            "artifacts": {o.artifact: o.summary() for o in outcomes},
        },
        "fallback": steps,
    }
    if rows:
        out["sensitivity"] = rows
        out["sensitivity_info"] = [o.sensitivity.summary() for o in outcomes if o.sensitivity is not None]
    return out


__all__ = [
    "Outcome",
    "Step",
    "Target",
    "ValidationData",
    "accuracy_aware",
    "keep_within_budget",
    "qdq_sqnr",
    "report_sections",
    "tune_ranges",
]
