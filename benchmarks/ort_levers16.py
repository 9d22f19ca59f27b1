"""Issue 16, item 2: the ort-profile levers not tried before, built from one run's calibration.

Graph levers (each an INT8 ONNX file, same calibration ranges as the run's ``model.int8.ort.onnx``):

* ``int8.ort``: the ort profile (fused MultiHeadAttention, head-major qkv weights);
* ``int8.ort-std``: the same Q/DQ with standard ONNX ops (the profile before issue 16);
* ``int8.ort+qdq-prop``: activations kept quantized across Reshape / Transpose / Split (those ops added to
  the quantizer's op types with ``ForceQuantizeNoInputCheck``), then fused like the profile;
* ``int8.qop``: ONNX Runtime's QOperator format (QLinear* / QGemm ops instead of Q/DQ pairs), fused where
  the pass finds the pattern;
* ``int8.ort-vnni``: the ort-vnni profile (QLinearConv stem), which inherits the fusion.

Session levers (the ``int8.ort`` file, other ONNX Runtime session options): intra-op spinning off, dynamic
block base 4, worker threads pinned one per logical processor, the parallel executor with 2 inter-op threads,
and ONNX Runtime's default spinning between runs (the bench's sessions stop it after every run).
"""

from __future__ import annotations

import collections
import dataclasses
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantFormat, quantize_static
from onnxruntime.quantization.calibrate import save_tensors_data

from levit_edge.backends.onnxruntime import OnnxRuntimeRunner, session_options
from levit_edge.bench import INTERLEAVED_SESSION_CONFIG
from levit_edge.export.ort_levers import fuse_attention
from levit_edge.quant.calibrate import Calibration, ort_scratch
from levit_edge.quant.profiles import ORT_PROFILE, ORT_VNNI_PROFILE, QuantProfile
from levit_edge.quant.quantize import bypass_unquantized_consumers, quantize

PROPAGATED_OPS = ("Reshape", "Transpose", "Split")


def _variant(
    fp32: Path,
    cal: Calibration,
    profile: QuantProfile,
    out: Path,
    fmt: QuantFormat,
    extra_ops: tuple[str, ...] = (),
    extra_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """quantize() with another format / more op types (the product's quantize() is QDQ only)."""
    model = onnx.load(str(fp32))
    nodes = profile.select_nodes(model) + [n.name for n in model.graph.node if n.op_type in extra_ops]
    op_types = sorted({n.op_type for n in model.graph.node if n.name in set(nodes)})
    activation_type, weight_type = profile.quant_types()
    with tempfile.TemporaryDirectory(prefix="levit-lever-") as tmp:
        cache = Path(tmp) / "ranges.json"
        tensors = cal.tensors_data()
        save_tensors_data(tensors, cache)
        tmp_out = Path(tmp) / "model.onnx"
        with ort_scratch(fp32, Path(tmp), out) as local:
            quantize_static(
                str(local),
                str(tmp_out),
                calibration_data_reader=None,
                quant_format=fmt,
                op_types_to_quantize=op_types,
                per_channel=True,
                reduce_range=profile.reduce_range,
                activation_type=activation_type,
                weight_type=weight_type,
                nodes_to_quantize=nodes,
                calibrate_method=tensors.calibration_method,
                extra_options={**profile.extra_options(), **(extra_options or {})},
                calibration_cache_path=str(cache),
            )
        qmodel = onnx.load(str(tmp_out))
    if profile.float_bypass and fmt == QuantFormat.QDQ:
        bypass_unquantized_consumers(qmodel, set(nodes))
    fused = fuse_attention(qmodel, head_major=profile.head_major) if profile.fuse_attention else None
    onnx.save(qmodel, str(out))
    return {"fused": fused.fused if fused else 0, "head_major": fused.head_major if fused else 0}


def graph_ops(path: Path, optimized: bool = True) -> dict[str, int]:
    """Op counts of the file, or of the graph ONNX Runtime runs after its optimizations."""
    if not optimized:
        return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node))
    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "opt.onnx"
        ort.InferenceSession(
            str(path), session_options(1, optimized_path=opt), providers=["CPUExecutionProvider"]
        )
        return dict(collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node))


