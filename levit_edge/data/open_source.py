"""Open a data source: the one entry point, choosing folder, list file or array by the path."""

from __future__ import annotations

from pathlib import Path

from levit_edge.data.arrays import open_array
from levit_edge.data.folders import CLASS_ORDERS, open_folder, open_list
from levit_edge.data.sources import DataSpec, ImageSource
from levit_edge.errors import UserError


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
        return open_folder(spec, path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return open_list(spec, path)
    if suffix in (".npy", ".npz"):
        return open_array(spec, path)
    raise UserError(f"unsupported data path {path}: expected a folder, a .txt list, a .npy or a .npz file")
