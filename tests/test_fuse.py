"""Static fusion of every timm LeViT: fused logits equal the original's on randomized models (BatchNorm
statistics and attention biases non-trivial), nothing dynamic left, dtype moves, exact scale folding, merged
heads, and a parity check that really fails on a wrong fold."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from helpers import logits, random_images, random_levit, randomize_levit
from timm.models.levit import (
    Attention,
    AttentionDownsample,
    ConvNorm,
    Levit,
    LevitDistilled,
    LinearNorm,
    NormLinear,
)
from timm.utils import reparameterize_model
from torch import nn

from levit_edge.errors import UserError
from levit_edge.export.onnx import ExportSettings, export_onnx, op_histogram
from levit_edge.model.fuse import (
    FusedLevit,
    StaticAttention,
    StaticAttentionDownsample,
    check_fusion,
    check_parity,
    fuse_levit,
    max_relative_diff,
)
from levit_edge.model.load import ModelSpec, create_levit, levit_names

TOL = 1e-4
CLASSES = 10
SMALL_IMG = 112  # 7x7 tokens after a stride-16 stem (14x14 for s8): every stage still has several tokens
# Models above ~30M parameters take tens of seconds each on two shared cores.
SLOW = {"levit_384", "levit_384_s8", "levit_512", "levit_512_s8", "levit_512d"}
SLOW |= {n.replace("levit_", "levit_conv_") for n in SLOW}
STATIC_ATTN = (StaticAttention, StaticAttentionDownsample)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Two small cores shared with other jobs: one intra-op thread avoids OpenMP oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _key_dim(model: nn.Module) -> int:
    return int(next(m for m in model.modules() if isinstance(m, Attention)).key_dim)


def _attention_count(model: nn.Module) -> int:
    return sum(isinstance(m, Attention | AttentionDownsample) for m in model.modules())


def assert_static(fused: nn.Module, original: nn.Module) -> None:
    """Nothing of timm's dynamic machinery survives fusion."""
    assert isinstance(fused, FusedLevit)
    leftovers = (
        nn.modules.batchnorm._BatchNorm,
        Attention,
        AttentionDownsample,
        ConvNorm,
        LinearNorm,
        NormLinear,
    )
    assert [type(m).__name__ for m in fused.modules() if isinstance(m, leftovers)] == []
    names = [n for n, _ in fused.named_parameters()] + [n for n, _ in fused.named_buffers()]
    assert [n for n in names if "attention_biases" in n or "attention_bias_idxs" in n] == []
    assert sum(n.endswith("attention_bias") for n in names) == _attention_count(original)
    assert all(not m.training for m in fused.modules())
    assert all(not p.requires_grad for p in fused.parameters())


def assert_scale_folding(fused: nn.Module, key_dim: int) -> None:
    """key_dim**-0.5 is a power of two for 16 and 64 (folded, exact); for 32 it is not (kept as a Mul)."""
    modules = [m for m in fused.modules() if isinstance(m, STATIC_ATTN)]
    assert modules
    for m in modules:
        if key_dim in (16, 64):
            assert m.scale == 1.0
        else:
            assert m.scale == pytest.approx(key_dim**-0.5)


def assert_attention_parity(model: nn.Module, fused: nn.Module, seed: int) -> None:
    """Each attention block, fused vs original, on its own random tokens.

    The whole-model comparison alone is weak for late blocks: with random weights the tokens become alike
    after a few attention layers, so a wrong bias or scale in the last stage barely moves the logits.
    """
    originals: list[Any] = [m for m in model.modules() if isinstance(m, Attention | AttentionDownsample)]
    statics: list[Any] = [m for m in fused.modules() if isinstance(m, STATIC_ATTN)]
    assert len(originals) == len(statics)
    gen = torch.Generator().manual_seed(seed)
    for original, static in zip(originals, statics, strict=True):
        downsample = isinstance(original, AttentionDownsample)
        assert isinstance(static, StaticAttentionDownsample if downsample else StaticAttention)
        channels = (original.kv if downsample else original.qkv).linear.weight.shape[1]
        h, w = original.resolution
        shape = (2, channels, h, w) if original.use_conv else (2, h * w, channels)
        tokens = torch.randn(shape, generator=gen)
        with torch.no_grad():
            assert max_relative_diff(original(tokens), static(tokens)) < TOL


