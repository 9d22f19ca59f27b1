"""Quantization profiles: which tensors get Q/DQ, with which types, for each target.

Both profiles consume the same ``calibration.json``; they differ only in how its ranges are applied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnxruntime.quantization import QuantType

WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")


@dataclass(frozen=True)
class QuantProfile:
    """One target's INT8 recipe, applied with ONNX Runtime's QDQ quantizer."""

    name: str
    activation_type: str  # "uint8" or "int8"
    weight_type: str
    reduce_range: bool
    symmetric_activations: bool
    quantize_bias: bool
    quantize_attention_matmuls: bool  # activation x activation MatMuls (q @ k, attn @ v)
    quantize_residual_adds: bool
    quantize_convs: bool = True  # False: every Conv (the stem) stays float, with no Q/DQ at all
    # Conv outputs keep a Q/DQ pair, so ONNX Runtime runs QLinearConv (uint8 in and out). Without it a Conv
    # whose output is float is not fused: it runs in float on weights dequantized at every call.
    quantize_conv_outputs: bool = False
    float_input_conv: bool = False  # leave the convolution reading the image (3 channels) in float
    # Consumers the profile does not quantize (the residual Adds beside a quantized Gemm) read the float
    # tensor instead of its quantize-dequantize copy: no DequantizeLinear left to run, and an exact residual.
    float_bypass: bool = False
    # ONNX Runtime only: each attention core becomes one com.microsoft MultiHeadAttention node, qkv weights
    # head-major (levit_edge/export/ort_levers.py). Standard ONNX ops stay for TensorRT.
    fuse_attention: bool = False
    head_major: bool = False  # with fuse_attention: qkv output channels reordered, no per-head Reshapes
    why: tuple[str, ...] = field(default_factory=tuple)

    def quant_types(self) -> tuple[QuantType, QuantType]:
        def qt(t: str) -> QuantType:
            return QuantType.QUInt8 if t == "uint8" else QuantType.QInt8

        return qt(self.activation_type), qt(self.weight_type)

    def extra_options(self) -> dict[str, Any]:
        """ORT quantizer options. Its keys are not validated by ORT, so they live only here, spelled once."""
        return {
            "ActivationSymmetric": self.symmetric_activations,
            "WeightSymmetric": True,
            "QuantizeBias": self.quantize_bias,
            # Q/DQ on the inputs of weighted ops, not their outputs (TensorRT placement), except Conv outputs
            # where the profile asks for QLinearConv chains.
            "OpTypesToExcludeOutputQuantization": [
                op for op in WEIGHTED_OPS if not (op == "Conv" and self.quantize_conv_outputs)
            ],
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1, "Conv": 0},
        }

    def select_nodes(self, model: onnx.ModelProto) -> list[str]:
        """Names of the nodes this profile quantizes in ``model``."""
        inits = {i.name for i in model.graph.initializer}
        consts = inits | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
        graph_inputs = {i.name for i in model.graph.input}
        chosen = []
        for node in model.graph.node:
            const_inputs = sum(1 for i in node.input if i in consts)
            if node.op_type == "Conv" and (
                not self.quantize_convs or (self.float_input_conv and node.input[0] in graph_inputs)
            ):
                continue
            weighted = node.op_type in ("Conv", "Gemm") or (node.op_type == "MatMul" and const_inputs >= 1)
            attention = node.op_type == "MatMul" and self.quantize_attention_matmuls
            residual = node.op_type == "Add" and self.quantize_residual_adds and const_inputs == 0
            if weighted or attention or residual:
                chosen.append(node.name)
        return chosen

    def describe(self) -> dict[str, Any]:
        """What the report says about this profile."""
        return {
            "format": "QDQ",
            "activations": self.activation_type
            + (" symmetric" if self.symmetric_activations else " asymmetric"),
            "weights": f"{self.weight_type} symmetric per-channel"
            + (", 7-bit (reduce_range)" if self.reduce_range else ""),
            "ops": [op for op in WEIGHTED_OPS if op != "Conv" or self.quantize_convs]
            + (["MatMul (attention)"] if self.quantize_attention_matmuls else [])
            + (["Add (residual)"] if self.quantize_residual_adds else [])
            + (["Conv outputs (QLinearConv)"] if self.quantize_conv_outputs else []),
            "graph": "attention fused (com.microsoft MultiHeadAttention"
            + (", head-major qkv weights)" if self.head_major else ")")
            if self.fuse_attention
            else "standard ONNX ops",
            "float": ["Softmax", "HardSwish", "attention bias Add"]
            + ([] if self.quantize_attention_matmuls else ["attention MatMuls"])
            + (["Conv (the stem)"] if not self.quantize_convs else [])
            + (["the first Conv (image input)"] if self.quantize_convs and self.float_input_conv else []),
            "bias": "int32" if self.quantize_bias else "float",
            "why": list(self.why),
        }


ORT_PROFILE = QuantProfile(
    name="ort",
    activation_type="uint8",
    weight_type="int8",
    reduce_range=True,
    symmetric_activations=False,
    quantize_bias=True,
    quantize_attention_matmuls=False,
    quantize_residual_adds=False,
    quantize_convs=False,
    float_bypass=True,
    fuse_attention=True,
    head_major=True,
    why=(
        "U8S8 is the pair ONNX Runtime's x86 and ARM integer kernels are fastest with",
        "reduce_range (7-bit weights) avoids the saturating U8S8 sums of AVX2 CPUs without VNNI, which cost "
        "26 top-1 points on LeViT-128S; VNNI and ARM lose nothing by it",
        "only the projections (Gemm/MatMul with weights) are quantized; the attention core stays float",
        "the convolution stem stays float: with Q/DQ on its inputs only, ONNX Runtime ran the convs in float "
        "on weights dequantized at every call (slower than FP32); a QLinearConv stem (ort-vnni) ties with "
        "the float stem without VNNI and loses to it with 16 threads (BENCHMARKS.md)",
        "residual Adds read the float residual stream, not its quantize-dequantize copy (no DequantizeLinear "
        "runs)",
        "each attention core is one com.microsoft MultiHeadAttention node (the baked bias as attention_bias) "
        "and the qkv weights are head-major, so one Split feeds it with no per-head Reshape or Transpose: "
        "222 nodes run instead of 299; on the 16-core Xeon 1.04x-1.09x the standard-ops graph at batch 1 "
        "(1, 4, 16 threads) and 1.19x-1.23x at batch 16 (BENCHMARKS.md); the per-layer float fallback fuses "
        "its FP32 reference the same way",
    ),
)

ORT_VNNI_PROFILE = dataclasses.replace(
    ORT_PROFILE,
    name="ort-vnni",
    quantize_convs=True,
    quantize_conv_outputs=True,
    float_input_conv=True,
    why=(
        *ORT_PROFILE.why[:3],
        ORT_PROFILE.why[4],
        ORT_PROFILE.why[5],
        "for AVX-512 VNNI / AMX CPUs at one thread: the stem runs as QLinearConv chains (quantized Conv "
        "outputs), the 3-channel first conv in float; batch 1 on one thread of a VNNI Xeon, x FP32: "
        "LeViT-128S 1.49-1.96 vs 1.61-1.87 for the float stem, LeViT-384 2.45-2.93 vs 2.06-2.24 "
        "(BENCHMARKS.md); slower than the float stem with 16 threads",
    ),
)

TRT_PROFILE = QuantProfile(
    name="trt",
    activation_type="int8",
    weight_type="int8",
    reduce_range=False,
    symmetric_activations=True,
    quantize_bias=False,
    quantize_attention_matmuls=False,
    quantize_residual_adds=True,
    why=(
        "TensorRT explicit quantization: symmetric signed INT8, zero points 0, float biases",
        "Q/DQ on the inputs of Conv/MatMul/Gemm and on residual Adds; Softmax and the attention core "
        "in float",
    ),
)

PROFILES = {p.name: p for p in (ORT_PROFILE, ORT_VNNI_PROFILE, TRT_PROFILE)}
ORT_PROFILES = {name: p for name, p in PROFILES.items() if name.startswith("ort")}
