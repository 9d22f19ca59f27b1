"""Loading LeViT weights from every checkpoint layout users bring, each file made here from a randomized
timm model, plus every way a checkpoint or a model spec can be wrong.

The facebookresearch/LeViT checkpoint is rebuilt from that repository's ``levit.py`` (see
``facebook_state_dict``), not from the production mapping, so a wrong mapping in ``load.py`` fails here.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import logits, random_images, random_levit, save_state_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from timm.models.levit import ConvNorm, LinearNorm, NormLinear
from torch import nn

from levit_edge.errors import UserError
from levit_edge.io import sha256_file
from levit_edge.model.load import (
    LoadedModel,
    ModelSpec,
    levit_names,
    load_model,
    read_checkpoint,
)

IMG = 64  # small inputs keep the plain-layout tests fast; the facebookresearch ones use LeViT's own 224
NAME = "levit_128s"
CLASSES = 10


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Two small cores shared with other jobs: one intra-op thread avoids OpenMP oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def source() -> nn.Module:
    return random_levit(NAME, CLASSES, IMG, seed=1)


@pytest.fixture(scope="module")
def other() -> nn.Module:
    """A second model of the same architecture with different weights (the 'EMA' or the 'wrong' one)."""
    return random_levit(NAME, CLASSES, IMG, seed=2)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return random_images(2, IMG, seed=3)


def _state(model: nn.Module, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((prefix + k, v.detach().clone()) for k, v in model.state_dict().items())


def _load(path: Path, **kwargs: Any) -> LoadedModel:
    return load_model(ModelSpec(NAME, checkpoint=path, img_size=kwargs.pop("img_size", IMG), **kwargs))


def _assert_same_model(loaded: LoadedModel, expected: nn.Module, images: torch.Tensor) -> None:
    assert not loaded.model.training
    assert torch.equal(logits(loaded.model, images), logits(expected, images))


# ---- every supported layout ------------------------------------------------------------------------


def test_plain_state_dict(tmp_path: Path, source: nn.Module, images: torch.Tensor) -> None:
    path = save_state_dict(source, tmp_path / "plain.pth")
    loaded = _load(path)
    _assert_same_model(loaded, source, images)
    assert loaded.checkpoint_format == "state_dict"
    assert loaded.checkpoint_sha256 == sha256_file(path)
    assert loaded.num_classes == CLASSES


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_training_checkpoint(tmp_path: Path, source: nn.Module, images: torch.Tensor, key: str) -> None:
    """timm's train.py writes ``state_dict``, DeiT/LeViT's main.py ``model``; both add optimizer state,
    epoch and arch; the PyTorch ImageNet example also stores ``best_acc1`` as a tensor at the top level."""
    opt_state = {
        "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
        "param_groups": [{"lr": 0.1}],
    }
    ckpt = {key: _state(source), "optimizer": opt_state, "epoch": 7, "arch": NAME}
    torch.save(ckpt, tmp_path / "train.pth")
    loaded = _load(tmp_path / "train.pth")
    _assert_same_model(loaded, source, images)
    assert loaded.checkpoint_format == f"training:{key}"


def test_training_checkpoint_with_top_level_tensor(
    tmp_path: Path, source: nn.Module, images: torch.Tensor
) -> None:
    """A tensor beside the wrapper (``best_acc1`` in the PyTorch ImageNet example) must not make the whole
    training dict look like a state_dict."""
    ckpt = {"state_dict": _state(source), "best_acc1": torch.tensor(76.5), "epoch": 90, "arch": NAME}
    torch.save(ckpt, tmp_path / "imagenet_example.pth")
    loaded = _load(tmp_path / "imagenet_example.pth")
    _assert_same_model(loaded, source, images)
    assert loaded.checkpoint_format == "training:state_dict"


@pytest.mark.parametrize(("plain", "ema"), [("state_dict", "state_dict_ema"), ("model", "model_ema")])
def test_ema_weights_preferred(
    tmp_path: Path, source: nn.Module, other: nn.Module, images: torch.Tensor, plain: str, ema: str
) -> None:
    # The EMA entry is written second and first, so dict order cannot be what picks it.
    for order, ckpt in enumerate(
        ({plain: _state(source), ema: _state(other)}, {ema: _state(other), plain: _state(source)})
    ):
        torch.save({**ckpt, "epoch": 3}, tmp_path / f"ema{order}.pth")
        loaded = _load(tmp_path / f"ema{order}.pth")
        _assert_same_model(loaded, other, images)
        assert loaded.checkpoint_format == f"training:{ema}"
        assert not torch.equal(logits(loaded.model, images), logits(source, images))


@pytest.mark.parametrize("wrapped", [False, True])
def test_data_parallel_prefix(tmp_path: Path, source: nn.Module, images: torch.Tensor, wrapped: bool) -> None:
    state = _state(source, prefix="module.")
    torch.save({"state_dict": state, "epoch": 1} if wrapped else state, tmp_path / "ddp.pth")
    _assert_same_model(_load(tmp_path / "ddp.pth"), source, images)


def test_safetensors(tmp_path: Path, source: nn.Module, images: torch.Tensor) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in _state(source).items()}, str(path))
    loaded = _load(path)
    _assert_same_model(loaded, source, images)
    assert loaded.checkpoint_format == "safetensors"
    assert loaded.checkpoint_sha256 == sha256_file(path)


def test_num_classes_inferred_from_checkpoint(tmp_path: Path, images: torch.Tensor) -> None:
    model = random_levit(NAME, 7, IMG, seed=4)
    path = save_state_dict(model, tmp_path / "seven.pth")
    loaded = _load(path)  # no num_classes given
    assert loaded.num_classes == 7
    assert logits(loaded.model, images).shape == (2, 7)
    _assert_same_model(loaded, model, images)


# ---- facebookresearch/LeViT ------------------------------------------------------------------------
#
# Derived from facebookresearch/LeViT levit.py (model_factory, LeViT.__init__, b16, Conv2d_BN, Linear_BN,
# BN_Linear, Residual, Attention, AttentionSubsample):
#   * every conv/linear + BatchNorm pair is a Sequential with children ``c`` (Conv2d/Linear, no bias) and
#     ``bn``; the heads are BN_Linear with children ``bn`` and ``l`` (Linear with bias);
#   * the stem is ``patch_embed`` = b16(): Sequential(Conv2d_BN, act, Conv2d_BN, act, Conv2d_BN, act,
#     Conv2d_BN), so its convs are patch_embed.0/.2/.4/.6;
#   * all blocks are one flat Sequential ``blocks``: per stage, depth x [Residual(Attention) ->
#     blocks.k.m.{qkv, proj.1}, Residual(Sequential(Linear_BN, act, Linear_BN)) -> blocks.k.m.{0, 2}];
#     between stages an AttentionSubsample (no Residual) -> blocks.k.{kv, q.1, proj.1} (q.0 is Subsample)
#     followed by its Residual MLP; all Linear_BN weights are 2-D (levit_conv_* does not exist there);
#   * Attention/AttentionSubsample own ``attention_biases`` (heads x number of distinct offsets, numbered in
#     order of first appearance) and a *persistent* ``attention_bias_idxs`` buffer, registered after their
#     children but emitted first by state_dict() (own tensors come before children's);
#   * BatchNorm keeps num_batches_tracked; the checkpoint file is {"model": state_dict}.
# timm equivalents: stem.conv1..conv4.{linear,bn}; stages.s.downsample.{attn_downsample.{kv,q.ln,proj.ln},
# mlp.{ln1,ln2}}; stages.s.blocks.j.{attn.{qkv,proj.ln}, mlp.{ln1,ln2}}; head/head_dist.{bn,linear}.


def _fb_offsets(resolution: int, stride: int) -> tuple[int, torch.Tensor]:
    """Number of distinct offsets and attention_bias_idxs, computed the way facebookresearch does."""
    points = list(itertools.product(range(resolution), range(resolution)))
    q_res = (resolution - 1) // stride + 1
    queries = list(itertools.product(range(q_res), range(q_res)))
    offsets: dict[tuple[float, float], int] = {}
    idxs = []
    for p1 in queries:
        for p2 in points:
            size = 1
            offset = (
                abs(p1[0] * stride - p2[0] + (size - 1) / 2),
                abs(p1[1] * stride - p2[1] + (size - 1) / 2),
            )
            if offset not in offsets:
                offsets[offset] = len(offsets)
            idxs.append(offsets[offset])
    return len(offsets), torch.tensor(idxs, dtype=torch.long).view(len(queries), len(points))


def _fb_attention(out: dict[str, torch.Tensor], prefix: str, attn: Any) -> None:  # timm Attention(Downsample)
    """attention_biases renumbered to facebookresearch's offset order, plus their persistent idxs."""
    stride = int(getattr(attn, "stride", 1))
    n_offsets, fb_idxs = _fb_offsets(int(attn.resolution[0]), stride)
    timm_idxs = attn.attention_bias_idxs
    assert fb_idxs.shape == timm_idxs.shape
    timm_bias = attn.attention_biases.detach()
    fb_bias = torch.full((timm_bias.shape[0], n_offsets), float("nan"))
    fb_bias[:, fb_idxs.flatten()] = timm_bias[:, timm_idxs.flatten()]
    assert not fb_bias.isnan().any()
    # The renumbering is consistent: gathering either way gives the same (heads, Nq, Nk) bias.
    assert torch.equal(fb_bias[:, fb_idxs], timm_bias[:, timm_idxs])
    out[f"{prefix}attention_biases"] = fb_bias
    out[f"{prefix}attention_bias_idxs"] = fb_idxs


