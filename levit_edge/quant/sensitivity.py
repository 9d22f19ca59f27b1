"""Per-layer quantization sensitivity of a QDQ model: how much each quantized node hurts, and why.

Two measures per quantized node, both against the FP32 model:

* activation SQNR on a few calibration images, from ONNX Runtime's ``qdq_loss_debug`` (the node's output
  in the INT8 model vs the FP32 model, which includes the error of every layer before it; the local
  quantize-dequantize noise on its activation inputs; its weights' SQNR);
* its effect on the outputs when it *alone* stays in float: top-1 agreement with FP32 and the mean
  KL(FP32 || candidate) of the softmax, on a fixed validation subset.

Layers are ranked by the KL they remove (``kl_gain``): KL is continuous, while agreement on a few hundred
images moves in steps of 1/n and ties for most layers. The "alone in float" variant is made by removing
that node's Q/DQ from the all-quantized graph (:func:`float_only`), which is what re-quantizing with
``exclude=[node]`` produces (checked by the tests) in ~15 ms instead of a 3-5 s quantizer run per layer.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization.calibrate import CalibrationDataReader
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_weight_error,
    create_activation_matching,
    create_weight_matching,
    modify_model_output_intermediate_tensors,
)

from levit_edge.export.onnx import INPUT_NAME
from levit_edge.export.ort_levers import in_layout_of
from levit_edge.quant.calibrate import ort_scratch
from levit_edge.quant.profiles import QuantProfile
from levit_edge.validate.metrics import mean_kl

Progress = Callable[[int, int], None]

SQNR_SAMPLES = 32  # calibration images for the SQNR pass: enough for stable dB figures, cheap to run
RANK_IMAGES = 256  # validation images for the "alone in float" measure (a seeded subset)
_CHUNK = 8  # images per activation-collection run: bounds memory to a few batches of activations
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantized node's damage, measured against FP32."""

    node: str
    op_type: str
    rank: int  # 1 = most harmful (largest kl_gain)
    sqnr_db: float  # node output, INT8 model vs FP32 model (accumulated error up to this node)
    input_sqnr_db: float | None  # lowest local Q/DQ SQNR of its activation inputs (None: none quantized)
    weight_sqnr_db: float | None  # its quantized weight (None: no constant weight)
    agreement_delta: float  # top-1 agreement with FP32 gained (points) when only this node is float
    kl: float  # KL(FP32 || model with only this node in float), nats
    kl_gain: float  # KL of the all-INT8 model minus ``kl``: > 0 means floating it helps

    def row(self, artifact: str) -> dict[str, Any]:
        """The ``sensitivity`` row of report.json."""
        return {"artifact": artifact, **{k: _plain(v) for k, v in self.__dict__.items()}}


@dataclass(frozen=True)
class Sensitivity:
    """Every quantized node of one INT8 artifact, most harmful first."""

    artifact: str
    profile: str
    base_agreement: float  # all-INT8 model, same subset
    base_kl: float
    calib_samples: int
    rank_images: int
    layers: tuple[LayerSensitivity, ...]
    seconds: float

    @property
    def ranking(self) -> tuple[str, ...]:
        return tuple(layer.node for layer in self.layers)

    def rows(self) -> list[dict[str, Any]]:
        return [layer.row(self.artifact) for layer in self.layers]

    def summary(self) -> dict[str, Any]:
        """What the report records about the measurement itself."""
        return {
            "artifact": self.artifact,
            "profile": self.profile,
            "layers": len(self.layers),
            "calib_samples": self.calib_samples,
            "rank_images": self.rank_images,
            "base_agreement": self.base_agreement,
            "base_kl": self.base_kl,
            "ranked_by": "kl_gain (KL removed when only that node stays float), then agreement_delta",
            "seconds": round(self.seconds, 2),
        }


