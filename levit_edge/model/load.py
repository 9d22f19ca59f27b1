"""Create a timm LeViT by name and load weights from any of the checkpoint layouts users bring."""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import socket
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import timm
import torch
from torch import nn

from levit_edge.errors import UserError
from levit_edge.io import sha256_file

# Wrappers that training scripts put around the weights, in the order timm's own loader prefers them
# (EMA weights first: they are what a trainer validates and ships).
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")


def levit_names() -> list[str]:
    """Every LeViT architecture timm registers (``levit_*`` and ``levit_conv_*``)."""
    return sorted(timm.list_models("levit_*"))


@dataclass(frozen=True)
class ModelSpec:
    """Which LeViT to build and where its weights come from."""

    name: str
    checkpoint: Path | None = None
    num_classes: int | None = None
    img_size: int | None = None
    pretrained: bool = False
    # which weight set of a training checkpoint to export ("model", "model_ema", "state_dict_ema", ...);
    # None: the checkpoint's own project's choice (see read_weights)
    checkpoint_key: str | None = None

    def __post_init__(self) -> None:
        if self.checkpoint_key is not None and self.checkpoint is None:
            raise UserError("--checkpoint-key picks a weight set inside --checkpoint: pass --checkpoint too")
        names = levit_names()
        if self.name not in names:
            raise UserError(f"'{self.name}' is not a timm LeViT; valid names: {', '.join(names)}")
        if self.checkpoint is not None and self.pretrained:
            raise UserError("--checkpoint and --pretrained are exclusive: pick one source of weights")
        if self.num_classes is not None and not 1 <= self.num_classes <= 1_000_000:
            raise UserError(f"--num-classes must be between 1 and 1000000, got {self.num_classes}")
        if self.img_size is not None and (not 32 <= self.img_size <= 1024 or self.img_size % 16):
            raise UserError(f"--img-size must be a multiple of 16 between 32 and 1024, got {self.img_size}")


@dataclass(frozen=True)
class LoadedModel:
    """An eval-mode LeViT plus what the artifacts must record about where it came from."""

    model: nn.Module
    spec: ModelSpec
    checkpoint_sha256: str | None
    checkpoint_format: str  # "random-init", "timm-pretrained", "state_dict", "training:<key>", ...
    num_classes: int
    checkpoint_key: str | None = None  # the weight set exported from a training checkpoint
    weight_sets: tuple[str, ...] = ()  # every weight set the checkpoint holds


def create_levit(name: str, num_classes: int = 1000, img_size: int | None = None) -> nn.Module:
    """Build a randomly initialised timm LeViT; ``img_size`` rebuilds its attention-bias tables.

    The pretrained config's input size follows ``img_size`` so that ``resolve_data_config(model=...)``
    stays the single source of preprocessing.
    """
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if img_size is not None:
        kwargs["img_size"] = img_size
        kwargs["pretrained_cfg_overlay"] = {"input_size": (3, img_size, img_size)}
    return timm.create_model(name, pretrained=False, **kwargs)


@dataclass(frozen=True)
class Weights:
    """A flat state_dict read from a checkpoint, and which of the file's weight sets it is."""

    state: dict[str, torch.Tensor]
    format: str
    key: str | None
    weight_sets: tuple[str, ...]