def _fb_norm(
    out: dict[str, torch.Tensor], prefix: str, module: ConvNorm | LinearNorm, stem: bool = False
) -> None:
    weight = module.linear.weight.detach().clone()
    if not stem and weight.ndim == 4:
        weight = weight.flatten(1)  # levit_conv 1x1 conv -> facebookresearch Linear
    out[f"{prefix}.c.weight"] = weight
    for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"{prefix}.bn.{key}"] = getattr(module.bn, key).detach().clone()


def _fb_head(out: dict[str, torch.Tensor], prefix: str, head: NormLinear) -> None:
    for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"{prefix}.bn.{key}"] = getattr(head.bn, key).detach().clone()
    out[f"{prefix}.l.weight"] = head.linear.weight.detach().clone()
    out[f"{prefix}.l.bias"] = head.linear.bias.detach().clone()


def facebook_state_dict(model: Any) -> OrderedDict[str, torch.Tensor]:
    """A timm LeViT's weights in facebookresearch/LeViT's key names and state_dict order."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    stem = model.stem
    for i, conv in enumerate((stem.conv1, stem.conv2, stem.conv3, stem.conv4)):
        _fb_norm(out, f"patch_embed.{2 * i}", conv, stem=True)
    k = 0
    for stage in model.stages:
        if not isinstance(stage.downsample, nn.Identity):
            down = stage.downsample.attn_downsample
            _fb_attention(out, f"blocks.{k}.", down)
            _fb_norm(out, f"blocks.{k}.kv", down.kv)
            _fb_norm(out, f"blocks.{k}.q.1", down.q.ln)
            _fb_norm(out, f"blocks.{k}.proj.1", down.proj.ln)
            k += 1
            _fb_norm(out, f"blocks.{k}.m.0", stage.downsample.mlp.ln1)
            _fb_norm(out, f"blocks.{k}.m.2", stage.downsample.mlp.ln2)
            k += 1
        for block in stage.blocks:
            _fb_attention(out, f"blocks.{k}.m.", block.attn)
            _fb_norm(out, f"blocks.{k}.m.qkv", block.attn.qkv)
            _fb_norm(out, f"blocks.{k}.m.proj.1", block.attn.proj.ln)
            k += 1
            _fb_norm(out, f"blocks.{k}.m.0", block.mlp.ln1)
            _fb_norm(out, f"blocks.{k}.m.2", block.mlp.ln2)
            k += 1
    _fb_head(out, "head", model.head)
    _fb_head(out, "head_dist", model.head_dist)
    return out


def test_facebook_layout_is_complete() -> None:
    """Sanity of the rebuilt layout itself: same tensor count as timm's, LeViT-128S's known block count
    (2+3+4 attention/MLP pairs and 2 subsamples with their MLPs = 22 blocks) and known first/last keys."""
    model = random_levit(NAME, CLASSES, None, seed=5)
    fb = facebook_state_dict(model)
    timm_keys = [k for k in model.state_dict() if "attention_bias_idxs" not in k]
    assert len([k for k in fb if "attention_bias_idxs" not in k]) == len(timm_keys)
    assert sum(1 for k in fb if k.endswith("attention_bias_idxs")) == 11
    assert next(iter(fb)) == "patch_embed.0.c.weight"
    assert "blocks.21.m.2.bn.num_batches_tracked" in fb and "blocks.22.m.0.c.weight" not in fb
    assert "blocks.4.attention_biases" in fb and "blocks.4.q.1.c.weight" in fb  # first AttentionSubsample
    assert list(fb)[-1] == "head_dist.l.bias"
    assert fb["blocks.0.m.attention_biases"].shape == (4, 196)


@pytest.mark.parametrize("name", ["levit_128s", "levit_conv_128s", "levit_192"])
def test_facebook_checkpoint(tmp_path: Path, name: str) -> None:
    model = random_levit(name, CLASSES, None, seed=6)  # facebookresearch models are 224 only
    torch.save({"model": facebook_state_dict(model)}, tmp_path / "fb.pth")
    loaded = load_model(ModelSpec(name, checkpoint=tmp_path / "fb.pth"))
    assert loaded.checkpoint_format == "facebookresearch"
    assert loaded.num_classes == CLASSES  # inferred from head.l.weight
    x = random_images(2, 224, seed=7)
    assert torch.equal(logits(loaded.model, x), logits(model, x))


def test_facebook_checkpoint_into_conv_variant(tmp_path: Path) -> None:
    """facebookresearch weights are linear-layout only; levit_conv_* must load them as 1x1 convs."""
    from levit_edge.model.fuse import max_relative_diff

    model = random_levit("levit_128s", CLASSES, None, seed=8)
    torch.save({"model": facebook_state_dict(model)}, tmp_path / "fb.pth")
    loaded = load_model(ModelSpec("levit_conv_128s", checkpoint=tmp_path / "fb.pth"))
    x = random_images(2, 224, seed=9)
    assert max_relative_diff(logits(model, x), logits(loaded.model, x)) < 1e-5


def test_facebook_checkpoint_for_another_model(tmp_path: Path) -> None:
    model = random_levit("levit_128s", CLASSES, None, seed=10)
    fb = facebook_state_dict(model)
    torch.save({"model": fb}, tmp_path / "fb.pth")
    with pytest.raises(UserError, match=r"wrong --model"):
        load_model(ModelSpec("levit_128", checkpoint=tmp_path / "fb.pth"))
    del fb["head_dist.l.bias"]
    torch.save({"model": fb}, tmp_path / "fb_short.pth")
    with pytest.raises(UserError, match=r"tensors, the model expects"):
        load_model(ModelSpec("levit_128s", checkpoint=tmp_path / "fb_short.pth"))


# ---- refused checkpoints ----------------------------------------------------------------------------

_MARKER = Path(tempfile.gettempdir()) / f"levit-edge-test-unpickled-{os.getpid()}"


def _side_effect(path: str) -> None:
    Path(path).write_text("arbitrary code ran")


class Sneaky:
    """Unpickling this runs ``_side_effect``: what a weights-only loader must never do."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_side_effect, (str(_MARKER),))