def _plain(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


# ---- graph helpers ----------------------------------------------------------------------------------


def quantized_nodes(qdq: onnx.ModelProto, profile: QuantProfile, fp32: onnx.ModelProto) -> list[str]:
    """Nodes of ``profile`` that read at least one DequantizeLinear output in ``qdq`` (in graph order).

    Nodes a fallback left in float have no Q/DQ inputs and are not listed.
    """
    producer = {o: n.op_type for n in qdq.graph.node for o in n.output}
    selected = set(profile.select_nodes(fp32))
    return [
        n.name
        for n in qdq.graph.node
        if n.name in selected and any(producer.get(i) == "DequantizeLinear" for i in n.input)
    ]


def quantized_inputs(qdq: onnx.ModelProto, nodes: Sequence[str]) -> dict[str, list[str]]:
    """``node -> its activation inputs that pass through Q/DQ`` (float tensor names before QuantizeLinear)."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    by_name = {n.name: n for n in qdq.graph.node}
    out: dict[str, list[str]] = {}
    for name in nodes:
        pre = []
        for i in by_name[name].input:
            dq = producer.get(i)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                pre.append(q.input[0])
        out[name] = pre
    return out


def float_only(
    qdq: onnx.ModelProto, fp32: onnx.ModelProto, nodes: Collection[str], profile: QuantProfile
) -> onnx.ModelProto:
    """A copy of ``qdq`` where ``nodes`` read their FP32 inputs (weights and activations) instead of Q/DQ.

    Q/DQ pairs left without readers are removed, as are initializers nobody uses, and a ``float_bypass``
    profile's rule is re-applied (float consumers of a now-float node's output read it unquantized), so the
    result is what :func:`~levit_edge.quant.quantize.quantize` writes with those nodes excluded.
    """
    from levit_edge.quant.quantize import bypass_unquantized_consumers

    fp32 = in_layout_of(fp32, qdq)  # a fused, head-major INT8 graph reads FP32 weights in its own order
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    graph = out.graph
    float_nodes = {n.name: n for n in fp32.graph.node}
    fp32_inits = {i.name: i for i in fp32.graph.initializer}
    have = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    wanted = set(nodes)
    for node in graph.node:
        if node.name not in wanted:
            continue
        original = float_nodes.get(node.name)
        if original is None or len(original.input) != len(node.input):
            raise ValueError(f"node {node.name!r} differs between the FP32 and the QDQ model")
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            source = original.input[i]
            if source in fp32_inits:
                # ORT names a quantized bias's DequantizeLinear output after the float bias itself
                target = source if source not in producer else f"{source}_float"
                if target not in have:
                    init = graph.initializer.add()
                    init.CopyFrom(fp32_inits[source])
                    init.name = target
                    have.add(target)
                source = target
            node.input[i] = source
    if profile.float_bypass:
        bypass_unquantized_consumers(out, set(quantized_nodes(out, profile, fp32)))
    _drop_dead(graph)
    return out


def _drop_dead(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in _QDQ and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | outputs
    keep = [i for i in graph.initializer if i.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


# ---- SQNR on calibration images (qdq_loss_debug) -------------------------------------------------------


class _OneBatch(CalibrationDataReader):
    def __init__(self, images: np.ndarray) -> None:
        self._pending: dict[str, np.ndarray] | None = {INPUT_NAME: images}

    def get_next(self) -> dict[str, np.ndarray] | None:
        item, self._pending = self._pending, None
        return item


class _Energy:
    """Running sums for SQNR = 10 log10(sum x^2 / sum (x - y)^2): chunked, equal to the concatenated value."""

    def __init__(self) -> None:
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, key: str, x: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> None:
        for a, b in zip(x, y, strict=True):
            a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
            self.signal[key] = self.signal.get(key, 0.0) + float(a64 @ a64)
            d = a64 - b64
            self.noise[key] = self.noise.get(key, 0.0) + float(d @ d)

    def db(self, key: str) -> float | None:
        if key not in self.signal:
            return None
        eps = float(np.finfo(np.float32).eps)
        return 10.0 * math.log10(max(self.signal[key], eps**2) / max(self.noise[key], eps**2))


def activation_sqnr(
    fp32_path: Path,
    qdq_path: Path,
    nodes: Sequence[str],
    images: np.ndarray,
) -> dict[str, tuple[float | None, float | None]]:
    """``node -> (output SQNR vs FP32, lowest local Q/DQ SQNR of its activation inputs)`` in dB.

    Runs both models augmented by ``modify_model_output_intermediate_tensors`` over ``images`` a chunk
    at a time, pairs tensors with ``create_activation_matching`` and accumulates energies, so memory holds
    one chunk of activations whatever the number of images.
    """
    qdq = onnx.load(str(qdq_path), load_external_data=False)
    by_name = {n.name: n for n in qdq.graph.node}
    op_types = sorted({by_name[n].op_type for n in nodes})
    act_inputs = quantized_inputs(qdq, nodes)
    energy = _Energy()
    with tempfile.TemporaryDirectory(prefix="levit-edge-sqnr-") as tmp:
        f_aug, q_aug = str(Path(tmp) / "fp32.onnx"), str(Path(tmp) / "qdq.onnx")
        # links in tmp: ORT writes a shape-inferred copy beside the model, never into the run (read-only)
        with ort_scratch(fp32_path, Path(tmp)) as local:
            modify_model_output_intermediate_tensors(str(local), f_aug, op_types)
        # QuantizeLinear's float input is the pre-Q/DQ tensor: saved so each pair can be matched
        with ort_scratch(qdq_path, Path(tmp)) as local:
            modify_model_output_intermediate_tensors(str(local), q_aug, [*op_types, "QuantizeLinear"])
        for start in range(0, len(images), _CHUNK):
            chunk = np.ascontiguousarray(images[start : start + _CHUNK], dtype=np.float32)
            f_act = collect_activations(f_aug, _OneBatch(chunk))
            q_act = collect_activations(q_aug, _OneBatch(chunk))
            match = create_activation_matching(q_act, f_act)
            for name in nodes:
                for out in by_name[name].output:
                    if out in f_act and out in q_act:
                        energy.add(f"out:{name}", f_act[out], q_act[out])
            for x in {x for xs in act_inputs.values() for x in xs}:
                if x in match:  # a tensor read by several nodes is counted once
                    energy.add(f"in:{x}", match[x]["pre_qdq"], match[x]["post_qdq"])
            del f_act, q_act, match
    result: dict[str, tuple[float | None, float | None]] = {}
    for name in nodes:
        ins = [v for x in act_inputs[name] if (v := energy.db(f"in:{x}")) is not None]
        result[name] = (energy.db(f"out:{name}"), min(ins) if ins else None)
    return result


def weight_sqnr(fp32_path: Path, qdq_path: Path, nodes: Sequence[str]) -> dict[str, float | None]:
    """``node -> SQNR (dB) of its quantized weight`` from ``create_weight_matching`` (None: no weight)."""
    # links in tmp: ORT writes shape-inferred copies beside the models, never into the run (read-only)
    with (
        tempfile.TemporaryDirectory(prefix="levit-edge-wsqnr-") as tmp,
        ort_scratch(fp32_path, Path(tmp)) as f_local,
        ort_scratch(qdq_path, Path(tmp)) as q_local,
    ):
        errors = compute_weight_error(create_weight_matching(str(f_local), str(q_local)))
    fp32 = onnx.load(str(fp32_path), load_external_data=False)
    inputs = {n.name: list(n.input[:2]) for n in fp32.graph.node}  # data and weight; biases are exact enough
    return {
        name: min(vals) if (vals := [errors[i] for i in inputs.get(name, []) if i in errors]) else None
        for name in nodes
    }


# ---- effect of one layer in float on the outputs ---------------------------------------------------------


def run_logits(model: bytes | Path, batches: Iterable[np.ndarray], threads: int | None) -> np.ndarray:
    """Logits of ``model`` (ONNX Runtime, full optimizations as deployed) over ``batches``."""
    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model, threads) as runner:
        return np.concatenate([runner.infer(b) for b in batches])


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Percent of samples where both give the same top-1 class."""
    return float(np.mean(reference.argmax(1) == candidate.argmax(1)) * 100.0)


