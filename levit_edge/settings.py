"""Typed settings for a whole export run, validated once, and the TOML config file that carries them.

The CLI resolves every option as: flag given on the command line > value in ``--config`` > built-in
default, then builds these frozen dataclasses. Library code receives only these objects.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from levit_edge.errors import UserError

# Choices as Literal types too: the CLI's parser rejects any other value as a usage error (exit 2).
Target = Literal["onnx", "ort", "trt", "all"]
CalibMethod = Literal["minmax", "percentile", "entropy"]
OrtProfileName = Literal["ort", "ort-vnni"]  # levit_edge.quant.profiles.ORT_PROFILES (import-free here)
TARGETS: tuple[str, ...] = get_args(Target)
CALIB_METHODS: tuple[str, ...] = get_args(CalibMethod)
ORT_PROFILE_NAMES: tuple[str, ...] = get_args(OrtProfileName)
DEFAULT_OPSET = 17  # levit_edge.export.onnx.DEFAULT_OPSET


@dataclass(frozen=True)
class QuantSettings:
    """How INT8 ranges are computed and applied."""

    method: str = "minmax"
    percentile: float = 99.999
    calib_size: int | None = 512
    trt_fp16: bool = False
    ort_profile: str = "ort"  # the ONNX Runtime INT8 recipe: "ort" (any CPU) or "ort-vnni"

    def __post_init__(self) -> None:
        if self.ort_profile not in ORT_PROFILE_NAMES:
            raise UserError(
                f"--ort-profile must be one of {', '.join(ORT_PROFILE_NAMES)}, got '{self.ort_profile}'"
            )
        if self.method not in CALIB_METHODS:
            raise UserError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got '{self.method}'")
        if not (math.isfinite(self.percentile) and 50.0 < self.percentile <= 100.0):
            raise UserError(f"--percentile must be in (50, 100], got {self.percentile}")
        if self.calib_size is not None and self.calib_size < 1:
            raise UserError(f"--calib-size must be at least 1, got {self.calib_size}")


@dataclass(frozen=True)
class GateSettings:
    """The accuracy-drop gate."""

    max_drop: float = 1.0  # top-1 points vs FP32 (or agreement points without labels)
    # accept labelled FP32 top-1 at or below chance (otherwise a user error: labels and classes disagree)
    allow_chance: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise UserError(f"--max-drop must be a non-negative number of points, got {self.max_drop}")


@dataclass(frozen=True)
class FallbackSettings:
    """Accuracy-aware quantization: float layers until each INT8 artifact's drop fits ``budget``."""

    budget: float | None = None  # top-1 points vs FP32; None = off. Also the gate's max drop when set.
    max_float_layers: int = 8  # most layers any artifact may keep in float
    samples: int = 32  # calibration images for the per-layer SQNR pass and per-tensor range fix
    rank_images: int = 256  # validation images for each layer's "alone in float" effect

    def __post_init__(self) -> None:
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget >= 0):
            raise UserError(f"--accuracy-budget must be a non-negative number of points, got {self.budget}")
        if self.max_float_layers < 0:
            raise UserError(f"--max-float-layers must be at least 0, got {self.max_float_layers}")
        if self.samples < 0 or self.rank_images < 1:
            raise UserError("sensitivity needs samples >= 0 and rank_images >= 1")

    @property
    def enabled(self) -> bool:
        return self.budget is not None


MAX_THREADS = 1024  # beyond any CPU here; a larger value is a typo, and ORT reports it as a model error


@dataclass(frozen=True)
class RuntimeSettings:
    """Execution knobs shared by calibration, validation and benchmarks."""

    batch_size: int = 32
    threads: int | None = None  # None: all cores
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise UserError(f"--threads must be between 1 and {MAX_THREADS}, got {self.threads}")
        if not 0 <= self.seed < 2**63:  # torch and numpy seeds are 64-bit
            raise UserError(f"--seed must be between 0 and 2**63 - 1, got {self.seed}")


