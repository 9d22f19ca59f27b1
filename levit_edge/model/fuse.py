"""Fuse a timm LeViT into static tensors for export.

* BatchNorm is folded by timm's own ``fuse()`` protocol (``reparameterize_model``).
* Each attention block's relative-position bias is gathered once into a constant buffer, so the exported
  graph holds no Gather or index arithmetic and ``.to(device/dtype)`` moves the bias with the model.
* The attention scale is folded into the query projection where the scale is a power of two (exact).
* The class and distillation heads become one Linear producing the same averaged logits.
* Every reshape uses -1 for the batch and constants elsewhere, so no Shape/Gather arithmetic is exported.
* Token-layout models run their trunk on 2-D ``(batch * tokens, channels)`` tensors, so every Linear exports
  as one Gemm with its bias (ONNX Runtime runs a 3-D MatMul and a separate broadcast Add otherwise, and its
  quantized graph gets a QGemm with an int32 bias instead of MatMulIntegerToFloat + Add). The attention
  modules keep the shape they are given: 3-D ``(B, N, C)`` in, 3-D out.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from timm.models.levit import Attention, AttentionDownsample, Levit
from timm.utils import reparameterize_model
from torch import nn

from levit_edge.errors import UserError


def _scale_is_exact(scale: float) -> bool:
    return math.log2(scale).is_integer()


def _fold_scale(layer: nn.Module, rows: list[int] | None, scale: float) -> None:
    """Multiply the output channels ``rows`` (all if None) of a fused Linear/1x1 Conv by ``scale``."""
    assert isinstance(layer, nn.Linear | nn.Conv2d) and layer.bias is not None
    sel: slice | list[int] = slice(None) if rows is None else rows
    with torch.no_grad():
        layer.weight[sel] *= scale
        layer.bias[sel] *= scale


def _split_qkv_rows(num_heads: int, key_dim: int, val_dim: int) -> list[int]:
    """Row indices of the query channels in timm's interleaved per-head [q, k, v] qkv projection."""
    per_head = 2 * key_dim + val_dim
    return [h * per_head + i for h in range(num_heads) for i in range(key_dim)]


def _tokens(rank: int, n: int, c: int) -> tuple[int, ...]:
    """Shape of ``n`` tokens of ``c`` channels: (B*N, C) for rank 2, (B, N, C) for rank 3."""
    return (-1, c) if rank == 2 else (-1, n, c)


class _BakedBiasAttention(nn.Module):
    """What LeViT's two attention kinds share: head sizes, the baked bias, scale, softmax and output."""

    use_conv: bool
    num_heads: int
    key_dim: int
    val_dim: int
    val_attn_dim: int
    scale: float
    attention_bias: torch.Tensor

    def _take_common(self, attn: Any) -> None:
        """Copy head sizes and the output projection, bake the bias; call after the input projections."""
        self.use_conv = bool(attn.use_conv)
        self.num_heads = int(attn.num_heads)
        self.key_dim = int(attn.key_dim)
        self.val_dim = int(attn.val_dim)
        self.val_attn_dim = int(attn.val_attn_dim)
        self.resolution = tuple(int(r) for r in attn.resolution)
        self.proj = attn.proj
        bias = attn.attention_biases.detach()[:, attn.attention_bias_idxs].clone()
        self.register_buffer("attention_bias", bias.unsqueeze(0))  # (1, heads, Nq, Nk)
        self.scale = float(attn.scale)

    def _attend(
        self, logits: torch.Tensor, v: torch.Tensor, conv_shape: tuple[int, int], tokens: int, rank: int
    ) -> torch.Tensor:
        """Scale (if not folded), add the bias, softmax, weight the values and project."""
        if self.scale != 1.0:
            logits = logits * self.scale
        attn = (logits + self.attention_bias).softmax(dim=-1)
        if self.use_conv:
            x = (v @ attn.transpose(-2, -1)).reshape(-1, self.val_attn_dim, *conv_shape)
        else:
            x = (attn @ v).transpose(1, 2).reshape(_tokens(rank, tokens, self.val_attn_dim))
        return self.proj(x)


