"""Build and validate a run's TensorRT engine on the target board (Jetson Orin, JetPack 6).

JetPack 6 ships TensorRT 10.3 with Python bindings for Python 3.10 and no torch; the rest of levit-edge
needs Python 3.11 and torch. This module and what it imports (``levit_edge.backends.tensorrt``,
``levit_edge.backends.base``, ``levit_edge.errors``) keep to Python 3.10 syntax and standard library and
import only numpy, Pillow, TensorRT and a CUDA binding (cuda-python or pycuda, for validation), so a run
folder and a copy of the ``levit_edge`` package are all the board needs (tests/test_board.py checks it)::

    python3 -m levit_edge.board build RUN/model.int8.trt.onnx          # -> RUN/model.int8.plan
    python3 -m levit_edge.board validate RUN --data val_dir/ [--gate]  # top-1 of the engine vs the report

``validate`` reads the preprocessing, class names and CI accuracy from ``RUN/report.json``; ``--data`` is
a class-per-folder image set whose folder names are the run's class names, or a ``.npz`` with ``images``
(N,3,H,W float32, already preprocessed) and ``labels``. Images are resized and cropped as timm's eval
transform does (centre crop or squash, square inputs); 8-bit RGB and grayscale files only: convert
others, or preprocess into a ``.npz``, on the CI host.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from levit_edge.backends.base import Runner
from levit_edge.errors import AccuracyGateFailed, EngineUnavailable, UserError

PLAN_FILE = "model.int8.plan"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_PIL_FILTERS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


@dataclass(frozen=True)
class Preprocess:
    """The run's ``report.json`` ``preprocess`` section (timm's eval transform settings)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float
    interpolation: str
    crop_mode: str

    @classmethod
    def from_report(cls, section: Any) -> Preprocess:
        try:
            _, height, width = (int(v) for v in section["input_size"])
            mean = tuple(float(v) for v in section["mean"])
            std = tuple(float(v) for v in section["std"])
            crop_pct = float(section["crop_pct"])
            interpolation = str(section["interpolation"])
            crop_mode = str(section.get("crop_mode") or "center")
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"report.json: malformed 'preprocess' section ({exc})") from None
        if height != width or crop_mode not in ("center", "squash") or interpolation not in _PIL_FILTERS:
            raise UserError(
                f"the board reads square inputs with crop_mode center/squash only (got {height}x{width}, "
                f"{crop_mode}, {interpolation}): pass a preprocessed .npz made on the CI host"
            )
        if len(mean) != 3 or len(std) != 3 or not 0 < crop_pct <= 1:
            raise UserError("report.json: 'preprocess' needs 3 means, 3 stds and crop_pct in (0, 1]")
        return cls(
            height, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]), crop_pct, interpolation, crop_mode
        )

    def __call__(self, image: Any) -> np.ndarray:
        """A PIL image -> (3, size, size) float32, as timm's eval transform (torchvision on PIL) does."""
        from PIL import Image

        if image.mode == "L" and "transparency" not in image.info:
            image = image.convert("RGB")
        elif image.mode != "RGB" or "transparency" in image.info:
            raise UserError(f"image mode {image.mode} is not read on the board: use 8-bit RGB or grayscale")
        resample = getattr(Image.Resampling, self.interpolation.upper())
        scale = math.floor(self.size / self.crop_pct)
        width, height = image.size
        if self.crop_mode == "squash":
            target = (scale, scale)
        elif width <= height:  # the shorter edge becomes ``scale`` (torchvision Resize with an int)
            target = (scale, int(scale * height / width))
        else:
            target = (int(scale * width / height), scale)
        if target != (width, height):
            image = image.resize(target, resample)
        width, height = image.size
        if width < self.size or height < self.size:
            raise UserError(f"image of {width}x{height} is smaller than the {self.size} crop")
        top = round((height - self.size) / 2.0)  # torchvision center_crop
        left = round((width - self.size) / 2.0)
        image = image.crop((left, top, left + self.size, top + self.size))
        array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray((array - mean) / std, dtype=np.float32)