def measure(
    artifact: str,
    profile: QuantProfile,
    fp32_path: Path,
    qdq_path: Path,
    calib_images: np.ndarray,
    rank_batches: Sequence[np.ndarray],
    fp32_logits: np.ndarray | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Sensitivity:
    """Rank every quantized node of ``qdq_path`` (see the module docstring for the measures)."""
    start = time.perf_counter()
    qdq = onnx.load(str(qdq_path), load_external_data=False)
    original = onnx.load(str(fp32_path), load_external_data=False)
    # the FP32 reference in the INT8 graph's layout (fused attention, head-major qkv): SQNR pairs tensors
    # and weights by name, and float_only swaps FP32 weights in; both need the same channel order
    fp32 = in_layout_of(original, qdq)
    nodes = quantized_nodes(qdq, profile, fp32)
    op_type = {n.name: n.op_type for n in qdq.graph.node}
    total = len(nodes) + 2
    if progress:
        progress(0, total)
    with tempfile.TemporaryDirectory(prefix="levit-edge-layout-") as tmp:
        reference = fp32_path
        if fp32 is not original:
            reference = Path(tmp) / fp32_path.name
            reference.write_bytes(fp32.SerializeToString())
        sqnr = activation_sqnr(reference, qdq_path, nodes, calib_images) if len(calib_images) else {}
        weights = weight_sqnr(reference, qdq_path, nodes)
    ref = fp32_logits if fp32_logits is not None else run_logits(fp32_path, rank_batches, threads)
    base = run_logits(qdq_path, rank_batches, threads)
    base_agree, base_kl = agreement(ref, base), mean_kl(ref, base)
    if progress:
        progress(2, total)
    effects: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(nodes):
        variant = float_only(qdq, fp32, [name], profile).SerializeToString()
        logits = run_logits(variant, rank_batches, threads)
        effects[name] = (agreement(ref, logits) - base_agree, mean_kl(ref, logits))
        if progress:
            progress(i + 3, total)
    order = sorted(nodes, key=lambda n: (-(base_kl - effects[n][1]), -effects[n][0], n))
    layers = tuple(
        LayerSensitivity(
            node=name,
            op_type=op_type[name],
            rank=rank,
            sqnr_db=_or_nan(sqnr.get(name, (None, None))[0]),
            input_sqnr_db=sqnr.get(name, (None, None))[1],
            weight_sqnr_db=weights.get(name),
            agreement_delta=effects[name][0],
            kl=effects[name][1],
            kl_gain=base_kl - effects[name][1],
        )
        for rank, name in enumerate(order, 1)
    )
    return Sensitivity(
        artifact=artifact,
        profile=profile.name,
        base_agreement=base_agree,
        base_kl=base_kl,
        calib_samples=len(calib_images),
        rank_images=int(sum(len(b) for b in rank_batches)),
        layers=layers,
        seconds=time.perf_counter() - start,
    )


def _or_nan(v: float | None) -> float:
    return math.nan if v is None else v


# ---- a finished run ---------------------------------------------------------------------------------


# ---- images ----------------------------------------------------------------------------------------


def load_images(batches: Iterable[Any], limit: int | None = None) -> np.ndarray:
    """Stack preprocessed :class:`~levit_edge.data.sources.Batch` images (up to ``limit``) into one array."""
    out: list[np.ndarray] = []
    n = 0
    iterator = iter(batches)
    try:
        for batch in iterator:
            out.append(np.asarray(batch.images, dtype=np.float32))
            n += len(batch.images)
            if limit is not None and n >= limit:
                break
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # a source generator stops its decoding threads here, not at garbage collection
    if not out:
        raise ValueError("no images")
    stacked = np.concatenate(out)
    return stacked[:limit] if limit is not None else stacked


__all__ = [
    "RANK_IMAGES",
    "SQNR_SAMPLES",
    "LayerSensitivity",
    "Sensitivity",
    "activation_sqnr",
    "float_only",
    "load_images",
    "measure",
    "quantized_inputs",
    "quantized_nodes",
    "weight_sqnr",
]
