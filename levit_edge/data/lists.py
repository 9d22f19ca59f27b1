"""Calibration-list tooling: pick a reproducible, class-balanced calibration subset and write it as a list.

Static INT8 calibration only sees the activation ranges of the images it is given; a subset drawn from
few classes (e.g. the first N files of a sorted ImageNet folder, which is ~N/50 classes) under-estimates
the ranges of the others. Spreading the images evenly over the classes avoids that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from levit_edge.data.list_format import ListEntry, format_list
from levit_edge.data.open_source import open_source
from levit_edge.data.sources import DataSpec, random_subset
from levit_edge.errors import UserError
from levit_edge.io import write_atomic

__all__ = ["select_balanced", "write_calibration_list"]


def select_balanced(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n, len(labels))`` items spread as evenly as possible over the classes.

    Every class gets ``n // classes`` items (all of its items if it has fewer, their share going to the
    larger classes); the remainder goes to seeded randomly chosen classes, and the items within a class
    are drawn at random with the same seed.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    remaining = min(n, len(labels))
    # Water-filling: each round either gives every class that still has items an equal share, or
    # hands out the last few (< one per open class) at random and stops.
    while remaining > 0:
        open_classes = np.flatnonzero(quota < counts)
        share = remaining // len(open_classes)
        if share == 0:
            quota[rng.choice(open_classes, size=remaining, replace=False)] += 1
            break
        add = np.minimum(share, counts[open_classes] - quota[open_classes])
        quota[open_classes] += add
        remaining -= int(add.sum())
    chosen = [
        rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota, strict=True) if q
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def write_calibration_list(
    source_dir: Path, out: Path, n: int, seed: int, per_class_balanced: bool = True
) -> int:
    """Write a list file of ``n`` images of ``source_dir`` (all if it has fewer); return how many.

    A labelled folder (class subfolders) gives a class-balanced subset with labels (the class folder's
    index), unless ``per_class_balanced`` is False; an unlabelled folder gives a seeded random subset.
    Paths are relative to ``source_dir``: open the list with ``DataSpec(out, data_root=source_dir)``.
    """
    source_dir, out = Path(source_dir), Path(out)
    if isinstance(n, bool) or n <= 0:
        raise UserError(f"number of calibration images must be positive, got {n}")
    if not source_dir.is_dir():
        raise UserError(f"calibration source is not a folder: {source_dir}")
    source = open_source(DataSpec(source_dir))
    names, labels = source.names, source.labels
    if labels is not None and per_class_balanced:
        index = select_balanced(labels, n, seed)
        how = f"class-balanced over {len(source.class_names or ())} class folders"
    else:
        index = random_subset(len(names), n, seed)
        how = "seeded random subset"
    entries = [ListEntry(names[i], None if labels is None else int(labels[i])) for i in index]
    header = (
        f"levit-edge calibration list: {len(entries)} of {len(names)} images of {source_dir.name}/ "
        f"({how}, seed {seed})\n"
        "paths are relative to that folder: pass it as data_root"
        + (
            "\nlabels index the class folders in timm's natural order (1, 2, 10)"
            if labels is not None
            else ""
        )
    )
    try:
        text = format_list(entries, header=header)
    except ValueError as e:
        raise UserError(f"{source_dir}: {e}") from None
    write_atomic(out, text)
    return len(entries)