def _cases() -> list[Any]:
    cases = [pytest.param(n, SMALL_IMG, marks=[pytest.mark.slow] if n in SLOW else []) for n in levit_names()]
    cases += [pytest.param("levit_128s", 224), pytest.param("levit_conv_128s", 224)]
    return cases


def test_every_levit_is_covered() -> None:
    assert len(levit_names()) == 20
    assert sum(n.startswith("levit_conv_") for n in levit_names()) == 10


@pytest.mark.parametrize(("name", "img_size"), _cases())
def test_fused_matches_unfused(name: str, img_size: int) -> None:
    model = random_levit(name, CLASSES, img_size, seed=11)
    images = random_images(2, img_size, seed=12)
    ref = logits(model, images)
    assert float(ref.max() - ref.min()) > 0.5  # a meaningful logit range for the relative measure
    fused = fuse_levit(model)
    out = logits(fused, images)
    assert out.shape == (2, CLASSES)
    assert max_relative_diff(ref, out) < TOL
    assert_static(fused, model)
    assert_scale_folding(fused, _key_dim(model))
    assert_attention_parity(model, fused, seed=13)


# ---- one small model, many properties ---------------------------------------------------------------

IMG = 64


@pytest.fixture(scope="module", params=["levit_128s", "levit_conv_128s"])
def pair(request: pytest.FixtureRequest) -> tuple[nn.Module, FusedLevit, torch.Tensor, torch.Tensor]:
    model = random_levit(request.param, CLASSES, IMG, seed=13)
    images = random_images(8, IMG, seed=14)
    ref = logits(model, images)
    return model, fuse_levit(model), images, ref


