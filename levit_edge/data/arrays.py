"""Arrays as sources: a .npy (memory-mapped) or .npz of raw uint8 or preprocessed float images."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from levit_edge.data.decode import one_line
from levit_edge.data.list_format import LABEL_LIMIT
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import DataSpec, ImageSource, random_subset
from levit_edge.errors import UserError


class _ArraySource(ImageSource):
    kind = "array"

    def __init__(
        self,
        path: Path,
        images: np.ndarray,
        index: np.ndarray,
        labels: np.ndarray | None,
        class_names: tuple[str, ...] | None,
        skip_bad: bool,
    ) -> None:
        super().__init__(path, skip_bad)
        self._images = images  # possibly memory-mapped: only the chosen rows are ever read
        self._index = index
        self._labels = None if labels is None else labels[index]
        self.class_names = class_names
        self._names = tuple(f"{path.name}[{i}]" for i in index)
        self.preprocessed = images.dtype != np.uint8  # (N,3,H,W) float vs (N,H,W,3) uint8

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def fingerprint(self) -> str:
        images = self._images
        header = (
            f"levit-edge data v1 array {images.dtype.str} {images.shape[1:]} {json.dumps(self.class_names)}"
        )
        h = hashlib.sha256((header + "\n").encode())
        for i in self._index:
            h.update(np.ascontiguousarray(images[i]).tobytes())
        if self._labels is not None:
            h.update(self._labels.astype("<i8").tobytes())
        return h.hexdigest()

    def _loader(self, preprocess: PreprocessConfig) -> Callable[[int], np.ndarray]:
        images, index = self._images, self._index
        if self.preprocessed:
            if tuple(images.shape[1:]) != tuple(preprocess.input_size):
                raise UserError(
                    f"{self.path}: preprocessed images are {tuple(images.shape[1:])}, "
                    f"but the model expects {tuple(preprocess.input_size)}"
                )

            def load(i: int) -> np.ndarray:
                image = np.asarray(images[index[i]], dtype=np.float32)
                if not np.isfinite(image).all():
                    # one NaN/Inf pixel poisons calibration ranges and scores a meaningless logit
                    raise ValueError(f"{int((~np.isfinite(image)).sum())} non-finite (NaN/Inf) value(s)")
                return image

            return load
        transform = preprocess.transform()
        return lambda i: transform(Image.fromarray(np.asarray(images[index[i]])))


def _check_images(images: Any, path: Path) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or len(images) == 0:
        shape = getattr(images, "shape", None)
        raise UserError(f"{path}: expected a non-empty 4-D image array, got shape {shape}")
    if images.dtype == np.uint8 and images.shape[3] == 3:
        return images
    if np.issubdtype(images.dtype, np.floating) and images.shape[1] == 3:
        return images
    raise UserError(
        f"{path}: images must be (N,3,H,W) float32 preprocessed or (N,H,W,3) uint8 raw, "
        f"got {images.shape} {images.dtype}"
    )


def open_array(spec: DataSpec, path: Path) -> ImageSource:
    """A .npy is memory-mapped; a .npz (compressed or not) is read whole, so prefer .npy for big sets."""
    if spec.exclude is not None:
        raise UserError(f"exclude matches file names, but {path} is an array file without names")
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    try:
        if path.suffix.lower() == ".npy":
            # memory-mapped: batches read only their own rows, whatever the file's size
            images = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                if "images" not in npz.files:
                    raise UserError(f"{path}: no 'images' array (found: {', '.join(npz.files) or 'none'})")
                images = npz["images"]
                if "labels" in npz.files:
                    labels = npz["labels"]
                if "class_names" in npz.files:
                    class_names = tuple(str(c) for c in npz["class_names"].reshape(-1))
    except UserError:
        raise
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, zipfile.BadZipFile...
        raise UserError(f"cannot read array file {path}: {one_line(e)}") from None
    images = _check_images(images, path)
    if labels is not None:
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(
                f"{path}: 'labels' must be ({len(images)},) integers, got {labels.shape} {labels.dtype}"
            )
        if (labels < 0).any():
            raise UserError(f"{path}: 'labels' contains negative class indices")
        if (labels >= LABEL_LIMIT).any():
            raise UserError(f"{path}: 'labels' contains values that are not class indices (>= 2**31)")
        if class_names is not None and (labels >= len(class_names)).any():
            raise UserError(f"{path}: 'labels' has class indices beyond the {len(class_names)} class names")
        labels = labels.astype(np.int64)
    index = random_subset(len(images), spec.size, spec.seed)
    source = _ArraySource(path, images, index, labels, class_names, spec.skip_bad)
    source.class_order = None if labels is None else "array"
    return source
