"""Image sources: what to read (DataSpec) and a validated source streamed as preprocessed batches.

The kinds live in ``folders`` (folders, labelled folders, list files) and ``arrays`` (.npy/.npz);
``open_source.open_source`` picks one and validates everything it can up front (paths, list syntax,
array shapes) so that a bad input fails in seconds with one clear line, not an hour into a
calibration run. Images are then decoded lazily, one batch at a time, by a small thread pool (Pillow
releases the GIL while decoding and resizing), in a deterministic order.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from levit_edge.data.decode import one_line
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.errors import UserError

__all__ = ["Batch", "DataSpec", "ImageSource", "random_subset"]


@dataclass(frozen=True)
class DataSpec:
    """Where images come from and which of them to use."""

    path: Path  # folder, labelled folder, .txt list, .npy or .npz
    # base of list-file paths (default: the list file's folder); ignored by other kinds, so one CLI
    # --data-root can serve a calibration list and a validation folder alike
    data_root: Path | None = None
    size: int | None = None  # seeded random subset of this many items (None = all)
    seed: int = 0
    skip_bad: bool = False
    exclude: Path | None = None  # list file of names (basenames) to leave out
    # class index of a class-per-folder set: "natural" (timm's natural_key, as timm's train/validate
    # scripts and ImageFolder reader order them: 1, 2, 10) or "lexical" (torchvision's ImageFolder: 1,
    # 10, 2); a class list file (one class name per line, line i = class i, as timm's class_map) wins
    class_order: str = "natural"
    class_list: Path | None = None


@dataclass(frozen=True, eq=False)
class Batch:
    """Preprocessed images with their labels and names, in source order."""

    images: np.ndarray  # (N,3,H,W) float32
    labels: np.ndarray | None  # (N,) int64, None when unlabelled
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Failure:
    reason: str


class ImageSource(ABC):
    """A validated, ordered set of images; iterate it with ``batches``."""

    kind: str  # "folder", "labelled-folder", "list", "array"
    path: Path
    class_names: tuple[str, ...] | None = None
    # how class indices were assigned: "natural", "lexical", "class-list", "array" (the .npz's own
    # class_names) or "list-file" (labels given per line); None when unlabelled
    class_order: str | None = None
    excluded: int = 0  # items dropped by DataSpec.exclude

    def __init__(self, path: Path, skip_bad: bool) -> None:
        self.path = path
        self._skip_bad = skip_bad
        # (name, reason) of unreadable items left out with skip_bad; refilled by each batches() pass
        self.skipped: list[tuple[str, str]] = []
        self._skipped_at_open: list[tuple[str, str]] = []
        # image mode -> how many files of the last batches() pass were converted from it to RGB
        self.conversions: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    @abstractmethod
    def names(self) -> tuple[str, ...]:
        """Item identifiers in iteration order (relative paths for files)."""

    @property
    @abstractmethod
    def labels(self) -> np.ndarray | None:
        """(N,) int64 class indices in iteration order, or None when unlabelled."""

    @property
    def labelled(self) -> bool:
        """Whether items carry class labels."""
        return self.labels is not None

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def fingerprint(self) -> str:
        """Hex sha256 over the ordered names, labels and image bytes: equal hashes mean equal data."""

    @abstractmethod
    def _loader(self, preprocess: PreprocessConfig) -> Callable[[int], np.ndarray]:
        """A thread-safe function: item index -> (3,H,W) float32; raises on an unreadable item."""

    def batches(
        self, preprocess: PreprocessConfig, batch_size: int = 32, workers: int | None = None
    ) -> Generator[Batch, None, None]:
        """Decode and preprocess lazily, ``batch_size`` items at a time (the last batch may be smaller).

        Unreadable items raise a UserError naming them, or with ``skip_bad`` are recorded in ``skipped``
        and left out (later items fill the batch). ``workers`` threads decode (default: up to 4).
        """
        if batch_size <= 0:
            raise UserError(f"batch size must be positive, got {batch_size}")
        load = self._loader(preprocess)  # validates shapes before the first batch is asked for
        return self._iterate(load, batch_size, workers or min(4, os.cpu_count() or 1))

    def _iterate(
        self, load: Callable[[int], np.ndarray], batch_size: int, workers: int
    ) -> Generator[Batch, None, None]:
        self.skipped[:] = self._skipped_at_open
        self.conversions.clear()
        names, labels = self.names, self.labels

        def attempt(i: int) -> np.ndarray | _Failure:
            # Errors come back as values so that the first bad item *in order* is reported, whatever
            # thread met its bad item first.
            try:
                return load(i)
            except Exception as e:  # Pillow decoders raise many types (OSError, SyntaxError, ...)
                return _Failure(one_line(e))

        chunks = (range(s, min(s + batch_size, len(names))) for s in range(0, len(names), batch_size))
        pending: list[tuple[int, np.ndarray]] = []
        produced = 0
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="levit-edge-decode")
        try:
            # One chunk is decoded ahead while the consumer works on the current batch: at most about
            # three batches of pixels are alive at a time.
            ahead = [(i, pool.submit(attempt, i)) for i in next(chunks, range(0))]
            while ahead:
                current, ahead = ahead, [(i, pool.submit(attempt, i)) for i in next(chunks, range(0))]
                for i, future in current:
                    result = future.result()
                    if isinstance(result, _Failure):
                        if not self._skip_bad:
                            raise UserError(
                                f"cannot read image {self._describe(i)}: {result.reason} "
                                "(skip_bad leaves unreadable images out)"
                            )
                        self.skipped.append((names[i], result.reason))
                    else:
                        pending.append((i, result))
                while len(pending) >= batch_size:
                    produced += batch_size
                    yield self._batch(pending[:batch_size], names, labels)
                    del pending[:batch_size]
        finally:
            # also runs when the consumer stops early: drop the read-ahead instead of finishing it
            pool.shutdown(wait=True, cancel_futures=True)
        if pending:
            produced += len(pending)
            yield self._batch(pending, names, labels)
        if produced == 0:
            raise UserError(f"no readable images in {self.path} ({len(self.skipped)} unreadable, skipped)")

    @staticmethod
    def _batch(
        items: list[tuple[int, np.ndarray]], names: tuple[str, ...], labels: np.ndarray | None
    ) -> Batch:
        index = [i for i, _ in items]
        return Batch(
            images=np.stack([image for _, image in items]),
            labels=None if labels is None else labels[index],
            names=tuple(names[i] for i in index),
        )

    def _describe(self, i: int) -> str:
        return self.names[i]


def random_subset(n: int, size: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of ``range(n)``, sorted (all when ``size`` is None or >= n).

    Random rather than the first ``size`` of a sorted listing, which would hold only a few classes.
    """
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