class CustomStateDict(collections.OrderedDict[str, torch.Tensor]):
    """An OrderedDict subclass: harmless here, but unpickling it means importing arbitrary classes."""


@pytest.mark.parametrize("kind", ["object", "ordered_dict_subclass"])
def test_arbitrary_pickle_refused(tmp_path: Path, source: nn.Module, kind: str) -> None:
    _MARKER.unlink(missing_ok=True)
    obj: object = (
        {"state_dict": _state(source), "extra": Sneaky()}
        if kind == "object"
        else CustomStateDict(_state(source))
    )
    path = tmp_path / f"{kind}.pth"
    torch.save(obj, path)
    with pytest.raises(UserError, match=r"arbitrary unpickling") as info:
        _load(path)
    assert str(path) in str(info.value)
    assert not _MARKER.exists()


def _valid_checkpoint_bytes(model: nn.Module, tmp_path: Path) -> bytes:
    return save_state_dict(model, tmp_path / "valid.pth").read_bytes()


@pytest.mark.parametrize("case", ["truncated", "random_bytes", "text", "empty", "truncated_safetensors"])
def test_unreadable_checkpoint(tmp_path: Path, source: nn.Module, case: str) -> None:
    data = _valid_checkpoint_bytes(source, tmp_path)
    suffix = ".safetensors" if case == "truncated_safetensors" else ".pth"
    path = tmp_path / f"bad{suffix}"
    if case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "random_bytes":
        path.write_bytes(os.urandom(4096))
    elif case == "text":
        path.write_text("hello, this is not a checkpoint\n")
    elif case == "empty":
        path.write_bytes(b"")
    else:
        save_file({k: v.contiguous() for k, v in _state(source).items()}, str(tmp_path / "ok.safetensors"))
        full = (tmp_path / "ok.safetensors").read_bytes()
        path.write_bytes(full[: len(full) // 3])
    with pytest.raises(UserError) as info:
        _load(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    if case in ("truncated", "text", "empty"):
        assert "arbitrary unpickling" not in message  # a damaged file is not a security refusal


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=64))
def test_any_garbage_is_a_user_error(garbage: bytes) -> None:
    """Whatever the bytes, reading them gives one UserError naming the file, never another exception."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "garbage.pth"
        path.write_bytes(garbage)
        with pytest.raises(UserError, match=r"garbage\.pth"):
            read_checkpoint(path)


def test_any_truncation_is_a_user_error(tmp_path: Path, source: nn.Module) -> None:
    data = _valid_checkpoint_bytes(source, tmp_path)
    for i, cut in enumerate((1, 30, 100, len(data) // 4, len(data) - 100, len(data) - 1)):
        path = tmp_path / f"cut{i}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match=r"cannot read checkpoint .*cut"):
            read_checkpoint(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"not found") as info:
        _load(tmp_path / "nope.pth")
    assert str(tmp_path / "nope.pth") in str(info.value)
    (tmp_path / "dir.pth").mkdir()
    with pytest.raises(UserError, match=r"not a file") as info:
        _load(tmp_path / "dir.pth")
    assert str(tmp_path / "dir.pth") in str(info.value)


@pytest.mark.parametrize("payload", ["tensor", "list", "empty_dict", "no_tensors"])
def test_checkpoint_without_a_state_dict(tmp_path: Path, payload: str) -> None:
    obj: object = {
        "tensor": torch.ones(3),
        "list": [torch.ones(3)],
        "empty_dict": {},
        "no_tensors": {"epoch": 3, "arch": NAME},
    }[payload]
    torch.save(obj, tmp_path / "odd.pth")
    with pytest.raises(UserError, match=r"odd\.pth"):
        _load(tmp_path / "odd.pth")


def test_self_containing_checkpoint(tmp_path: Path) -> None:
    """A pickle may hold a dict that contains itself; unwrapping it must stop, not loop forever."""
    loop: dict[str, object] = {"epoch": 1}
    loop["model"] = loop
    torch.save(loop, tmp_path / "loop.pth")
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            _load(tmp_path / "loop.pth")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)  # a regression loops forever: do not hang the suite
    worker.start()
    worker.join(timeout=60)
    assert outcome, "unwrapping a self-containing checkpoint did not finish in 60 s"
    assert isinstance(outcome[0], UserError) and "loop.pth" in str(outcome[0])


def test_wrong_num_classes(tmp_path: Path, source: nn.Module) -> None:
    path = save_state_dict(source, tmp_path / "ten.pth")
    with pytest.raises(UserError) as info:
        _load(path, num_classes=5)
    message = str(info.value)
    assert "head.linear.weight" in message and "head_dist.linear.weight" in message
    assert "--num-classes" in message
    assert "[10, 384] vs model [5, 384]" in message


def test_missing_and_unexpected_keys_named(tmp_path: Path, source: nn.Module) -> None:
    state = _state(source)
    del state["stages.1.blocks.2.attn.attention_biases"]
    state["stages.9.extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "keys.pth")
    with pytest.raises(UserError) as info:
        _load(tmp_path / "keys.pth")
    message = str(info.value)
    assert "missing keys (1): stages.1.blocks.2.attn.attention_biases" in message
    assert "unexpected keys (1): stages.9.extra.weight" in message
    assert NAME in message


def test_checkpoint_for_a_different_resolution(tmp_path: Path, source: nn.Module) -> None:
    """Bias tables are per resolution: a 64-px checkpoint cannot be built at 224 (shapes named)."""
    path = save_state_dict(source, tmp_path / "small.pth")
    with pytest.raises(UserError, match=r"wrong shapes .*attention_biases"):
        _load(path, img_size=224)


# ---- model spec ------------------------------------------------------------------------------------


def test_non_levit_name_lists_valid_names() -> None:
    with pytest.raises(UserError) as info:
        ModelSpec("resnet50")
    message = str(info.value)
    assert "resnet50" in message
    for name in levit_names():
        assert name in message
    assert len(levit_names()) == 20


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"pretrained": True, "checkpoint": Path("x.pth")}, r"exclusive"),
    ({"num_classes": 0}, r"--num-classes"),
    ({"img_size": 100}, r"--img-size"),
    ({"img_size": 16}, r"--img-size"),
])  # fmt: skip
def test_invalid_spec(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        ModelSpec(NAME, **kwargs)


def test_random_init_when_no_weights() -> None:
    loaded = load_model(ModelSpec(NAME, num_classes=3, img_size=IMG))
    assert loaded.checkpoint_format == "random-init" and loaded.checkpoint_sha256 is None
    assert logits(loaded.model, random_images(1, IMG, 0)).shape == (1, 3)


_PRETRAINED_PROBE = """
import json
from levit_edge.errors import UserError
from levit_edge.model.load import ModelSpec, load_model
try:
    load_model(ModelSpec("levit_128s", pretrained=True))
    result = {"error": None}
except UserError as exc:
    result = {"error": str(exc)}
print(json.dumps(result))
"""


def test_pretrained_without_network_fails_fast(tmp_path: Path) -> None:
    """No hub here. The endpoint is pointed at a closed local port (hermetic even on a networked machine)
    and the cache at an empty folder; the load must end in a UserError naming --checkpoint, not hang."""
    env = {
        **os.environ,
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "0",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _PRETRAINED_PROBE], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] is not None, "pretrained weights loaded without a hub?"
    assert "--checkpoint" in result["error"]
    # No time bound here (machines are shared): the subprocess timeout above is the hang guard.


# ---- facebookresearch/LeViT training checkpoints (main.py) --------------------------------------------


def _levit_main_checkpoint(model: nn.Module, ema: nn.Module, path: Path) -> Path:
    """A checkpoint laid out as facebookresearch/LeViT's main.py saves it after each epoch.

    main.py: ``utils.save_on_master({'model': model_without_ddp.state_dict(), 'optimizer':
    optimizer.state_dict(), 'lr_scheduler': lr_scheduler.state_dict(), 'epoch': epoch, 'model_ema':
    get_state_dict(model_ema), 'scaler': loss_scaler.state_dict(), 'args': args}, checkpoint_path)``,
    with ``args`` the argparse.Namespace of its parser (defaults as in main.py's get_args_parser).
    """
    from timm.scheduler import CosineLRScheduler

    weights = facebook_state_dict(model)
    params = [torch.nn.Parameter(v.clone()) for k, v in weights.items() if v.is_floating_point()]
    optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.025)
    sum(p.sum() for p in params).backward()  # one step, so the optimizer state holds tensors
    optimizer.step()
    scheduler = CosineLRScheduler(optimizer, t_initial=1000, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6)
    args = argparse.Namespace(
        batch_size=256, epochs=1000, model="LeViT_128S", input_size=224, model_ema=True,
        model_ema_decay=0.99996, model_ema_force_cpu=True, opt="adamw", opt_eps=1e-8, opt_betas=None,
        clip_grad=0.01, clip_mode="agc", momentum=0.9, weight_decay=0.025, sched="cosine", lr=5e-4,
        lr_noise=None, smoothing=0.1, repeated_aug=True, teacher_model="regnety_160",
        distillation_type="hard", distillation_alpha=0.5, distillation_tau=1.0, finetune="",
        data_path="/datasets01/imagenet_full_size/061417/", data_set="IMNET", output_dir="out",
        device="cuda", seed=0, resume="", start_epoch=0, eval=False, dist_eval=False, num_workers=10,
        pin_mem=True, world_size=1, dist_url="env://", nb_classes=CLASSES, distributed=False,
    )  # fmt: skip
    torch.save(
        {
            "model": weights,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": 41,
            "model_ema": facebook_state_dict(ema),
            "scaler": {
                "scale": 65536.0,
                "growth_factor": 2.0,
                "backoff_factor": 0.5,
                "growth_interval": 2000,
                "_growth_tracker": 0,
            },
            "args": args,
        },
        path,
    )
    return path


def test_levit_main_checkpoint_loads_model_by_default(tmp_path: Path) -> None:
    """args (a Namespace) is allowed in weights-only loading; 'model' is exported, as LeViT evaluates it."""
    model = random_levit("levit_128s", CLASSES, None, seed=11)
    ema = random_levit("levit_128s", CLASSES, None, seed=12)
    path = _levit_main_checkpoint(model, ema, tmp_path / "checkpoint.pth")
    x = random_images(2, 224, seed=13)
    loaded = load_model(ModelSpec("levit_128s", checkpoint=path))
    assert loaded.checkpoint_format == "facebookresearch"
    assert loaded.checkpoint_key == "model"
    assert loaded.weight_sets == ("model", "model_ema")
    assert torch.equal(logits(loaded.model, x), logits(model, x))
    chosen = load_model(ModelSpec("levit_128s", checkpoint=path, checkpoint_key="model_ema"))
    assert chosen.checkpoint_key == "model_ema"
    assert torch.equal(logits(chosen.model, x), logits(ema, x))
    with pytest.raises(UserError, match=r"no weight set 'state_dict_ema' \(weight sets: model, model_ema\)"):
        load_model(ModelSpec("levit_128s", checkpoint=path, checkpoint_key="state_dict_ema"))


def test_namespace_allowed_but_nothing_else(tmp_path: Path, source: nn.Module) -> None:
    path = tmp_path / "evil.pth"
    _MARKER.unlink(missing_ok=True)
    torch.save({"model": _state(source), "args": argparse.Namespace(hook=Sneaky())}, path)
    with pytest.raises(UserError, match="arbitrary unpickling"):
        _load(path)
    assert not _MARKER.exists()


# ---- tensors that cannot be weights -------------------------------------------------------------------


def _broken(source: nn.Module, how: str) -> dict[str, torch.Tensor]:
    state = dict(_state(source))
    key = "stages.0.blocks.0.attn.qkv.linear.weight"
    weight = state[key]
    if how == "nan":
        weight[0, 0] = float("nan")
    elif how == "inf":
        weight[1, 2] = float("-inf")
    elif how == "bool":
        state[key] = weight > 0
    elif how == "int8":
        state[key] = (weight * 100).to(torch.int8)
    elif how == "meta":
        state[key] = torch.empty(weight.shape, device="meta")
    elif how == "sparse":
        state[key] = weight.to_sparse()
    return state


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("nan", r"qkv.linear.weight has 1 non-finite value\(s\) \(NaN/Inf\)"),
        ("inf", r"qkv.linear.weight has 1 non-finite value\(s\) \(NaN/Inf\)"),
        ("bool", r"qkv.linear.weight is bool, expected floating point"),
        ("int8", r"qkv.linear.weight is int8, expected floating point"),
        ("meta", r"qkv.linear.weight is a meta tensor"),
        ("sparse", r"qkv.linear.weight is a torch.sparse_coo tensor"),
    ],
)
def test_tensors_that_cannot_be_weights(tmp_path: Path, source: nn.Module, how: str, match: str) -> None:
    state = _broken(source, how)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=match):
        _load(path)
    if how in ("nan", "int8", "bool"):  # safetensors holds dense tensors with data only
        save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
        with pytest.raises(UserError, match=match):
            _load(tmp_path / "w.safetensors")
