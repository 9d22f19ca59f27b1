"""Evaluation preprocessing: the model's own timm data config, turned into a PIL -> CHW float32 function.

The model is the single source of truth for preprocessing: ``PreprocessConfig.from_model`` reads it with
``timm.data.resolve_data_config`` and ``transform`` builds timm's own eval transform from it, so the
exported/quantized model sees exactly the pixels timm would feed the PyTorch model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from levit_edge.errors import UserError

__all__ = ["CROP_MODES", "INTERPOLATIONS", "PreprocessConfig", "to_rgb"]

# The names timm's eval transform accepts (timm.data.transforms.str_to_interp_mode, transforms_imagenet_eval).
INTERPOLATIONS = frozenset({"nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"})
CROP_MODES = frozenset({"center", "squash", "border"})

MAX_SIZE = 1024  # the largest --img-size (levit_edge.model.load.ModelSpec)
_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB exactly as timm's datasets do: ``image.convert("RGB")``.

    timm's ``ImageDataset`` (behind ``create_dataset`` and its train/validate scripts) opens every file
    with Pillow and converts it to RGB, so a model trained and validated with timm saw these pixels:
    alpha is dropped (not composited), 16/32-bit integer images are clipped to 0..255, palette and CMYK
    use Pillow's conversion. Doing anything cleverer would validate on pixels the model never saw.
    """
    return image if image.mode == "RGB" else image.convert("RGB")


def _triple(d: Mapping[str, Any], key: str, kind: type) -> tuple[Any, Any, Any]:
    value = d[key]
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise UserError(f"preprocess config: '{key}' must be a list of 3 numbers, got {value!r}")
    out = []
    for v in value:
        # bool is an int subclass; True as a mean or a size is always a mistake.
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (kind is int and not float(v).is_integer())
        ):
            raise UserError(f"preprocess config: '{key}' must be a list of 3 numbers, got {value!r}")
        out.append(kind(v))
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class PreprocessConfig:
    """Evaluation preprocessing of one model (the subset of timm's data config that eval uses)."""

    input_size: tuple[int, int, int]  # (3, H, W)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float
    interpolation: str
    crop_mode: str = "center"

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> PreprocessConfig:
        """Read the model's preprocessing with ``timm.data.resolve_data_config(model=model)``."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config(model=model)
        return cls.from_dict(
            {
                "input_size": list(cfg["input_size"]),
                "mean": list(cfg["mean"]),
                "std": list(cfg["std"]),
                "crop_pct": cfg["crop_pct"],
                "interpolation": cfg["interpolation"],
                # older timm configs carry no crop_mode; timm's eval transform then centre-crops
                "crop_mode": cfg.get("crop_mode") or "center",
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists for tuples); ``from_dict(to_dict())`` round-trips."""
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "crop_mode": self.crop_mode,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        """Validate and build from ``to_dict`` output; UserError naming the bad or missing key."""
        if not isinstance(d, Mapping):
            raise UserError(f"preprocess config: expected a mapping, got {type(d).__name__}")
        required = [k for k in _KEYS if k != "crop_mode"]
        missing = [k for k in required if k not in d]
        if missing:
            raise UserError(f"preprocess config: missing key(s) {', '.join(missing)}")
        unknown = sorted(str(k) for k in d if k not in _KEYS)
        if unknown:
            raise UserError(f"preprocess config: unknown key(s) {', '.join(unknown)}")

        input_size = _triple(d, "input_size", int)
        # bounded like --img-size: a recorded size is read back from files someone may have edited
        if input_size[0] != 3 or not (0 < input_size[1] <= MAX_SIZE and 0 < input_size[2] <= MAX_SIZE):
            raise UserError(
                f"preprocess config: 'input_size' must be [3, H, W] with H, W > 0 and at most {MAX_SIZE}, "
                f"got {d['input_size']!r}"
            )
        mean = _triple(d, "mean", float)
        std = _triple(d, "std", float)
        if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
            raise UserError(
                f"preprocess config: 'mean' must be finite and 'std' finite and > 0, got {mean}, {std}"
            )
        crop_pct = d["crop_pct"]
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, int | float) or not 0 < crop_pct <= 1:
            raise UserError(f"preprocess config: 'crop_pct' must be a number in (0, 1], got {crop_pct!r}")
        interpolation = d["interpolation"]
        if interpolation not in INTERPOLATIONS:
            raise UserError(
                f"preprocess config: 'interpolation' must be one of {', '.join(sorted(INTERPOLATIONS))}, "
                f"got {interpolation!r}"
            )
        crop_mode = d.get("crop_mode", "center")
        if crop_mode not in CROP_MODES:
            raise UserError(
                f"preprocess config: 'crop_mode' must be one of {', '.join(sorted(CROP_MODES))}, "
                f"got {crop_mode!r}"
            )
        return cls(input_size, mean, std, float(crop_pct), str(interpolation), str(crop_mode))

    def transform(self) -> Callable[[Image.Image], np.ndarray]:
        """timm's eval transform (resize, crop, normalize) as PIL image (any mode) -> (3,H,W) float32."""
        from timm.data import create_transform

        timm_transform = create_transform(
            input_size=self.input_size,
            is_training=False,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
        )

        def apply(image: Image.Image) -> np.ndarray:
            tensor = timm_transform(to_rgb(image))
            return np.ascontiguousarray(tensor.numpy(), dtype=np.float32)

        return apply
