"""Image sources: folders, labelled folders, list files and arrays, streamed as preprocessed batches.

``open_source`` validates everything it can up front (paths, list syntax, array shapes) so that a bad
input fails in seconds with one clear line, not an hour into a calibration run. Images are then decoded
lazily, one batch at a time, by a small thread pool (Pillow releases the GIL while decoding and
resizing), in a deterministic order.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.errors import UserError

__all__ = [
    "IMAGE_EXTENSIONS",
    "Batch",
    "DataSpec",
    "ImageSource",
    "ListEntry",
    "format_list",
    "open_source",
    "parse_list",
    "random_subset",
    "read_list_file",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

# ASCII digits only: str.isdigit() accepts e.g. "²", which int() then rejects.
_LABELLED_LINE = re.compile(r"(?P<path>.*?)\s+(?P<label>-?[0-9]+)")
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL_LIMIT = 2**31  # no classifier has this many classes; also keeps labels far inside int64


# --------------------------------------------------------------------------------------------- list files


@dataclass(frozen=True)
class ListEntry:
    """One list-file item: a normalized relative POSIX path and an optional class index."""

    path: str
    label: int | None = None


def _check_relative(path: str) -> str | None:
    """Why ``path`` cannot be a list entry (None if it can); a purely lexical check, so it is portable."""
    if _CONTROL.search(path):
        return "path contains a control character"
    if "\\" in path:
        return "path contains a backslash (use '/')"
    if path.startswith("/") or _DRIVE.match(path):
        return f"absolute path {path!r} is not allowed (paths are relative to the data root)"
    if ".." in PurePosixPath(path).parts:
        return f"path {path!r} uses '..' (paths may not leave the data root)"
    if PurePosixPath(path).as_posix() == ".":
        return "empty path"
    return None


def parse_list(text: str, origin: str = "<list>") -> list[ListEntry]:
    """Parse list-file text: one ``relative/path [label]`` per line.

    Blank lines and lines starting with ``#`` are ignored. The label is the last whitespace-separated
    token when it is a non-negative integer; labels are all-or-none. Absolute paths, ``..``, backslashes
    and duplicates are refused with a UserError naming ``origin`` and the line number.
    """
    entries: list[ListEntry] = []
    seen: dict[str, int] = {}
    first_line: int | None = None
    first_labelled = False
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{origin} line {lineno}"
        match = _LABELLED_LINE.fullmatch(line)
        label: int | None = None
        if match:
            path, label = match["path"], int(match["label"])
            if label < 0:
                raise UserError(f"{where}: label {label} is negative (expected 'path [class index]')")
            if label >= _LABEL_LIMIT:
                raise UserError(f"{where}: label {label} is not a class index (too large)")
        else:
            path = line
        problem = _check_relative(path)
        if problem:
            raise UserError(f"{where}: {problem}")
        path = PurePosixPath(path).as_posix()
        if first_line is None:
            first_line, first_labelled = lineno, label is not None
        elif (label is not None) != first_labelled:
            if first_labelled:
                problem = f"no label, but line {first_line} has one (labels are all-or-none)"
            else:
                problem = f"a label, but line {first_line} has none (labels are all-or-none)"
            raise UserError(f"{where}: {problem}")
        if path in seen:
            raise UserError(f"{where}: duplicate entry {path!r} (first on line {seen[path]})")
        seen[path] = lineno
        entries.append(ListEntry(path, label))
    return entries


def format_list(entries: Iterable[ListEntry], header: str | None = None) -> str:
    """Serialize entries so that ``parse_list`` gives them back; ValueError for a path that would not."""
    entries = list(entries)
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    labelled = {e.label is not None for e in entries}
    if len(labelled) > 1:
        raise ValueError("labels are all-or-none: some entries have a label and some do not")
    for entry in entries:
        line = entry.path if entry.label is None else f"{entry.path} {entry.label}"
        # Round-trip each line rather than re-deriving the parser's rules (leading '#', a trailing
        # number in an unlabelled name, odd whitespace...).
        try:
            parsed = parse_list(line)
        except UserError as e:
            raise ValueError(f"cannot write list entry {entry.path!r}: {e}") from None
        if parsed != [entry]:
            raise ValueError(f"cannot write list entry {entry.path!r}: it would not read back unchanged")
        lines.append(line)
    return "\n".join(lines) + "\n"


def read_list_file(path: Path) -> list[ListEntry]:
    """Read and parse a list file; UserError if it is missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except FileNotFoundError:
        raise UserError(f"list file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read list file {path}: {e}") from None
    return parse_list(text, origin=f"list file {path}")


# ------------------------------------------------------------------------------------------- public types


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


