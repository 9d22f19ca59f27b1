"""Graph passes for the ONNX Runtime INT8 model only (the TensorRT model keeps standard ONNX ops).

:func:`fuse_attention` replaces each LeViT attention core (q/k/v Transposes, ``q @ k``, the baked bias Add,
Softmax, ``attn @ v`` and the output Transpose: 8 nodes of small per-node work) by one ``com.microsoft``
``MultiHeadAttention`` node with the bias as ``attention_bias``. With ``head_major`` the qkv projection's
output channels are reordered from per-head ``[q k v]`` groups to ``[all q | all k | all v]``, so one Split
on the token axis feeds the fused node directly (no per-head Reshapes). Works on the float graph or on
its QDQ model (the attention core is float in the ort profile; per-channel weight Q/DQ is permuted too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class FuseResult:
    """What :func:`fuse_attention` changed."""

    fused: int  # attention cores replaced by MultiHeadAttention
    head_major: int  # projections whose output channels were reordered
    nodes_before: int
    nodes_after: int
    reordered: tuple[str, ...] = ()  # names of the projections (Gemm) whose output channels were reordered


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.refresh()
        inferred = onnx.shape_inference.infer_shapes(model)
        self.shapes: dict[str, list[int | None]] = {}
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            dims = vi.type.tensor_type.shape.dim
            self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        self._n = 0

    def refresh(self) -> None:
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def add_init(self, base: str, value: np.ndarray) -> str:
        self._n += 1
        name = f"{base}__lever{self._n}"
        self.g.initializer.append(numpy_helper.from_array(value, name))
        self.inits[name] = self.g.initializer[-1]
        return name

    def set_init(self, name: str, value: np.ndarray) -> None:
        self.inits[name].CopyFrom(
            numpy_helper.from_array(value.astype(numpy_helper.to_array(self.inits[name]).dtype), name)
        )

    def only(self, tensor: str, op: str, perm: list[int] | None = None) -> onnx.NodeProto | None:
        """The single consumer of ``tensor`` if it is ``op`` (with ``perm``)."""
        users = self.consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type != op:
            return None
        if perm is not None and _attr(users[0], "perm") != perm:
            return None
        return users[0]

    def made_by(self, tensor: str, op: str, perm: list[int] | None = None) -> onnx.NodeProto | None:
        node = self.producer.get(tensor)
        if node is None or node.op_type != op:
            return None
        if perm is not None and _attr(node, "perm") != perm:
            return None
        return node


def _attr(node: onnx.NodeProto, name: str) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


@dataclass
class _Core:
    softmax: onnx.NodeProto
    removed: list[onnx.NodeProto]
    q4: str
    k4: str
    v4: str
    bias: str
    scale: float
    out: str  # the output Transpose's tensor (B, S, h, vd): becomes MultiHeadAttention's (B, S, h*vd)
    heads: int


def _match(g: _Graph, softmax: onnx.NodeProto) -> _Core | None:
    if _attr(softmax, "axis") not in (-1, 3):
        return None
    add = g.made_by(softmax.input[0], "Add")
    if add is None or g.only(add.output[0], "Softmax") is None:
        return None
    bias_name = next((i for i in add.input if i in g.inits), None)
    scores = next((i for i in add.input if i != bias_name), None)
    if bias_name is None or scores is None:
        return None
    scale, mul = 1.0, g.made_by(scores, "Mul")
    if mul is not None:
        c = next((g.const(i) for i in mul.input if g.const(i) is not None), None)
        if c is None or c.size != 1 or len(g.consumers[mul.output[0]]) != 1:
            return None
        scale, scores = float(c.reshape(-1)[0]), next(i for i in mul.input if g.const(i) is None)
    mm1 = g.made_by(scores, "MatMul")
    mm2 = g.only(softmax.output[0], "MatMul")
    if (
        mm1 is None
        or mm2 is None
        or len(g.consumers[mm1.output[0]]) != 1
        or mm2.input[0] != softmax.output[0]
    ):
        return None
    qt = g.made_by(mm1.input[0], "Transpose", [0, 2, 1, 3])
    kt = g.made_by(mm1.input[1], "Transpose", [0, 2, 3, 1])
    vt = g.made_by(mm2.input[1], "Transpose", [0, 2, 1, 3])
    out_t = g.only(mm2.output[0], "Transpose", [0, 2, 1, 3])
    if qt is None or kt is None or vt is None or out_t is None:
        return None
    if any(len(g.consumers[t.output[0]]) != 1 for t in (qt, kt, vt)):
        return None
    bias = numpy_helper.to_array(g.inits[bias_name])
    if bias.ndim not in (3, 4):
        return None
    removed = [qt, kt, mm1, *([mul] if mul is not None else []), add, softmax, vt, mm2, out_t]
    return _Core(
        softmax,
        removed,
        qt.input[0],
        kt.input[0],
        vt.input[0],
        bias_name,
        scale,
        out_t.output[0],
        int(bias.shape[-3]),
    )


def _head_dims(g: _Graph, tensor: str) -> tuple[int, int] | None:
    shape = g.shapes.get(tensor)
    if shape is None or len(shape) != 4 or shape[1] is None or shape[2] is None or shape[3] is None:
        return None
    return shape[1], shape[3]  # tokens, head size


def fuse_attention(model: onnx.ModelProto, head_major: bool = False) -> FuseResult:
    """Rewrite ``model`` in place (see the module docstring); returns what changed."""
    g = _Graph(model)
    before = len(g.g.node)
    fused = 0
    reordered: list[str] = []
    for softmax in [n for n in g.g.node if n.op_type == "Softmax"]:
        core = _match(g, softmax)
        if core is None:
            continue
        dims = {t: _head_dims(g, t) for t in (core.q4, core.k4, core.v4)}
        if any(d is None for d in dims.values()):
            continue
        h = core.heads
        position = list(g.g.node).index(core.removed[-1])
        new_nodes: list[onnx.NodeProto] = []
        inputs: list[str] = []
        split = g.made_by(core.k4, "Split") if head_major else None
        direct: set[str] = set()
        gemm = _reorder_heads(g, split, h, core) if split is not None else ""
        if split is not None and gemm:
            reordered.append(gemm)
            direct = set(split.output)
        for t in (core.q4, core.k4, core.v4):
            if t in direct or _flatten_heads_in_place(g, t):
                inputs.append(t)
            else:
                _, d = dims[t]  # type: ignore[misc]
                shape = g.add_init("mha_shape", np.array([0, 0, h * d], np.int64))
                new_nodes.append(helper.make_node("Reshape", [t, shape], [f"{t}__3d"], name=f"{t}__3d"))
                inputs.append(f"{t}__3d")
        bias = numpy_helper.to_array(g.inits[core.bias])
        bias4 = g.add_init(core.bias, bias.reshape(1, *bias.shape[-3:]).astype(np.float32))
        new_nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [*inputs, "", "", bias4],
                [core.out],
                name=f"{core.softmax.name}__mha",
                domain=MS_DOMAIN,
                num_heads=h,
                scale=core.scale,
            )
        )
        for n in core.removed:
            g.g.node.remove(n)
        for i, n in enumerate(new_nodes):
            g.g.node.insert(position - len(core.removed) + 1 + i, n)
        g.refresh()
        fused += 1
    if fused:
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
        # Shapes recorded by the quantizer describe 4-D tensors this pass made 3-D: let ORT infer them.
        del model.graph.value_info[:]
        _drop_unused(g)
    return FuseResult(fused, len(reordered), before, len(g.g.node), tuple(reordered))


def head_major_projections(model: onnx.ModelProto) -> set[str]:
    """Projections (Gemm names) a head-major :func:`fuse_attention` reordered: the Gemm feeding, through one
    Reshape, a Split on the channel axis of a 3-D tensor whose outputs all go to MultiHeadAttention."""
    g = _Graph.__new__(_Graph)  # only the producer/consumer maps: no shape inference needed here
    g.model, g.g = model, model.graph
    g.refresh()
    found = set()
    for split in (n for n in model.graph.node if n.op_type == "Split" and _attr(n, "axis") == 2):
        users = [u for o in split.output for u in g.consumers.get(o, [])]
        if not users or any(u.op_type != "MultiHeadAttention" for u in users):
            continue
        reshape = g.made_by(split.input[0], "Reshape")
        gemm = g.made_by(reshape.input[0], "Gemm") if reshape is not None else None
        if gemm is not None:
            found.add(gemm.name)
    return found


def in_layout_of(fp32: onnx.ModelProto, fused: onnx.ModelProto) -> onnx.ModelProto:
    """``fp32`` in the graph layout of ``fused`` (a model of the same network that :func:`fuse_attention`
    rewrote): fused the same way, so its weights, biases and tensors have the fused model's names *and*
    channel order. The per-layer float fallback swaps these FP32 weights into the INT8 graph; with
    head-major qkv weights the original layout would silently compute a different model.

    Returned unchanged when ``fused`` has no MultiHeadAttention or ``fp32`` is already fused; raises
    ``ValueError`` when the FP32 graph does not fuse into the same attention nodes and projections.
    """

    def mha(m: onnx.ModelProto) -> int:
        return sum(1 for n in m.graph.node if n.op_type == "MultiHeadAttention" and n.domain == MS_DOMAIN)

    if not mha(fused) or mha(fp32):
        return fp32
    wanted = head_major_projections(fused)
    out = onnx.ModelProto()
    out.CopyFrom(fp32)
    result = fuse_attention(out, head_major=bool(wanted))
    if result.fused != mha(fused) or set(result.reordered) != wanted:
        raise ValueError(
            f"the FP32 graph fuses into {result.fused} attention nodes ({len(result.reordered)} head-major), "
            f"the INT8 graph has {mha(fused)} ({len(wanted)}): not the same network"
        )
    return out


def _reorder_heads(g: _Graph, split: onnx.NodeProto, h: int, core: _Core) -> str:
    """Split(axis 3) of Reshape(Gemm, (-1, N, h, D)) -> Split(axis 2) of Reshape(Gemm', (-1, N, h*D)), with
    Gemm's output channels reordered head-major; returns the Gemm's name, "" (nothing changed) if the
    pattern is not there."""
    if _attr(split, "axis") not in (3, -1) or len(split.input) < 2:
        return ""
    if not set(split.output) <= {core.q4, core.k4, core.v4}:
        return ""
    sizes = g.const(split.input[1])
    reshape = g.made_by(split.input[0], "Reshape")
    if sizes is None or reshape is None or len(g.consumers[reshape.output[0]]) != 1:
        return ""
    shape = g.const(reshape.input[1])
    gemm = g.made_by(reshape.input[0], "Gemm")
    if shape is None or gemm is None or len(shape) != 4 or int(shape[2]) != h or _attr(gemm, "transB") != 1:
        return ""
    if len(g.consumers[gemm.output[0]]) != 1 or len(gemm.input) < 3:
        return ""
    d_total = int(shape[3])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    perm = np.concatenate(
        [
            head * d_total + off + np.arange(size)
            for off, size in zip(offsets, sizes, strict=True)
            for head in range(h)
        ]
    )
    done: set[str] = set()
    # the weight may be reordered before the bias is found not to fit: put every touched tensor back then
    touched = [gemm.input[1], gemm.input[2]]
    dqs = [dq for t in touched if (dq := g.made_by(t, "DequantizeLinear")) is not None]
    touched += [i for dq in dqs for i in dq.input if i]
    saved = {name: numpy_helper.to_array(g.inits[name]) for name in touched if name in g.inits}
    if not (_permute_rows(g, gemm.input[1], perm, done) and _permute_rows(g, gemm.input[2], perm, done)):
        for name, value in saved.items():
            g.set_init(name, value)
        return ""
    reshape.input[1] = g.add_init("mha_tokens", np.array([-1, int(shape[1]), h * d_total], np.int64))
    split.input[1] = g.add_init("mha_split", (sizes * h).astype(np.int64))
    for a in split.attribute:
        if a.name == "axis":
            a.i = 2
    return gemm.name


def _flatten_heads_in_place(g: _Graph, tensor: str) -> bool:
    """A Reshape to (-1, S, h, d) read only by the removed Transpose becomes a Reshape to (-1, S, h*d)."""
    reshape = g.made_by(tensor, "Reshape")
    if reshape is None or len(g.consumers.get(tensor, [])) != 1:
        return False
    shape = g.const(reshape.input[1])
    if shape is None or len(shape) != 4 or min(int(shape[1]), int(shape[2]), int(shape[3])) < 1:
        return False
    new = np.array([int(shape[0]), int(shape[1]), int(shape[2]) * int(shape[3])], np.int64)
    reshape.input[1] = g.add_init("mha_tokens", new)
    return True


def _permute_rows(g: _Graph, tensor: str, perm: np.ndarray, done: set[str]) -> bool:
    """Reorder axis 0 of a weight or bias, float or behind a per-channel DequantizeLinear."""
    n = len(perm)
    if tensor in g.inits:
        value = numpy_helper.to_array(g.inits[tensor])
        if value.shape[0] != n or len(g.consumers[tensor]) != 1:
            return False
        g.set_init(tensor, value[perm])
        return True
    dq = g.made_by(tensor, "DequantizeLinear")
    if dq is None or len(g.consumers[tensor]) != 1 or not all(i in g.inits for i in dq.input if i):
        return False
    axis = _attr(dq, "axis")
    for i, name in enumerate(dq.input):
        if not name:
            continue
        value = numpy_helper.to_array(g.inits[name])
        if i == 0:
            if value.shape[0] != n or (value.ndim > 1 and axis not in (None, 0)):
                return False
            g.set_init(name, value[perm])
        elif value.size == n and name not in done:  # a scale shared by weight and bias: reorder it once
            g.set_init(name, value[perm])
            done.add(name)
        elif value.size != 1:
            return False
    return True


def _drop_unused(g: _Graph) -> None:
    outputs = {o.name for o in g.g.output}
    while True:
        g.refresh()
        dead = [n for n in g.g.node if not any(o in g.consumers or o in outputs for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.g.node.remove(n)
    used = {i for n in g.g.node for i in n.input}
    keep = [i for i in g.g.initializer if i.name in used]
    del g.g.initializer[:]
    g.g.initializer.extend(keep)