class StaticAttention(_BakedBiasAttention):
    """LeViT self-attention with the bias baked in (token layout B,N,C or conv layout B,C,H,W)."""

    def __init__(self, timm_attn: Attention) -> None:
        super().__init__()
        attn: Any = timm_attn  # timm's attributes are untyped (int | tuple unions, Tensor | Module)
        self.qkv = attn.qkv
        self._take_common(attn)
        self.tokens = int(attn.resolution[0] * attn.resolution[1])
        if _scale_is_exact(self.scale):
            rows = _split_qkv_rows(self.num_heads, self.key_dim, self.val_dim)
            _fold_scale(self.qkv, rows, self.scale)
            self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, n, kd, vd = self.num_heads, self.tokens, self.key_dim, self.val_dim
        rank = x.dim()  # token layout: 2 in the fused trunk (B*N, C), 3 when called on (B, N, C)
        if self.use_conv:
            q, k, v = self.qkv(x).reshape(-1, h, 2 * kd + vd, n).split([kd, kd, vd], dim=2)
            logits = q.transpose(-2, -1) @ k
        else:
            q, k, v = self.qkv(x).reshape(-1, n, h, 2 * kd + vd).split([kd, kd, vd], dim=3)
            q = q.permute(0, 2, 1, 3)
            v = v.permute(0, 2, 1, 3)
            logits = q @ k.permute(0, 2, 3, 1)
        rh, rw = self.resolution
        return self._attend(logits, v, (rh, rw), n, rank)