def open_regular(path: Path) -> io.BufferedReader:
    """Open an image file for reading, refusing anything but a regular file: a FIFO or device named
    ``*.png`` would block the read (and with it SIGINT/SIGTERM) forever. O_NONBLOCK makes the open itself
    return at once for a FIFO; it means nothing for a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) else "special"
            raise OSError(f"not a regular file ({kind})")
        os.set_blocking(fd, True)
        return io.BufferedReader(io.FileIO(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


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
                return _Failure(_one_line(e))

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


# ------------------------------------------------------------------------------------------- file sources


class _FileSource(ImageSource):
    def __init__(
        self,
        kind: str,
        path: Path,
        root: Path,
        names: list[str],
        labels: list[int] | None,
        class_names: tuple[str, ...] | None,
        skip_bad: bool,
        excluded: int,
        skipped_at_open: list[tuple[str, str]],
    ) -> None:
        super().__init__(path, skip_bad)
        self.kind = kind
        self.excluded = excluded
        self._skipped_at_open = skipped_at_open
        self.skipped = list(skipped_at_open)
        self.root = root
        self.class_names = class_names
        self._names = tuple(names)
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def _file(self, i: int) -> Path:
        return self.root / self._names[i]

    def _describe(self, i: int) -> str:
        return str(self._file(i))

    def fingerprint(self) -> str:
        # The kind is left out: the same files listed or found in a folder hash the same.
        h = hashlib.sha256(f"levit-edge files v1 {json.dumps(self.class_names)}\n".encode())
        labels = self._labels
        for i, name in enumerate(self._names):
            try:
                with open_regular(self._file(i)) as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError as e:
                if not self._skip_bad:
                    raise UserError(f"cannot read image {self._file(i)}: {_one_line(e)}") from None
                digest = "unreadable"  # left out of every pass with skip_bad: hashed as such
            label = None if labels is None else int(labels[i])
            # one JSON line per item: unambiguous whatever characters the names contain
            h.update((json.dumps([name, label, digest]) + "\n").encode())
        return h.hexdigest()

    def _loader(self, preprocess: PreprocessConfig) -> Callable[[int], np.ndarray]:
        transform = preprocess.transform()

        def load(i: int) -> np.ndarray:
            with open_regular(self._file(i)) as f, Image.open(f) as image:
                image.load()  # decode fully here, so truncated files fail now and are named
                if image.mode != "RGB":
                    with self._lock:
                        self.conversions[image.mode] = self.conversions.get(image.mode, 0) + 1
                return transform(image)

        return load


def _scan_folder(root: Path) -> list[str]:
    """Relative POSIX paths of the images under ``root``, sorted; hidden files and folders are ignored."""
    found: list[str] = []
    visited: set[str] = set()
    # followlinks: ImageNet class folders are often symlinks; ``visited`` stops symlink loops.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append((rel / name).as_posix())
    return sorted(found)


def _read_exclude(path: Path | None) -> frozenset[str]:
    if path is None:
        return frozenset()
    return frozenset(PurePosixPath(e.path).name for e in read_list_file(Path(path)))


CLASS_ORDERS = ("natural", "lexical")


def _natural_key(name: str) -> list[int | str]:
    from timm.utils.misc import natural_key

    key: list[int | str] = natural_key(name)
    return key


def read_class_list(path: Path) -> tuple[str, ...]:
    """Class names, one per line, line i naming class i (timm's ``class_map`` .txt format)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").split("\n")
    except FileNotFoundError:
        raise UserError(f"class list not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read class list {path}: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    seen: dict[str, int] = {}
    for lineno, name in enumerate(names, start=1):
        if not name:
            raise UserError(f"class list {path} line {lineno}: empty class name")
        if name in seen:
            raise UserError(f"class list {path} line {lineno}: class {name!r} repeats line {seen[name]}")
        seen[name] = lineno
    if not names:
        raise UserError(f"class list {path} names no classes")
    return tuple(names)


def _order_classes(spec: DataSpec, folders: list[str], path: Path) -> tuple[tuple[str, ...], str]:
    if spec.class_list is not None:
        names = read_class_list(Path(spec.class_list))
        unknown = [f for f in folders if f not in set(names)]
        if unknown:
            raise UserError(
                f"{path}: class folder {unknown[0]!r} is not in the class list {spec.class_list} "
                f"({len(unknown)} folder(s) not listed)"
            )
        return names, "class-list"
    if spec.class_order == "lexical":
        return tuple(sorted(folders)), "lexical"
    return tuple(sorted(folders, key=_natural_key)), "natural"


def _open_folder(spec: DataSpec, path: Path) -> ImageSource:
    names = _scan_folder(path)
    if not names:
        raise UserError(f"no images found in {path} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    subdirs = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    depth = [name.count("/") for name in names]
    # ImageNet-val layout: every image exactly one level down, in one of >= 2 class folders.
    labelled = len(subdirs) >= 2 and all(d == 1 for d in depth)
    if len(subdirs) >= 2 and 1 in depth and all(d <= 1 for d in depth) and not labelled:
        # class folders plus a few loose images at the top: labels would silently be dropped
        stray = [n for n, d in zip(names, depth, strict=True) if d == 0]
        raise UserError(
            f"{path} has class folders and {len(stray)} image(s) outside them (e.g. {stray[0]!r}): "
            "move or remove them, or pass a list file"
        )
    labels = None
    class_names: tuple[str, ...] | None = None
    order: str | None = None
    if labelled:
        folders = sorted({n.split("/", 1)[0] for n in names})
        class_names, order = _order_classes(spec, folders, path)
        class_index = {c: i for i, c in enumerate(class_names)}
        labels = [class_index[n.split("/", 1)[0]] for n in names]
    source = _finish_files(
        spec, "labelled-folder" if labelled else "folder", path, path, names, labels, class_names
    )
    source.class_order = order
    return source


def _open_list(spec: DataSpec, path: Path) -> ImageSource:
    entries = read_list_file(path)
    if not entries:
        raise UserError(f"list file {path} lists no images")
    root = Path(spec.data_root) if spec.data_root is not None else path.parent
    if not root.is_dir():
        raise UserError(f"data root is not a folder: {root}")
    names = [e.path for e in entries]
    labels = [e.label for e in entries if e.label is not None] if entries[0].label is not None else None
    class_names = read_class_list(Path(spec.class_list)) if spec.class_list is not None else None
    if class_names is not None and labels is not None and max(labels) >= len(class_names):
        raise UserError(
            f"list file {path}: label {max(labels)} is beyond the {len(class_names)} classes of "
            f"{spec.class_list}"
        )
    source = _finish_files(spec, "list", path, root, names, labels, class_names)
    source.class_order = None if labels is None else ("class-list" if class_names else "list-file")
    return source


def _finish_files(
    spec: DataSpec,
    kind: str,
    path: Path,
    root: Path,
    names: list[str],
    labels: list[int] | None,
    class_names: tuple[str, ...] | None,
) -> ImageSource:
    """Apply exclude, subset and (for lists) the existence check, then build the source."""
    exclude = _read_exclude(spec.exclude)
    keep = [i for i, n in enumerate(names) if PurePosixPath(n).name not in exclude]
    excluded = len(names) - len(keep)
    if not keep:
        raise UserError(f"all {len(names)} images of {path} are excluded by {spec.exclude}")
    keep = [keep[i] for i in random_subset(len(keep), spec.size, spec.seed)]

    skipped: list[tuple[str, str]] = []
    if kind == "list":
        # Listed files are checked now (a stat each, only for the chosen subset) rather than failing
        # mid-run; with skip_bad a missing file counts as unreadable.
        present = []
        for i in keep:
            if (root / names[i]).is_file():
                present.append(i)
            elif spec.skip_bad:
                skipped.append((names[i], "file not found"))
            else:
                raise UserError(f"listed image not found: {root / names[i]} (in {path})")
        if not present:
            raise UserError(f"none of the images listed in {path} exist under {root}")
        keep = present

    return _FileSource(
        kind,
        path,
        root,
        [names[i] for i in keep],
        None if labels is None else [labels[i] for i in keep],
        class_names,
        spec.skip_bad,
        excluded,
        skipped,
    )


# ------------------------------------------------------------------------------------------ array sources


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


def _open_array(spec: DataSpec, path: Path) -> ImageSource:
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
        raise UserError(f"cannot read array file {path}: {_one_line(e)}") from None
    images = _check_images(images, path)
    if labels is not None:
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(
                f"{path}: 'labels' must be ({len(images)},) integers, got {labels.shape} {labels.dtype}"
            )
        if (labels < 0).any():
            raise UserError(f"{path}: 'labels' contains negative class indices")
        if (labels >= _LABEL_LIMIT).any():
            raise UserError(f"{path}: 'labels' contains values that are not class indices (>= 2**31)")
        if class_names is not None and (labels >= len(class_names)).any():
            raise UserError(f"{path}: 'labels' has class indices beyond the {len(class_names)} class names")
        labels = labels.astype(np.int64)
    index = random_subset(len(images), spec.size, spec.seed)
    source = _ArraySource(path, images, index, labels, class_names, spec.skip_bad)
    source.class_order = None if labels is None else "array"
    return source


# -------------------------------------------------------------------------------------------- entry point


def open_source(spec: DataSpec) -> ImageSource:
    """Open and validate a data source (UserError with one clear line for any bad input)."""
    path = Path(spec.path)
    if spec.size is not None and (isinstance(spec.size, bool) or spec.size <= 0):
        raise UserError(f"subset size must be a positive number of images, got {spec.size}")
    if spec.seed < 0:
        raise UserError(f"seed must be >= 0, got {spec.seed}")
    if spec.class_order not in CLASS_ORDERS:
        raise UserError(f"--class-order must be one of {', '.join(CLASS_ORDERS)}, got '{spec.class_order}'")
    if not path.exists():
        raise UserError(f"data path not found: {path}")
    if path.is_dir():
        return _open_folder(spec, path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _open_list(spec, path)
    if suffix in (".npy", ".npz"):
        return _open_array(spec, path)
    raise UserError(f"unsupported data path {path}: expected a folder, a .txt list, a .npy or a .npz file")