@dataclass(frozen=True)
class Targets:
    """Which artifacts a run produces."""

    names: frozenset[str] = field(default_factory=lambda: frozenset({"onnx"}))
    int8: bool = False
    engine: bool = True  # with trt: also build the engine here (False: the two-step CPU-host pipeline)
    ort_format_fp32: bool = False  # with ort: also write model.fp32.ort (ONNX Runtime format)

    def __post_init__(self) -> None:
        if self.ort_format_fp32 and "ort" not in self.names:
            raise UserError("--ort-format-fp32 writes an ONNX Runtime model: use --target ort or all")

    @classmethod
    def parse(cls, target: str, int8: bool, engine: bool = True, ort_format_fp32: bool = False) -> Targets:
        if target not in TARGETS:
            raise UserError(f"--target must be one of {', '.join(TARGETS)}, got '{target}'")
        names = {"ort", "trt"} if target == "all" else {target}
        if target == "trt" and not int8:
            raise UserError("--target trt builds an INT8 TensorRT model: add --int8")
        if target == "onnx" and int8:
            raise UserError(
                "--int8 needs --target ort, trt or all (--target onnx writes only the FP32 model)"
            )
        return cls(frozenset(names), int8, engine, ort_format_fp32)

    @property
    def ort_int8(self) -> bool:
        return self.int8 and ("ort" in self.names)

    @property
    def trt_int8(self) -> bool:
        return self.int8 and ("trt" in self.names)

    @property
    def trt_engine(self) -> bool:
        return self.trt_int8 and self.engine

    @property
    def ort_format(self) -> bool:
        """ONNX Runtime format models (.ort) and reduced-build operator configs are written."""
        return self.ort_int8 or ("ort" in self.names and self.ort_format_fp32)


# ---- config files ---------------------------------------------------------------------------------

# Keys a config file may carry, with their expected Python types (the same names as the long flags).
CONFIG_KEYS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "checkpoint": (str,),
    "num_classes": (int,),
    "img_size": (int,),
    "pretrained": (bool,),
    "opset": (int,),
    "batch": (int,),
    "target": (str,),
    "int8": (bool,),
    "calib": (str,),
    "val": (str,),
    "data_root": (str,),
    "calib_size": (int,),
    "calib_method": (str,),
    "percentile": (float, int),
    "skip_bad": (bool,),
    "exclude": (str,),
    "max_drop": (float, int),
    "allow_chance_accuracy": (bool,),
    "class_order": (str,),
    "class_list": (str,),
    "checkpoint_key": (str,),
    "accuracy_budget": (float, int),
    "max_float_layers": (int,),
    "batch_size": (int,),
    "threads": (int,),
    "seed": (int,),
    "trt_fp16": (bool,),
    "ort_profile": (str,),
    "ort_format_fp32": (bool,),
    "engine": (bool,),
    "out": (str,),
    "name": (str,),
    "force": (bool,),
    "workspace_mb": (int,),
    "max_batch": (int,),
}
# The defaults of every export option, for the CLI, config files and the Python API alike (None: decided
# later: from the checkpoint, all cores, a timestamped name...).
EXPORT_DEFAULTS: dict[str, Any] = {
    "model": "levit_128s",
    "checkpoint": None,
    "num_classes": None,
    "img_size": None,
    "pretrained": False,
    "opset": DEFAULT_OPSET,
    "batch": None,
    "target": "onnx",
    "int8": False,
    "calib": None,
    "val": None,
    "data_root": None,
    "calib_size": 512,
    "calib_method": "minmax",
    "percentile": 99.999,
    "skip_bad": False,
    "exclude": None,
    "max_drop": 1.0,
    "allow_chance_accuracy": False,
    "class_order": "natural",
    "class_list": None,
    "checkpoint_key": None,
    "accuracy_budget": None,
    "max_float_layers": 8,
    "batch_size": 32,
    "threads": None,
    "seed": 0,
    "trt_fp16": False,
    "ort_profile": "ort",
    "ort_format_fp32": False,
    "engine": True,
    "out": "artifacts",
    "name": None,
    "force": False,
    "workspace_mb": 1024,
    "max_batch": 8,
}