class StaticAttentionDownsample(_BakedBiasAttention):
    """LeViT's shrinking attention (queries from a strided subsample) with the bias baked in."""

    def __init__(self, timm_attn: AttentionDownsample) -> None:
        super().__init__()
        attn: Any = timm_attn
        down = attn.q.down
        if getattr(down, "pool", None) is not None or (
            isinstance(down, nn.AvgPool2d) and down.kernel_size != 1
        ):
            raise UserError("LeViT variants with pooled attention downsampling are not supported")
        self.kv = attn.kv
        self.q_proj = attn.q.ln
        self._take_common(attn)
        self.stride = int(attn.stride)
        self.out_resolution = tuple((r - 1) // self.stride + 1 for r in self.resolution)
        self.in_dim = int(attn.kv.weight.shape[1])
        if _scale_is_exact(self.scale):
            _fold_scale(self.q_proj, None, self.scale)
            self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, kd, vd, s = self.num_heads, self.key_dim, self.val_dim, self.stride
        (rh, rw), (oh, ow) = self.resolution, self.out_resolution
        n, nq = rh * rw, oh * ow
        rank = x.dim()
        if self.use_conv:
            k, v = self.kv(x).reshape(-1, h, kd + vd, n).split([kd, vd], dim=2)
            q = self.q_proj(x[:, :, ::s, ::s]).reshape(-1, h, kd, nq)
            logits = q.transpose(-2, -1) @ k
        else:
            k, v = self.kv(x).reshape(-1, n, h, kd + vd).split([kd, vd], dim=3)
            c = self.in_dim  # a constant: reading x.shape would export Shape/Gather arithmetic
            sub = x.reshape(-1, rh, rw, c)[:, ::s, ::s].reshape(_tokens(rank, nq, c))
            q = self.q_proj(sub).reshape(-1, nq, h, kd).permute(0, 2, 1, 3)
            v = v.permute(0, 2, 1, 3)
            logits = q @ k.permute(0, 2, 3, 1)
        return self._attend(logits, v, (oh, ow), nq, rank)


class FusedLevit(nn.Module):
    """The inference-only LeViT: fused stem and stages, one classifier head, static shapes but batch."""

    def __init__(self, model: Levit) -> None:
        super().__init__()
        self.use_conv = bool(model.use_conv)
        self.global_pool = str(model.global_pool)
        self.num_classes = int(model.num_classes)
        self.num_features = int(model.num_features)
        self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        self.default_cfg = self.pretrained_cfg
        self.stem = model.stem
        self.stages = model.stages
        self.head = _merge_heads(model.head, getattr(model, "head_dist", None))
        self.out_tokens = _out_tokens(self.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.use_conv:
            x = self.stages(x)
            return self.head(x.mean(dim=(-2, -1)) if self.global_pool == "avg" else x)
        c, hh, ww = (int(d) for d in x.shape[1:])
        # (B, C, H, W) -> (B*N, C): the whole trunk runs on 2-D tokens, so each Linear is one Gemm.
        x = x.reshape(-1, c, hh * ww).transpose(1, 2).reshape(-1, c)
        x = self.stages(x).reshape(-1, self.out_tokens, self.num_features)
        return self.head(x.mean(dim=1) if self.global_pool == "avg" else x)


def _out_tokens(stages: nn.Module) -> int:
    """Tokens leaving the last stage: those of its last attention module (every LeViT stage has one)."""
    last = [m for m in stages.modules() if isinstance(m, StaticAttention | StaticAttentionDownsample)][-1]
    if isinstance(last, StaticAttentionDownsample):
        return last.out_resolution[0] * last.out_resolution[1]
    return last.tokens


def _merge_heads(head: nn.Module, head_dist: nn.Module | None) -> nn.Module:
    """One Linear equal to ``(head(x) + head_dist(x)) / 2`` (or the head alone for a plain Levit)."""
    if head_dist is None or isinstance(head, nn.Identity):
        return head
    assert isinstance(head, nn.Linear) and isinstance(head_dist, nn.Linear)
    merged = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        merged.weight.copy_((head.weight + head_dist.weight) / 2)
        b1 = head.bias if head.bias is not None else torch.zeros(head.out_features)
        b2 = head_dist.bias if head_dist.bias is not None else torch.zeros(head.out_features)
        merged.bias.copy_((b1 + b2) / 2)
    return merged


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    # timm's fuse() builds new Linear/Conv2d modules in the default dtype and copies the folded weights in
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def fuse_levit(model: nn.Module) -> FusedLevit:
    """Return a new eval-mode, fused copy of a timm LeViT; the input model is left untouched.

    A float64 model is folded in float64 (the reference of :func:`check_fusion`); any other dtype in fp32.
    """
    if not isinstance(model, Levit):
        raise UserError(f"fusion needs a timm LeViT, got {type(model).__name__}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    work_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    # timm's fused modules are created on the CPU in the default dtype: fuse there, then move back.
    with _default_dtype(work_dtype):
        work: Any = reparameterize_model(copy.deepcopy(model).to(work_dtype).cpu().eval(), inplace=True)
        for parent in list(work.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, AttentionDownsample):
                    setattr(parent, name, StaticAttentionDownsample(child))
                elif isinstance(child, Attention):
                    setattr(parent, name, StaticAttention(child))
        fused = FusedLevit(work).eval()
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused.to(device=device, dtype=dtype)


def max_relative_diff(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Largest absolute difference divided by the reference's value range (the parity measure)."""
    ref = reference.detach().double()  # float64: a float64 comparison must not round to fp32
    span = float(ref.max() - ref.min()) or 1.0
    return float((ref - other.detach().double()).abs().max()) / span


def check_parity(model: nn.Module, fused: nn.Module, images: torch.Tensor, tol: float = 1e-4) -> float:
    """Compare logits of the original and fused model; raise if they differ by more than ``tol``."""
    with torch.no_grad():
        model.eval()
        ref = model(images)
        out = fused(images)
    diff = max_relative_diff(ref, out)
    if not diff <= tol:
        raise RuntimeError(
            f"fused model differs from the original by {diff:.3g} of the logit range (> {tol})"
        )
    return diff


@dataclass(frozen=True)
class FusionParity:
    """How far the fused model is from the original, as fractions of the reference logit range.

    ``float64`` checks the fusion itself (both folded and run in float64: only a wrong fold differs);
    ``fused_fp32`` is the exported fp32 fused model against that float64 reference, and
    ``original_fp32`` the unfused fp32 model against it: an ill-conditioned checkpoint shows a large
    fp32 deviation in both, which is the model's, not the fusion's.
    """

    float64: float
    fused_fp32: float
    original_fp32: float

    def to_dict(self) -> dict[str, float]:
        """The report's ``parity`` keys (``torch_fused_vs_timm`` is measured in float64)."""
        return {
            "torch_fused_vs_timm": self.float64,
            "torch_fused_fp32_vs_float64": self.fused_fp32,
            "timm_fp32_vs_float64": self.original_fp32,
        }


FUSION_TOL = 1e-6  # float64 fold vs float64 original; a correct fold is ~1e-12 even when ill-conditioned


def check_fusion(
    model: nn.Module,
    fused: nn.Module,
    images: torch.Tensor,
    tol: float = FUSION_TOL,
    fuser: Callable[[nn.Module], nn.Module] | None = None,
) -> FusionParity:
    """Check fusion against a float64 reference; UserError (one line) on a real mismatch.

    ``fuser`` (default :func:`fuse_levit`) is applied to the float64 copy of ``model``: the check is of
    the fusion procedure, in a precision where an ill-conditioned checkpoint cannot hide a wrong fold.
    """
    model.eval()
    reference = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        ref = reference(images.double())
        fused64 = (fuser or fuse_levit)(reference)
        out64 = fused64(images.double())
        fused32 = fused(images.to(next(fused.parameters()).dtype))
        orig32 = model(images.to(next(model.parameters()).dtype))
    if not bool(torch.isfinite(ref).all()):
        raise UserError("the model's logits are not finite (NaN/Inf) on the parity images: broken weights")
    parity = FusionParity(
        max_relative_diff(ref, out64), max_relative_diff(ref, fused32), max_relative_diff(ref, orig32)
    )
    if not parity.float64 <= tol:
        raise UserError(
            f"fused model differs from the original by {parity.float64:.3g} of the logit range in float64 "
            f"(> {tol:g}): this LeViT does not fuse correctly (unsupported architecture variant?)"
        )
    return parity


__all__ = [
    "FUSION_TOL",
    "FusedLevit",
    "FusionParity",
    "check_fusion",
    "check_parity",
    "fuse_levit",
    "max_relative_diff",
]