def build_graph_levers(fp32: Path, cal: Calibration, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Write every graph lever into ``out_dir``; ``name -> {path, what, nodes in the file and as run}``."""
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, what: str, path: Path, info: Mapping[str, Any] | None = None) -> None:
        out[name] = {
            "path": str(path),
            "what": what,
            "file_nodes": sum(graph_ops(path, optimized=False).values()),
            "ops_run": graph_ops(path),
            **(info or {}),
        }
        out[name]["nodes_run"] = sum(out[name]["ops_run"].values())

    std = dataclasses.replace(ORT_PROFILE, name="ort-std", fuse_attention=False, head_major=False)
    p = out_dir / "model.lever.int8.ort.onnx"
    quantize(fp32, cal, ORT_PROFILE, p)
    add("int8.ort", "the ort profile: MultiHeadAttention + head-major qkv", p)
    p = out_dir / "model.lever.int8.ort-std.onnx"
    quantize(fp32, cal, std, p)
    add("int8.ort-std", "the same Q/DQ, standard ONNX ops (before issue 16)", p)
    p = out_dir / "model.lever.int8.ort-qdq-prop.onnx"
    info = _variant(
        fp32, cal, ORT_PROFILE, p, QuantFormat.QDQ, PROPAGATED_OPS, {"ForceQuantizeNoInputCheck": True}
    )
    add("int8.ort+qdq-prop", "activations kept quantized across Reshape/Transpose/Split, fused", p, info)
    p = out_dir / "model.lever.int8.qop.onnx"
    info = _variant(fp32, cal, ORT_PROFILE, p, QuantFormat.QOperator)
    add("int8.qop", "QOperator format (QLinear*/QGemm ops), fused where found", p, info)
    p = out_dir / "model.lever.int8.ort-vnni.onnx"
    quantize(fp32, cal, ORT_VNNI_PROFILE, p)
    add("int8.ort-vnni", "the ort-vnni profile (QLinearConv stem), fused", p)
    return out


class _ParallelRunner(OnnxRuntimeRunner):
    """ONNX Runtime's parallel executor (independent nodes on ``inter`` inter-op threads)."""

    def __init__(self, model: Path, threads: int | None, inter: int, config: Mapping[str, str]) -> None:
        super().__init__(model, threads, config=config)
        self.inter = inter

    def activate(self) -> None:
        opts = session_options(self.threads, config=self.config)
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        opts.inter_op_num_threads = self.inter
        self.session = ort.InferenceSession(str(self.model), opts, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self._input, self._output = first.name, self.session.get_outputs()[0].name
        self.batch_range = None


def _pinned(threads: int | None) -> dict[str, str]:
    # one logical processor (1-based ids) per worker thread; ORT does not pin the calling thread
    n = threads or 1
    return {"session.intra_op_thread_affinities": ";".join(str(i) for i in range(2, n + 1))} if n > 1 else {}


SESSION_LEVERS: dict[str, tuple[str, Callable[[int | None], dict[str, str]]]] = {
    "int8.ort nospin": (
        "session.intra_op.allow_spinning=0",
        lambda t: {"session.intra_op.allow_spinning": "0"},
    ),
    "int8.ort dbb4": ("session.dynamic_block_base=4", lambda t: {"session.dynamic_block_base": "4"}),
    "int8.ort pinned": ("session.intra_op_thread_affinities: one processor per worker", _pinned),
}


def session_factories(model: Path) -> dict[str, Callable[[int | None], OnnxRuntimeRunner]]:
    """Runner factories of the session levers on ``model`` (plus the parallel executor)."""
    out: dict[str, Callable[[int | None], OnnxRuntimeRunner]] = {}
    for name, (_what, extra) in SESSION_LEVERS.items():
        out[name] = lambda t, e=extra: OnnxRuntimeRunner(
            model, t, config={**INTERLEAVED_SESSION_CONFIG, **e(t)}
        )
    out["int8.ort parallel"] = lambda t: _ParallelRunner(model, t, 2, INTERLEAVED_SESSION_CONFIG)
    # ONNX Runtime's default: worker threads keep spinning after a run, so the next of the consecutive calls
    # finds them awake (the bench stops spinning after every run so one runner's threads do not steal the
    # cores of the next; last in the round, this one's spin overlaps only the next round's first variant)
    out["int8.ort spin-kept"] = lambda t: OnnxRuntimeRunner(model, t)
    return out


SESSION_WHAT = {
    **{name: what for name, (what, _e) in SESSION_LEVERS.items()},
    "int8.ort parallel": "ExecutionMode.ORT_PARALLEL, inter_op_num_threads=2",
    "int8.ort spin-kept": "no session.force_spinning_stop (ONNX Runtime's default; the bench sets it)",
}