def _read_report(run: Path) -> dict[str, Any]:
    path = run / "report.json"
    if not path.is_file():
        raise UserError(f"{run} is not a levit-edge run folder (no report.json)")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(report, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return report


def _batches(
    data: Path, class_names: Sequence[str] | None, preprocess: Preprocess, batch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) batches from a class-per-folder set or a preprocessed, labelled ``.npz``."""
    if data.is_file() and data.suffix == ".npz":
        with np.load(data, allow_pickle=False) as npz:
            if "images" not in npz.files or "labels" not in npz.files:
                raise UserError(f"{data}: needs 'images' and 'labels' arrays")
            images, labels = npz["images"], npz["labels"]
        if images.ndim != 4 or images.shape[1:] != (3, preprocess.size, preprocess.size):
            raise UserError(
                f"{data}: images must be (N,3,{preprocess.size},{preprocess.size}), got {images.shape}"
            )
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{data}: labels must be ({len(images)},) integers")
        if not np.isfinite(images).all():
            raise UserError(f"{data}: images hold NaN or Inf values")
        for start in range(0, len(images), batch):
            yield (
                images[start : start + batch].astype(np.float32),
                labels[start : start + batch].astype(np.int64),
            )
        return
    if not data.is_dir():
        raise UserError(f"--data must be a class-per-folder directory or a .npz file: {data}")
    if not class_names:
        raise UserError("the run's report has no class names: validate with a labelled .npz instead")
    index = {name: i for i, name in enumerate(class_names)}
    folders = sorted(p for p in data.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in index]
    if unknown or not folders:
        raise UserError(
            f"{data}: folders must be the run's class names; unknown: {unknown[:5] or 'no folders'}"
        )
    files = [
        (f, index[d.name]) for d in folders for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise UserError(f"{data}: no images found")
    from PIL import Image

    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        arrays = []
        for path, _ in chunk:
            try:
                with Image.open(path) as image:
                    image.load()
                    arrays.append(preprocess(image))
            except OSError as exc:
                raise UserError(f"cannot read image {path}: {exc}") from None
        yield np.stack(arrays), np.asarray([label for _, label in chunk], dtype=np.int64)


@dataclass(frozen=True)
class BoardValidation:
    """Top-1 of the engine on the board's data, beside what CI measured for the same run."""

    n: int
    top1: float
    ci_top1: dict[str, float]  # the report's fp32 / int8.trt top-1 (CI data), where present
    max_drop: float | None
    drop: float | None  # the run's CI FP32 top-1 minus the engine's, in points
    passed: bool | None  # drop <= max_drop; only with gate=True (the same images as the run's --val)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate_engine(
    run: Path,
    data: Path,
    plan: Path | None = None,
    batch: int = 32,
    version_compatible: bool | None = None,
    gate: bool = False,
    runner: Runner | None = None,
) -> BoardValidation:
    """Run the engine on ``data``; beside its top-1, the run's CI figures. ``gate``: judge the drop
    from the run's FP32 top-1 against its ``max_drop`` (meaningful only on the run's own --val images).
    ``runner``: another backend in place of the run's TensorRT engine (tests, ONNX Runtime on the board)."""
    from levit_edge.backends.tensorrt import TensorRTRunner

    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    report = _read_report(run)
    preprocess = Preprocess.from_report(report.get("preprocess"))
    names = (report.get("model") or {}).get("class_names")
    engine_options = (report.get("options") or {}).get("engine") or {}
    if version_compatible is None:
        version_compatible = engine_options.get("version_compatible") is True
    correct = total = 0
    if runner is None:
        runner = TensorRTRunner(plan or run / PLAN_FILE, version_compatible=version_compatible)
    with runner:
        for images, labels in _batches(data, names, preprocess, batch):
            logits = runner.infer(images)
            correct += int((logits.argmax(axis=1) == labels).sum())
            total += len(labels)
    top1 = 100.0 * correct / total
    accuracy = report.get("accuracy") or {}
    ci = {k: float(v["top1"]) for k, v in accuracy.items() if isinstance(v, dict) and "top1" in v}
    max_drop = (report.get("thresholds") or {}).get("max_drop")
    drop = ci["fp32"] - top1 if "fp32" in ci else None
    passed = None if not gate or drop is None or max_drop is None else drop <= float(max_drop)
    return BoardValidation(total, top1, ci, max_drop, drop, passed)


def _build(args: argparse.Namespace) -> None:
    from levit_edge.backends.trt_build import EngineSettings, build_engine

    model: Path = args.model
    if not model.is_file():
        raise UserError(f"model not found: {model}")
    plan = args.plan or model.with_name(PLAN_FILE)
    if plan.exists() and not args.force:
        raise UserError(f"{plan} already exists; pass --force to replace it")
    settings = EngineSettings(
        onnx_path=model,
        plan_path=plan,
        timing_cache_path=model.with_name("timing.cache"),
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        workspace_mb=args.workspace_mb,
        version_compatible=args.version_compatible,
        hardware_compatibility=args.hardware_compatibility,
    )
    result = build_engine(settings)
    print(
        f"engine {result.plan_path} built in {result.seconds:.1f}s with TensorRT {result.tensorrt_version} "
        f"on {result.gpu_name}, batch {result.batch_range[0]}-{result.batch_range[2]}"
    )


def _validate(args: argparse.Namespace) -> None:
    result = validate_engine(
        args.run, args.data, args.plan, args.batch, args.version_compatible or None, args.gate
    )
    print(json.dumps(result.to_dict(), indent=2))
    if result.passed is False:
        raise AccuracyGateFailed(
            f"engine top-1 {result.top1:.2f} is {result.drop:.2f} points below the run's FP32 "
            f"{result.ci_top1['fp32']:.2f} (max_drop {result.max_drop})",
            result,
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m levit_edge.board", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build RUN/model.int8.plan from RUN/model.int8.trt.onnx")
    build.add_argument("model", type=Path)
    build.add_argument("--plan", type=Path, default=None)
    build.add_argument("--min-batch", type=int, default=1)
    build.add_argument("--opt-batch", type=int, default=1)
    build.add_argument("--max-batch", type=int, default=8)
    build.add_argument("--workspace-mb", type=int, default=1024)
    build.add_argument("--version-compatible", action="store_true")
    build.add_argument("--hardware-compatibility", default="none", help="none | ampere_plus")
    build.add_argument("--force", action="store_true")
    build.set_defaults(func=_build)
    check = sub.add_parser("validate", help="top-1 of the run's engine on the board's own data")
    check.add_argument("run", type=Path)
    check.add_argument("--data", type=Path, required=True)
    check.add_argument("--plan", type=Path, default=None)
    check.add_argument("--batch", type=int, default=32)
    check.add_argument("--version-compatible", action="store_true")
    check.add_argument(
        "--gate",
        action="store_true",
        help="exit 3 when the engine's top-1 is more than the run's max_drop below its FP32 top-1 "
        "(pass the run's own validation images as --data)",
    )
    check.set_defaults(func=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0, 1 (user error), 3 (below the run's gate) or 4 (TensorRT, a GPU or a CUDA binding missing)."""
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, AccuracyGateFailed, EngineUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