def read_checkpoint(path: Path, key: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file safely and unwrap it to a flat state_dict; returns (state, format)."""
    weights = read_weights(path, key)
    return weights.state, weights.format


# Allowed in weights-only loading besides tensors and containers: facebookresearch/LeViT's (and DeiT's)
# main.py saves its argparse.Namespace under "args" in every checkpoint. Nothing else is unpickled.
_SAFE_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [argparse.Namespace]


def read_weights(path: Path, key: str | None = None) -> Weights:
    """Read a checkpoint file safely and unwrap it to one flat state_dict.

    ``key`` picks the weight set of a training checkpoint. Without it, a facebookresearch/LeViT (or DeiT)
    training checkpoint (``model`` beside ``args``/``optimizer``/``epoch``) gives ``model``, as their
    ``main.py`` evaluates it; other layouts follow timm's loader (EMA weights first).
    """
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise UserError(f"checkpoint is not a file: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint is empty: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"cannot read safetensors checkpoint {path}: {exc}") from None
        if key is not None:
            raise UserError(f"--checkpoint-key {key}: {path} is a safetensors file with one weight set")
        return Weights(state, "safetensors", None, ())
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_SAFE_GLOBALS):
            # e.g. "Detected pickle protocol 4": stderr carries only the one error line (if any)
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Only a class/function reference (GLOBAL) means stored Python objects; other weights-only
        # failures ("Unsupported operand ...") are bytes that are not a checkpoint at all.
        if "unsupported global" in str(exc).lower():
            raise UserError(
                f"checkpoint {path} needs arbitrary unpickling (it stores Python objects, not just tensors); "
                "refused for safety: re-save it as a state_dict or safetensors"
            ) from None
        if "weights only load failed" in str(exc).lower():
            first = "not a PyTorch checkpoint (corrupt or another format)"
        raise UserError(f"cannot read checkpoint {path}: {first}") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: {first}") from None
    except Exception as exc:  # damaged bytes reach the unpickler as KeyError, IndexError, struct.error...
        raise UserError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint (corrupt or another format; "
            f"{type(exc).__name__})"
        ) from None
    return _unwrap(obj, path, key)


def _weight_sets(obj: object) -> tuple[str, ...]:
    if not isinstance(obj, Mapping):
        return ()
    return tuple(str(k) for k, v in obj.items() if isinstance(v, Mapping) and _is_state_dict(v))


def _project_default(obj: Mapping[object, object]) -> str | None:
    """facebookresearch/LeViT and DeiT training checkpoints: their main.py evaluates "model"."""
    if not isinstance(obj.get("model"), Mapping):
        return None
    if isinstance(obj.get("args"), argparse.Namespace) or {"optimizer", "epoch"} <= set(obj):
        return "model"
    return None


def _unwrap(obj: object, path: Path, key: str | None = None) -> Weights:
    sets = _weight_sets(obj)
    if key is not None:
        if key not in sets:
            raise UserError(
                f"--checkpoint-key {key}: {path} has no weight set '{key}' "
                f"(weight sets: {', '.join(sets) or 'none'})"
            )
        assert isinstance(obj, Mapping)
        state, fmt = _flatten(obj[key], path, f"training:{key}")
        return Weights(state, fmt, key, sets)
    if isinstance(obj, Mapping) and (default := _project_default(obj)) is not None:
        state, fmt = _flatten(obj[default], path, f"training:{default}")
        return Weights(state, fmt, default, sets)
    state, fmt = _flatten(obj, path, "state_dict")
    return Weights(state, fmt, fmt.removeprefix("training:") if fmt != "state_dict" else None, sets)


def _flatten(obj: object, path: Path, fmt: str) -> tuple[dict[str, torch.Tensor], str]:
    # A wrapper key wins even beside top-level tensors (e.g. the PyTorch ImageNet example's best_acc1).
    seen: set[int] = set()  # a pickle can hold a dict that contains itself
    while isinstance(obj, Mapping) and (not _is_state_dict(obj) or _wrapper_key(obj) is not None):
        key = _wrapper_key(obj)
        if id(obj) in seen:
            raise UserError(f"checkpoint {path} does not contain a state_dict ('{key}' contains itself)")
        seen.add(id(obj))
        if key is None:
            raise UserError(
                f"checkpoint {path} holds no tensors under any of {', '.join(_WRAPPER_KEYS)}; "
                f"top-level keys: {', '.join(map(str, list(obj)[:10]))}"
            )
        obj = obj[key]
        fmt = f"training:{key}"
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"checkpoint {path} does not contain a state_dict")
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return state, fmt


def _wrapper_key(obj: Mapping[object, object]) -> str | None:
    return next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)


def _is_state_dict(obj: Mapping[object, object]) -> bool:
    return (
        bool(obj)
        and all(isinstance(k, str) for k in obj)
        and any(isinstance(v, torch.Tensor) for v in obj.values())
    )


# ---- facebookresearch/LeViT checkpoints -------------------------------------------------------------
# Their keys differ from timm's (patch_embed/blocks/c/l vs stem/stages/linear) but the parameter order is
# the same, so keys are paired in order and each pair is verified by shape and by leaf name.
_FB_LEAF = {"c": "linear", "l": "linear", "bn": "bn"}


def is_facebook_checkpoint(state: Mapping[str, torch.Tensor]) -> bool:
    """True for the original facebookresearch/LeViT key layout."""
    return any(k.startswith("patch_embed.") for k in state) and any(k.startswith("blocks.") for k in state)


def _leaf(key: str) -> str:
    parts = key.split(".")
    if parts[-1] == "attention_biases":
        return "attention_biases"
    module = _FB_LEAF.get(parts[-2], parts[-2]) if len(parts) > 1 else ""
    return f"{module}.{parts[-1]}"


def map_facebook_checkpoint(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename a facebookresearch/LeViT state_dict to timm keys, verifying every pair."""
    src = [(k, v) for k, v in state.items() if "attention_bias_idxs" not in k]
    dst = [(k, v) for k, v in target.items() if "attention_bias_idxs" not in k]
    if len(src) != len(dst):
        raise UserError(
            f"facebookresearch LeViT checkpoint has {len(src)} tensors, the model expects {len(dst)}: "
            "wrong --model for this checkpoint?"
        )
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (dk, dv) in zip(src, dst, strict=True):
        if sv.ndim == 2 and dv.ndim == 4 and dv.shape[2:] == (1, 1):
            sv = sv[:, :, None, None]  # linear weight into a levit_conv 1x1 conv
        if _leaf(sk) != _leaf(dk) or (tuple(sv.shape) != tuple(dv.shape) and not dk.startswith("head")):
            raise UserError(
                f"facebookresearch LeViT checkpoint does not match the model: {sk} {list(sv.shape)} "
                f"cannot map to {dk} {list(dv.shape)}; wrong --model for this checkpoint?"
            )
        out[dk] = sv
    return out


# ---- loading ---------------------------------------------------------------------------------------


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build the model the spec names, load its weights and return it in eval mode."""
    if spec.pretrained:
        return _load_pretrained(spec)
    if spec.checkpoint is None:
        model = create_levit(spec.name, spec.num_classes or 1000, spec.img_size)
        return LoadedModel(model.eval(), spec, None, "random-init", spec.num_classes or 1000)

    weights = read_weights(spec.checkpoint, spec.checkpoint_key)
    state, fmt = weights.state, weights.format
    num_classes = spec.num_classes or _infer_num_classes(state) or 1000
    model = create_levit(spec.name, num_classes, spec.img_size)
    if is_facebook_checkpoint(state):
        state = map_facebook_checkpoint(state, model.state_dict())
        fmt = "facebookresearch"
    state = {k: v for k, v in state.items() if "attention_bias_idxs" not in k}
    _check_keys(state, model, spec)
    _check_tensors(state, model.state_dict(), spec.checkpoint)
    model.load_state_dict(state, strict=True)
    return LoadedModel(
        model.eval(),
        spec,
        sha256_file(spec.checkpoint),
        fmt,
        num_classes,
        weights.key,
        weights.weight_sets,
    )


def _check_tensors(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: Path
) -> None:
    """UserError for a tensor that cannot be real weights: no data, sparse, wrong kind, NaN/Inf.

    ``load_state_dict`` would silently cast an int8 or bool tensor into the float parameter (a quantized
    or damaged checkpoint then "works" at chance accuracy), and NaN/Inf weights only surface later as a
    failed parity check.
    """
    for key, tensor in state.items():
        want = expected.get(key)
        where = f"checkpoint {path}: tensor {key}"
        if tensor.is_meta:
            raise UserError(f"{where} is a meta tensor (shape only, no data)")
        if tensor.layout != torch.strided:
            raise UserError(f"{where} is a {tensor.layout} tensor, expected a dense one")
        if want is not None and want.is_floating_point() and not tensor.is_floating_point():
            raise UserError(
                f"{where} is {str(tensor.dtype).removeprefix('torch.')}, expected floating point "
                "(a quantized or damaged checkpoint?)"
            )
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise UserError(f"{where} has {bad} non-finite value(s) (NaN/Inf): the weights are broken")


def _infer_num_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    for key in ("head.linear.weight", "head.l.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return None


def _check_keys(state: Mapping[str, torch.Tensor], model: nn.Module, spec: ModelSpec) -> None:
    expected = {k: v for k, v in model.state_dict().items() if "attention_bias_idxs" not in k}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_few(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): {_few(wrong)}")
        if any(re.match(r"head(_dist)?\.", w) for w in wrong):
            problems.append("the classifier size differs: check --num-classes")
    if problems:
        raise UserError(f"checkpoint {spec.checkpoint} does not fit {spec.name}: " + "; ".join(problems))


def _few(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _load_pretrained(spec: ModelSpec) -> LoadedModel:
    kwargs: dict[str, Any] = {}
    if spec.num_classes is not None:
        kwargs["num_classes"] = spec.num_classes
    if spec.img_size is not None:
        kwargs["img_size"] = spec.img_size
        kwargs["pretrained_cfg_overlay"] = {"input_size": (3, spec.img_size, spec.img_size)}
    unreachable = _hub_unreachable()
    try:
        # Without a route to the hub, its client retries each file for about 25 s: use the cache only.
        with _hub_offline() if unreachable else contextlib.nullcontext():
            model = timm.create_model(spec.name, pretrained=True, **kwargs)
    except Exception as exc:  # the hub raises many types (OSError, HTTP errors, LocalEntryNotFoundError...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if unreachable:
            first = f"the model hub is unreachable ({unreachable}) and the weights are not cached"
        raise UserError(
            f"could not fetch timm's pretrained weights for {spec.name} (no network or no such weights?): "
            f"{first}; pass --checkpoint FILE instead"
        ) from None
    num_classes = int(getattr(model, "num_classes", spec.num_classes or 1000))
    return LoadedModel(model.eval(), spec, None, "timm-pretrained", num_classes)


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached (a quick TCP connect), or None when it can, when a proxy
    decides, or when offline mode is already on."""
    from huggingface_hub import constants

    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    if constants.is_offline_mode() or any(os.environ.get(v) for v in proxies):
        return None
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or type(exc).__name__}"
    return None


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub's offline mode (cache only, no retries) for the duration of the block."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