def unknown_key(key: str, where: str) -> UserError:
    """The error for an option name that does not exist, with the closest real ones."""
    close = difflib.get_close_matches(key.replace("-", "_"), CONFIG_KEYS, n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "see README.md"
    return UserError(f"{where}: unknown key '{key}' ({hint})")


_PATH_KEYS = ("checkpoint", "calib", "val", "data_root", "exclude", "out", "class_list")


def load_config(path: Path) -> dict[str, Any]:
    """Read a TOML config (top level or an ``[export]`` table); unknown keys and wrong types are errors.

    Relative paths in the file are resolved against the file's own folder, so a reviewed config works
    from any working directory.
    """
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    table: Mapping[str, Any] = raw
    if isinstance(raw.get("export"), dict):
        outside = sorted(k for k in raw if k != "export")
        if outside:
            raise UserError(
                f"config file {path}: '{outside[0]}' is outside the [export] table "
                "(put every option in the table, or drop the table)"
            )
        table = raw["export"]
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in table.items():
        norm = key.replace("-", "_")
        if norm not in CONFIG_KEYS:
            raise unknown_key(key, f"config file {path}")
        if norm in spelled:
            raise UserError(f"config file {path}: '{key}' is given twice (also as '{spelled[norm]}')")
        spelled[norm] = key
        types = CONFIG_KEYS[norm]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise UserError(f"config file {path}: '{key}' must be {names}, got {value!r}")
        if isinstance(value, str) and "\x00" in value:
            raise UserError(f"config file {path}: '{key}' contains a NUL character")
        if norm in _PATH_KEYS and isinstance(value, str):
            if not value.strip():
                raise UserError(f"config file {path}: '{key}' is an empty path")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise UserError(f"config file {path}: '{key}' contains a control character: {value!r}")
            if not Path(value).is_absolute():
                value = str((path.parent / value).resolve())
        out[norm] = value
    return out


def pick(flag: Any, config: Mapping[str, Any], key: str, default: Any) -> Any:
    """Flag given > config value > default."""
    if flag is not None:
        return flag
    return config.get(key, default)


PLATFORMS = ("aarch64",)  # emulated CPU platforms a run's CPU deliverables can be checked on
MAX_PLATFORM_IMAGES = 10_000  # all images of a model go to one emulator process, in memory


@dataclass(frozen=True)
class PlatformSettings:
    """Checking a run's CPU deliverables on another CPU architecture under emulation."""

    platform: str = "aarch64"
    images: int = 64  # seeded subset of --val (start-up and inference under emulation are slow)
    seed: int = 0
    cache: Path | None = None  # where setup-platform provisioned it (None: the default cache)

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise UserError(f"--platform must be one of {', '.join(PLATFORMS)}, got '{self.platform}'")
        if isinstance(self.images, bool) or not 1 <= self.images <= MAX_PLATFORM_IMAGES:
            raise UserError(
                f"--platform-images must be between 1 and {MAX_PLATFORM_IMAGES}, got {self.images}"
            )
        if not 0 <= self.seed < 2**63:
            raise UserError(f"--platform-seed must be between 0 and 2**63 - 1, got {self.seed}")


@dataclass(frozen=True)
class PlatformSetup:
    """What ``setup-platform`` provisions: the emulator, an arm64 Python and an ONNX Runtime release."""

    platform: str = "aarch64"
    cache: Path | None = None  # None: the default cache
    onnxruntime: str | None = None  # None: the installed release (the one runs here record)
    numpy: str | None = None  # None: the installed release
    mirror: str = "http://deb.debian.org/debian"  # Debian archive the emulator and the arm64 root come from

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise UserError(f"platform must be one of {', '.join(PLATFORMS)}, got '{self.platform}'")
        for name, value in (("--onnxruntime", self.onnxruntime), ("--numpy", self.numpy)):
            if value is not None and not re.fullmatch(r"\d+(\.\d+){1,3}([a-z]+\d+)?(\.post\d+)?", value):
                raise UserError(f"{name} must be a release number such as 1.32.0, got '{value}'")
        if not re.fullmatch(r"https?://[^\s]+", self.mirror):
            raise UserError(f"--mirror must be an http(s) URL of a Debian archive, got '{self.mirror}'")