def test_input_model_untouched(pair: tuple[nn.Module, FusedLevit, torch.Tensor, torch.Tensor]) -> None:
    model, _, images, ref = pair
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # fusing a model in training mode must neither switch it nor depend on it
    fused = fuse_levit(model)
    assert model.training
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(logits(model, images), ref)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(n.endswith("attention_biases") for n, _ in model.named_parameters())
    # No storage shared: editing the fused model cannot reach the original.
    original_ptrs = {t.data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    assert not original_ptrs & {t.data_ptr() for t in list(fused.parameters()) + list(fused.buffers())}
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(1.0)
    assert torch.equal(logits(model, images), ref)


def test_bias_buffers_move_with_dtype(pair: tuple[nn.Module, FusedLevit, torch.Tensor, torch.Tensor]) -> None:
    model, fused, images, ref = pair
    double = copy.deepcopy(fused).to(torch.float64)
    biases = [b for n, b in double.named_buffers() if n.endswith("attention_bias")]
    assert len(biases) == _attention_count(model)
    assert all(b.dtype == torch.float64 for b in biases)
    assert max_relative_diff(ref, logits(double, images.double())) < TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_runs_in_low_precision(
    pair: tuple[nn.Module, FusedLevit, torch.Tensor, torch.Tensor], dtype: torch.dtype
) -> None:
    """timm's cached bias breaks a float forward followed by .half(); the fused model has no cache. The fp32
    forward already happened in the fixture."""
    _, fused, images, ref = pair
    low = copy.deepcopy(fused).to(dtype)
    assert all(b.dtype == dtype for n, b in low.named_buffers() if n.endswith("attention_bias"))
    out = logits(low, images.to(dtype))
    assert out.dtype == dtype
    assert max_relative_diff(ref, out) < 0.03
    assert (out.float().argmax(1) == ref.argmax(1)).float().mean() >= 0.75


def test_fuse_a_half_precision_model(pair: tuple[nn.Module, FusedLevit, torch.Tensor, torch.Tensor]) -> None:
    """fuse_levit folds in fp32 on the CPU and hands the fused model back in the input's dtype."""
    model, _, images, ref = pair
    fused = fuse_levit(copy.deepcopy(model).to(torch.bfloat16))
    assert {p.dtype for p in fused.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in fused.buffers()} == {torch.bfloat16}
    assert max_relative_diff(ref, logits(fused, images.to(torch.bfloat16))) < 0.03


def test_distilled_heads_merged(pair: tuple[nn.Module, FusedLevit, torch.Tensor, torch.Tensor]) -> None:
    model: Any = pair[0]
    fused = pair[1]
    head = copy.deepcopy(model.head).fuse()
    head_dist = copy.deepcopy(model.head_dist).fuse()
    assert not torch.allclose(head.weight, head_dist.weight)  # the two heads really differ
    assert isinstance(fused.head, nn.Linear)
    torch.testing.assert_close(fused.head.weight, (head.weight + head_dist.weight) / 2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fused.head.bias, (head.bias + head_dist.bias) / 2, rtol=1e-6, atol=1e-7)
    features = torch.randn(5, head.in_features, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        expected = (model.head(features) + model.head_dist(features)) / 2  # timm's eval averaging, with BN
        assert max_relative_diff(expected, fused.head(features)) < 1e-5


@pytest.mark.parametrize(
    "break_it",
    ["drop_bn_shift", "zero_one_bias_table", "shift_one_bias_table", "scale_twice", "one_weight"],
)
def test_check_parity_fails_on_a_wrong_fold(
    pair: tuple[nn.Module, FusedLevit, torch.Tensor, torch.Tensor], break_it: str
) -> None:
    model, fused, images, _ = pair
    assert check_parity(model, fused, images) < TOL
    bad = copy.deepcopy(fused)
    attn: Any = next(m for m in bad.modules() if isinstance(m, StaticAttention))
    with torch.no_grad():
        if break_it == "drop_bn_shift":  # fold forgot BatchNorm's shift in one projection
            attn.qkv.bias.zero_()
        elif break_it == "zero_one_bias_table":  # relative-position bias lost in one block
            attn.attention_bias.zero_()
        elif break_it == "shift_one_bias_table":  # bias gathered with off-by-one key indices
            attn.attention_bias.copy_(attn.attention_bias.roll(1, dims=-1))
        elif break_it == "scale_twice":  # scale folded into q and applied again
            attn.scale = 0.25
        else:  # one fused weight perturbed
            attn.proj[-1].weight[0].mul_(3.0)
    with pytest.raises(RuntimeError, match=r"differs from the original"):
        check_parity(model, bad, images)


def test_fuse_rejects_non_levit() -> None:
    with pytest.raises(UserError, match=r"timm LeViT"):
        fuse_levit(nn.Sequential(nn.Linear(2, 2)))


# ---- scale folding, seen in the graph ----------------------------------------------------------------


def _tiny(key_dim: int, distilled: bool = True, use_conv: bool = False) -> nn.Module:
    """A two-stage LeViT (1 block each, one subsample between) with the given key_dim, Hardswish."""
    cls = LevitDistilled if distilled else Levit
    torch.manual_seed(key_dim)
    model = cls(
        img_size=64,
        num_classes=CLASSES,
        embed_dim=(64, 128),
        key_dim=key_dim,
        num_heads=(2, 2),
        depth=(1, 1),
        use_conv=use_conv,
    )
    return randomize_levit(model, seed=key_dim)


@pytest.mark.parametrize("use_conv", [False, True])
@pytest.mark.parametrize("key_dim", [16, 32, 64])
def test_scale_mul_only_where_inexact(key_dim: int, use_conv: bool) -> None:
    model = _tiny(key_dim, use_conv=use_conv)
    fused = fuse_levit(model)
    images = random_images(2, 64, seed=16)
    assert max_relative_diff(logits(model, images), logits(fused, images)) < TOL
    graph = onnx.load_from_string(export_onnx(fused, (3, 64, 64), ExportSettings(), {}))
    ops = op_histogram(graph)
    assert ops["HardSwish"] > 0  # activations are single ops, so any Mul is an attention scale
    expected = 0 if key_dim in (16, 64) else _attention_count(model)
    assert ops.get("Mul", 0) == expected


@pytest.mark.parametrize("key_dim", [16, 64])
def test_folded_scale_is_bit_exact(key_dim: int) -> None:
    """Multiplying the query rows by a power of two is exact: the folded rows equal scale x BN-fused rows."""
    model = _tiny(key_dim)
    reference: Any = reparameterize_model(copy.deepcopy(model), inplace=True)
    fused: Any = fuse_levit(model)
    scale = key_dim**-0.5
    ref_attn = reference.stages[0].blocks[0].attn
    attn = fused.stages[0].blocks[0].attn
    heads, per_head = ref_attn.num_heads, 2 * key_dim + ref_attn.val_dim
    rows = [h * per_head + i for h in range(heads) for i in range(key_dim)]
    others = [r for r in range(heads * per_head) if r not in rows]
    assert torch.equal(attn.qkv.weight[rows], ref_attn.qkv.weight[rows] * scale)
    assert torch.equal(attn.qkv.bias[rows], ref_attn.qkv.bias[rows] * scale)
    assert torch.equal(attn.qkv.weight[others], ref_attn.qkv.weight[others])
    down_ref = reference.stages[1].downsample.attn_downsample
    down = fused.stages[1].downsample.attn_downsample
    assert torch.equal(down.q_proj.weight, down_ref.q.ln.weight * scale)
    assert torch.equal(down.kv.weight, down_ref.kv.weight)


def test_plain_levit_without_distillation_head() -> None:
    model = _tiny(16, distilled=False)
    fused = fuse_levit(model)
    images = random_images(2, 64, seed=17)
    assert max_relative_diff(logits(model, images), logits(fused, images)) < TOL
    assert isinstance(fused.head, nn.Linear)


def test_fused_model_keeps_pretrained_cfg() -> None:
    """Preprocessing is read from the model: the fused model must carry the input size it was built for."""
    fused = fuse_levit(create_levit("levit_128s", CLASSES, 96))
    assert tuple(fused.pretrained_cfg["input_size"]) == (3, 96, 96)
    assert fused.num_classes == CLASSES


# ---- fusion checked against float64 ---------------------------------------------------------------------


def ill_conditioned_levit(offset: float = 1e5) -> nn.Module:
    """A LeViT whose logits are differences of large numbers: both heads' BatchNorm adds ``offset`` to
    every feature and the linear bias takes it away again (computed in float64). fp32 loses most digits
    of the logits in that cancellation, unfused or fused alike; float64 keeps them."""
    model = random_levit("levit_128s", CLASSES, IMG, seed=21)
    with torch.no_grad():
        for head in (model.head, model.head_dist):
            head.bn.bias.add_(offset)
            shift = torch.full((head.linear.in_features,), offset, dtype=torch.float64)
            head.linear.bias.copy_(-(head.linear.weight.double() @ shift).float())
    model.train()
    return model.eval()


def test_ill_conditioned_checkpoint_passes_the_float64_fusion_check() -> None:
    model = ill_conditioned_levit()
    images = random_images(2, IMG, seed=22)
    fused = fuse_levit(model)
    parity = check_fusion(model, fused, images)
    assert parity.float64 < 1e-9  # the fold itself is exact
    # the fp32 deviation is the model's own (unfused fp32 shows it too), reported, not an error
    assert parity.original_fp32 > 1e-5 and parity.fused_fp32 > 1e-5
    assert parity.to_dict()["torch_fused_vs_timm"] == parity.float64


def test_a_wrong_fold_is_one_user_error_line() -> None:
    model = random_levit("levit_128s", CLASSES, IMG, seed=23)
    images = random_images(2, IMG, seed=24)

    def drops_one_bias_table(m: nn.Module) -> nn.Module:
        fused = fuse_levit(m)
        attn: Any = next(x for x in fused.modules() if isinstance(x, StaticAttention))
        with torch.no_grad():
            attn.attention_bias.zero_()
        return fused

    with pytest.raises(UserError, match=r"differs from the original by .* in float64") as info:
        check_fusion(model, fuse_levit(model), images, fuser=drops_one_bias_table)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_export_of_an_ill_conditioned_checkpoint(tmp_path: Path) -> None:
    """The whole export runs and reports the fusion check and the fp32 deviation separately."""
    from helpers import save_state_dict

    from levit_edge.flows.export import run_export
    from levit_edge.flows.job import ExportJob

    checkpoint = save_state_dict(ill_conditioned_levit(), tmp_path / "ill.pth")
    job = ExportJob(model=ModelSpec("levit_128s", checkpoint, CLASSES, IMG), out=tmp_path, name="r")
    parity = run_export(job).report["parity"]
    assert parity["torch_fused_vs_timm"] < 1e-9
    assert parity["timm_fp32_vs_float64"] > 1e-5
