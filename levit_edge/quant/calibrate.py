"""Calibration, computed once: per-tensor activation ranges saved as ``calibration.json``.

ONNX Runtime's calibrators run the FP32 model over the calibration set; the resulting ranges are stored
with the method, the data's hash and the model's hash, and every quantized target (the ONNX Runtime and
the TensorRT profile) is built from this file without running the model again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization.calibrate import (
    CalibrationDataReader,
    CalibrationMethod,
    TensorData,
    TensorsData,
    create_calibrator,
)

from levit_edge.backends import onnxruntime as _backend  # noqa: F401  (its import turns ORT telemetry off)
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import ImageSource
from levit_edge.errors import UserError
from levit_edge.export.onnx import INPUT_NAME
from levit_edge.io import WRITE_ERRNOS, read_json, sha256_file, write_error, write_json
from levit_edge.settings import QuantSettings

CALIBRATION_FILE = "calibration.json"
SCHEMA_VERSION = 1
_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Calibration:
    """Activation ranges of one FP32 model on one calibration set."""

    method: str
    percentile: float | None
    count: int
    data_hash: str
    model_sha256: str
    ranges: dict[str, tuple[float, float]]
    class_names: tuple[str, ...] | None = None
    skipped: int = 0

    def tensors_data(self) -> TensorsData:
        """The ranges in ONNX Runtime's own structure, ready for its quantizer."""
        data = {
            name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
            for name, (lo, hi) in self.ranges.items()
        }
        return TensorsData(_METHODS[self.method], data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "method": self.method,
            "percentile": self.percentile,
            "count": self.count,
            "data_hash": self.data_hash,
            "model_sha256": self.model_sha256,
            "skipped": self.skipped,
            "class_names": list(self.class_names) if self.class_names else None,
            "ranges": {k: [v[0], v[1]] for k, v in sorted(self.ranges.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "calibration") -> Calibration:
        try:
            if d["schema_version"] != SCHEMA_VERSION:
                raise UserError(f"{where}: unsupported schema_version {d['schema_version']}")
            if d["method"] not in _METHODS:
                raise UserError(f"{where}: unknown calibration method '{d['method']}'")
            ranges = {str(k): (float(v[0]), float(v[1])) for k, v in d["ranges"].items()}
            names = d.get("class_names")
            return cls(
                method=str(d["method"]),
                percentile=d.get("percentile"),
                count=int(d["count"]),
                data_hash=str(d["data_hash"]),
                model_sha256=str(d["model_sha256"]),
                ranges=ranges,
                class_names=tuple(names) if names else None,
                skipped=int(d.get("skipped", 0)),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise UserError(f"{where} is malformed: {type(exc).__name__} {exc}") from None

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Calibration:
        return cls.from_dict(read_json(path), str(path))


class _BatchReader(CalibrationDataReader):
    """Feeds exactly one batch per ``collect_data`` call, so memory stays bounded by one batch."""

    def __init__(self, images: np.ndarray) -> None:
        self._pending: dict[str, np.ndarray] | None = {INPUT_NAME: images}

    def get_next(self) -> dict[str, np.ndarray] | None:
        item, self._pending = self._pending, None
        return item


def calibrate(
    model_path: Path,
    source: ImageSource,
    preprocess: PreprocessConfig,
    settings: QuantSettings,
    batch_size: int = 32,
    progress: Progress | None = None,
    fixed_batch: int | None = None,
) -> Calibration:
    """Run ONNX Runtime's calibrator of ``settings.method`` over ``source`` and return the ranges.

    ``fixed_batch``: the model's input has that fixed batch size; batches are cut to it and a short last
    batch is filled up by repeating its own images (which leaves min/max ranges unchanged).
    """
    extra: dict[str, Any] = {}
    if settings.method == "percentile":
        extra["percentile"] = settings.percentile
        extra["symmetric"] = False  # keep signed ranges: the asymmetric ORT profile needs both ends
    with tempfile.TemporaryDirectory(prefix="levit-edge-calib-") as tmp:
        calibrator = _create_calibrator(model_path, Path(tmp), settings, extra)
        done = 0
        total = len(source)
        for batch in _batches(source, preprocess, fixed_batch or batch_size):
            calibrator.collect_data(_BatchReader(pad_batch(batch, fixed_batch)))
            done += batch.shape[0]
            if progress:
                progress(done, total)
        if done == 0:
            raise UserError("the calibration set yielded no readable images")
        computed = calibrator.compute_data()
        del calibrator
    ranges = {name: _range(td) for name, td in computed.items()}
    bad = sorted(name for name, (lo, hi) in ranges.items() if not (np.isfinite(lo) and np.isfinite(hi)))
    if bad:
        # ORT's quantizer would fail on them ("scale issue") and calibration.json could not hold them
        raise UserError(
            f"calibration gave non-finite ranges for {len(bad)} tensor(s) (first: {bad[0]}): the FP32 model "
            "overflows on the calibration images (extreme pixel values?)"
        )
    return Calibration(
        method=settings.method,
        percentile=settings.percentile if settings.method == "percentile" else None,
        count=done,
        data_hash=source.fingerprint(),
        model_sha256=sha256_file(model_path),
        ranges=ranges,
        class_names=source.class_names,
        skipped=len(source.skipped),
    )


@contextlib.contextmanager
def ort_scratch(model_path: Path, tmp: Path, produces: Path | None = None) -> Iterator[Path]:
    """A link of the model in ``tmp`` for ORT's quantization tools, with their write failures named.

    ORT writes a shape-inferred copy (``NAME-inferred.onnx``) beside the model it is given, from C++, and
    does not check that write: on a full disk the copy comes out truncated (a protobuf DecodeError) or
    missing. That becomes one line naming the file, and the copy never lands in the run folder itself.
    A write failure of ORT's own output (no file name in it) names ``produces``.
    """
    from google.protobuf.message import DecodeError

    local = tmp / model_path.name
    try:
        os.link(model_path, local)
    except OSError:
        shutil.copyfile(model_path, local)
    inferred = tmp / f"{model_path.stem}-inferred{model_path.suffix}"
    try:
        yield local
    except (DecodeError, FileNotFoundError) as exc:
        if isinstance(exc, FileNotFoundError) and inferred.exists():
            raise
        state = "missing" if not inferred.exists() else f"truncated at {inferred.stat().st_size} bytes"
        raise UserError(
            f"cannot write {inferred.name} (ONNX Runtime's shape-inferred copy of {model_path.name}) in "
            f"{tmp}: it came out {state}; is the disk full or a file-size limit set?"
        ) from None
    except OSError as exc:
        if produces is None or exc.filename or exc.errno not in WRITE_ERRNOS:
            raise
        raise write_error(produces, exc) from None


def _create_calibrator(model_path: Path, tmp: Path, settings: QuantSettings, extra: dict[str, Any]) -> Any:
    # ORT saves the augmented model (more outputs, so larger than the model) with no file name in a
    # write error: name it
    with ort_scratch(model_path, tmp, tmp / "augmented.onnx") as local:
        return create_calibrator(
            local,
            None,  # every float tensor: either target may quantize any of them
            augmented_model_path=str(tmp / "augmented.onnx"),
            calibrate_method=_METHODS[settings.method],
            extra_options=extra,
        )


def _batches(source: ImageSource, preprocess: PreprocessConfig, batch_size: int) -> Iterator[np.ndarray]:
    for batch in source.batches(preprocess, batch_size):
        yield np.ascontiguousarray(batch.images, dtype=np.float32)


def pad_batch(images: np.ndarray, size: int | None) -> np.ndarray:
    """``images`` filled up to ``size`` rows by repeating its own rows (unchanged when no size is set)."""
    if size is None or len(images) >= size:
        return images
    return np.ascontiguousarray(images[np.arange(size) % len(images)])


def _range(td: TensorData | tuple[Any, ...]) -> tuple[float, float]:
    lo, hi = td.range_value if isinstance(td, TensorData) else (td[0], td[1])
    return float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])


def describe(cal: Calibration) -> dict[str, Any]:
    """The report's summary of a calibration."""
    return {
        "method": cal.method,
        "percentile": cal.percentile,
        "count": cal.count,
        "data_hash": cal.data_hash,
        "tensors": len(cal.ranges),
        "skipped": cal.skipped,
    }


__all__ = ["CALIBRATION_FILE", "Calibration", "calibrate", "describe", "json", "pad_batch"]
