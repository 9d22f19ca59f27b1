"""The speed levers tried for issue 5, each reproducible: graph shapes, Q/DQ recipes, session options.

Nothing here is used by the tool itself. ``run_benchmarks.py --suite levers`` builds every variant of
LeViT-128S and times them side by side in one process (and, given the trained fixture, measures the top-1
drop of every recipe), so that BENCHMARKS.md's lever table can be re-made on any CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from levit_edge.model import fuse
from levit_edge.quant.profiles import ORT_PROFILE, ORT_VNNI_PROFILE, TRT_PROFILE, QuantProfile

# ---- graph shapes -------------------------------------------------------------------------------------

GRAPHS = {
    "2d": "token trunk as 2-D (B*N, C): every Linear is one Gemm with its bias (the tool's graph)",
    "3d": "token trunk as 3-D (B, N, C): Linear = MatMul + broadcast Add (the graph before issue 5)",
    "conv": "timm's levit_conv_* layout: tokens as (B, C, H, W), linears as 1x1 Conv",
}


def _attention_3d(self: fuse.StaticAttention, x: torch.Tensor) -> torch.Tensor:
    h, n, kd, vd = self.num_heads, self.tokens, self.key_dim, self.val_dim
    q, k, v = self.qkv(x).reshape(-1, n, h, 2 * kd + vd).split([kd, kd, vd], dim=3)
    attn = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1)
    if self.scale != 1.0:
        attn = attn * self.scale
    attn = (attn + self.attention_bias).softmax(dim=-1)
    return self.proj((attn @ v.permute(0, 2, 1, 3)).transpose(1, 2).reshape(-1, n, self.val_attn_dim))


def _downsample_3d(self: fuse.StaticAttentionDownsample, x: torch.Tensor) -> torch.Tensor:
    h, kd, vd, s = self.num_heads, self.key_dim, self.val_dim, self.stride
    (rh, rw), (oh, ow) = self.resolution, self.out_resolution
    n, nq, c = rh * rw, oh * ow, self.in_dim
    k, v = self.kv(x).reshape(-1, n, h, kd + vd).split([kd, vd], dim=3)
    sub = x.reshape(-1, rh, rw, c)[:, ::s, ::s].reshape(-1, nq, c)
    q = self.q_proj(sub).reshape(-1, nq, h, kd).permute(0, 2, 1, 3)
    attn = q @ k.permute(0, 2, 3, 1)
    if self.scale != 1.0:
        attn = attn * self.scale
    attn = (attn + self.attention_bias).softmax(dim=-1)
    return self.proj((attn @ v.permute(0, 2, 1, 3)).transpose(1, 2).reshape(-1, nq, self.val_attn_dim))


def _levit_3d(self: fuse.FusedLevit, x: torch.Tensor) -> torch.Tensor:
    x = self.stem(x)
    c, hh, ww = (int(d) for d in x.shape[1:])
    x = self.stages(x.reshape(-1, c, hh * ww).transpose(1, 2))
    return self.head(x.mean(dim=1))


@contextlib.contextmanager
def graph_3d() -> Iterator[None]:
    """Temporarily give the fused modules their pre-issue-5 3-D token forward (same math, other graph)."""
    saved = (fuse.StaticAttention.forward, fuse.StaticAttentionDownsample.forward, fuse.FusedLevit.forward)
    fuse.StaticAttention.forward = _attention_3d  # type: ignore[method-assign]
    fuse.StaticAttentionDownsample.forward = _downsample_3d  # type: ignore[method-assign]
    fuse.FusedLevit.forward = _levit_3d  # type: ignore[method-assign]
    try:
        yield
    finally:
        fuse.StaticAttention.forward = saved[0]  # type: ignore[method-assign]
        fuse.StaticAttentionDownsample.forward = saved[1]  # type: ignore[method-assign]
        fuse.FusedLevit.forward = saved[2]  # type: ignore[method-assign]


# ---- Q/DQ recipes ---------------------------------------------------------------------------------------


def _ort(**changes: Any) -> QuantProfile:
    """The recipe ONNX Runtime users got before issue 5 (Q/DQ on the inputs of every Conv/Gemm/MatMul with
    weights), changed by ``changes``."""
    before = dataclasses.replace(
        ORT_PROFILE,
        name="ort-before",
        quantize_convs=True,
        quantize_conv_outputs=False,
        float_input_conv=False,
        fuse_attention=False,
    )
    return dataclasses.replace(before, **changes)


RECIPES: dict[str, tuple[QuantProfile, str]] = {
    "ort": (
        _ort(),
        "U8S8, 7-bit weights, Q/DQ on the inputs of Conv/Gemm/MatMul (the profile before issue 5)",
    ),
    "ort-noconv": (_ort(quantize_convs=False), "stem convolutions in float, no Q/DQ"),
    "ort-convout": (
        _ort(quantize_conv_outputs=True),
        "stem convolutions with quantized outputs (QLinearConv)",
    ),
    "ort-convout-no1st": (
        _ort(quantize_conv_outputs=True, float_input_conv=True),
        "QLinearConv stem, the 3-channel first convolution in float",
    ),
    "tool": (
        ORT_PROFILE,
        "the ort profile now: ort-noconv + residual Adds read the float tensor (float_bypass)",
    ),
    "tool-vnni": (ORT_VNNI_PROFILE, "the ort-vnni profile now: ort-convout-no1st + float_bypass"),
    "ort-attn": (
        _ort(quantize_attention_matmuls=True),
        "attention MatMuls (q@k, attn@v) quantized too (U8U8)",
    ),
    "ort-fullrange": (_ort(reduce_range=False), "U8S8 with 8-bit weights (no reduce_range)"),
    "u8u8": (_ort(weight_type="uint8", reduce_range=False), "U8U8: uint8 weights"),
    "s8s8": (
        _ort(activation_type="int8", symmetric_activations=True, reduce_range=False),
        "S8S8 symmetric activations, otherwise the ORT placement",
    ),
    "trt": (TRT_PROFILE, "the TensorRT profile (S8S8 symmetric, residual Adds) run by ONNX Runtime"),
}

# ---- session options ----------------------------------------------------------------------------------

SESSIONS: dict[str, tuple[dict[str, str], str, str]] = {
    # name: (session config entries, graph optimization level, what it is). Every timed session also stops
    # its workers' spinning when a Run returns (session.force_spinning_stop), so interleaved variants do not
    # steal each other's cores; "no-spin" stops spinning inside a Run too.
    "all": ({}, "all", "ORT_ENABLE_ALL (the tool's default)"),
    "extended": ({}, "extended", "ORT_ENABLE_EXTENDED (no layout transforms)"),
    "basic": ({}, "basic", "ORT_ENABLE_BASIC (no QDQ fusions: Q/DQ run as ops)"),
    "no-spin": ({"session.intra_op.allow_spinning": "0"}, "all", "worker threads never spin (block at once)"),
    "ftz": ({"session.set_denormal_as_zero": "1"}, "all", "denormals flushed to zero"),
}

# ---- verdicts (written after measuring; BENCHMARKS.md explains them) -----------------------------------

VERDICTS: dict[str, str] = {
    "2d/fp32": "kept: the tool's graph (FP32 4-15% faster than 3d, run to run)",
    "2d/ort": "replaced: float Convs on weights dequantized at every call",
    "2d/ort-noconv": "kept, + float_bypass = the ort profile",
    "2d/ort-convout": "not kept: the 3-channel first conv is slower quantized",
    "2d/ort-convout-no1st": "kept, + float_bypass = --ort-profile ort-vnni",
    "2d/tool": "the default ort profile",
    "2d/tool-vnni": "--ort-profile ort-vnni: for VNNI/AMX at 1 thread or batch 16",
    "2d/ort-attn": "not kept: U8U8 kernels + 44 more Q ops cost more than they save",
    "2d/ort-fullrange": "not kept: saturates without VNNI, no faster with it",
    "2d/u8u8": "not kept: slower and less accurate",
    "2d/s8s8": "not kept: x86 has no fast S8S8 kernel",
    "2d/trt": "TensorRT's recipe: for TensorRT only",
    "3d/fp32": "replaced by 2d",
    "3d/ort": "replaced by 2d",
    "3d/ort-noconv": "replaced by 2d",
    "conv/fp32": "not kept: within noise of 2d; a second layout to maintain",
    "conv/ort": "not kept: every 1x1 conv runs in float on dequantized weights",
    "conv/ort-convout": "not kept",
    "conv/ort-convout-no1st": "not kept: no faster than 2d with the same recipe",
    "2d/fp32@extended": "not kept: slower",
    "2d/ort@extended": "not kept: slower",
    "2d/fp32@basic": "not kept: slower",
    "2d/ort@basic": "not kept: Q/DQ run as ops",
    "2d/fp32@no-spin": "only for oversubscribed machines",
    "2d/ort@no-spin": "only for oversubscribed machines",
    "2d/fp32@ftz": "not kept: no effect",
    "2d/ort@ftz": "not kept: no effect",
    "2d/ort@saved-optimized": "deployment option: same speed, 3-7x faster session creation",
}

__all__ = ["GRAPHS", "RECIPES", "SESSIONS", "VERDICTS", "graph_3d"]
