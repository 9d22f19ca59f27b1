"""Calibration on a graph small enough to compute by hand: every image of every batch counts.

A one-convolution ONNX model and a preprocessed ``.npy`` set whose extreme values sit in the last rows of
each batch: the MinMax ranges ONNX Runtime's calibrator reports through ``calibrate`` must equal numpy's
min/max of the input and of the convolution's output computed here, and ``count`` the number of images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from levit_edge.data.open_source import open_source
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import DataSpec
from levit_edge.errors import UserError
from levit_edge.quant.calibrate import Calibration, calibrate
from levit_edge.settings import QuantSettings

SIZE = 8
N = 10  # with batches of 4: 4 + 4 + 2, the last batch short


def conv_model(path: Path, weight: np.ndarray) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["features"], name="conv", pads=[0, 0, 0, 0])],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def case(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    images = rng.uniform(-1, 1, (N, 3, SIZE, SIZE)).astype(np.float32)
    # the extremes of the whole set are in the second half of each batch of 4, and in the short last one
    images[3, 0, 0, 0], images[6, 2, 5, 5], images[9, 1, 7, 7] = 9.0, -7.0, 11.0
    weight = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    np.save(tmp_path / "calib.npy", images)
    return conv_model(tmp_path / "m.onnx", weight), tmp_path / "calib.npy", images, weight


def preprocess() -> PreprocessConfig:
    return PreprocessConfig((3, SIZE, SIZE), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1.0, "bilinear")


def test_minmax_ranges_and_count_cover_every_image(
    case: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    model, data, images, weight = case
    cal = calibrate(model, open_source(DataSpec(data)), preprocess(), QuantSettings(method="minmax"), 4)
    assert cal.count == N and cal.skipped == 0
    features = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0].astype(np.float64), images.astype(np.float64))
    assert cal.ranges["images"] == (float(images.min()), float(images.max())) == (-7.0, 11.0)
    lo, hi = cal.ranges["features"]
    assert lo == pytest.approx(features.min(), rel=1e-6) and hi == pytest.approx(features.max(), rel=1e-6)
    # the file round-trips exactly: quantization rebuilt from it sees the same ranges
    cal.save(tmp_path / "calibration.json")
    assert Calibration.load(tmp_path / "calibration.json") == cal


def test_batch_size_does_not_change_the_ranges(case: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    model, data, _, _ = case
    settings = QuantSettings(method="minmax")
    by_batch = {
        b: calibrate(model, open_source(DataSpec(data)), preprocess(), settings, b) for b in (1, 3, 16)
    }
    assert len({c.count for c in by_batch.values()}) == 1
    assert by_batch[1].ranges["images"] == by_batch[3].ranges["images"] == by_batch[16].ranges["images"]


def test_calibration_file_round_trips_every_field(tmp_path: Path) -> None:
    cal = Calibration(
        method="percentile",
        percentile=99.99,
        count=7,
        data_hash="d" * 64,
        model_sha256="m" * 64,
        ranges={"a": (-1.5, 2.25), "b": (0.0, 3.0)},
        class_names=("cat", "dog"),
        skipped=2,
    )
    cal.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json") == cal
    assert json.loads((tmp_path / "c.json").read_text())["class_names"] == ["cat", "dog"]


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"schema_version": 99}, "unsupported schema_version 99"),
        ({"method": "magic"}, "unknown calibration method 'magic'"),
        ({"count": "many"}, "malformed: ValueError"),
        ({"ranges": None}, "malformed: AttributeError"),
    ],
)
def test_malformed_calibration_file_is_a_user_error(
    tmp_path: Path, edit: dict[str, object], fragment: str
) -> None:
    good = Calibration("minmax", None, 1, "d", "m", {"a": (0.0, 1.0)}).to_dict()
    (tmp_path / "c.json").write_text(json.dumps({**good, **edit}))
    with pytest.raises(UserError, match=re.escape(fragment)) as caught:
        Calibration.load(tmp_path / "c.json")
    assert str(tmp_path / "c.json") in str(caught.value)


def test_percentile_ranges_are_inside_minmax_and_recorded(
    case: tuple[Path, Path, np.ndarray, np.ndarray],
) -> None:
    model, data, _, _ = case
    minmax = calibrate(model, open_source(DataSpec(data)), preprocess(), QuantSettings(method="minmax"), 4)
    settings = QuantSettings(method="percentile", percentile=90.0)
    pct = calibrate(model, open_source(DataSpec(data)), preprocess(), settings, 4)
    assert (pct.method, pct.percentile, minmax.percentile) == ("percentile", 90.0, None)
    lo, hi = pct.ranges["images"]
    # the planted extremes (-7, 9, 11) are outliers: a 90th-percentile range leaves them out, on both ends
    assert -7.0 < lo < 0 < hi < 9.0, (lo, hi)


def test_progress_counts_every_image_and_class_names_are_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (5, 3, SIZE, SIZE)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", images=images, labels=np.array([0, 1, 0, 1, 1]), class_names=["a", "b"])
    model = conv_model(tmp_path / "m.onnx", rng.standard_normal((2, 3, 1, 1)).astype(np.float32))
    seen: list[tuple[int, int]] = []
    cal = calibrate(
        model,
        open_source(DataSpec(tmp_path / "calib.npz")),
        preprocess(),
        QuantSettings(),
        2,
        lambda done, total: seen.append((done, total)),
    )
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert cal.class_names == ("a", "b") and cal.count == 5
