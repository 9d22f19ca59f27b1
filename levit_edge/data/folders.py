"""Image files as sources: folders (class-per-folder labelled or not) and list files.

Folder scans follow symlinks (ImageNet class folders often are) and skip hidden entries; class indices
follow timm's natural order unless a class list or ``lexical`` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from levit_edge.data.decode import one_line, open_regular
from levit_edge.data.list_format import read_list_file
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import DataSpec, ImageSource, random_subset
from levit_edge.errors import UserError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


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
                    raise UserError(f"cannot read image {self._file(i)}: {one_line(e)}") from None
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


def open_folder(spec: DataSpec, path: Path) -> ImageSource:
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


def open_list(spec: DataSpec, path: Path) -> ImageSource:
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
