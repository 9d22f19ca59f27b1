"""Runners feed any batch size: chunks of the largest batch a model takes, a short fixed batch padded
and the padding dropped (``Runner.infer`` / ``run_in_batches``, shared by the ONNX Runtime and
TensorRT runners). Exercised with ONNX Runtime on real fixed-batch and dynamic-batch models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from levit_edge.backends.base import run_in_batches
from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
from levit_edge.errors import UserError

ITEM = (3, 4, 5)


def _model(path: Path, batch: int | str) -> Path:
    """images (N,3,4,5) -> logits (N,3): per-channel spatial mean plus a per-image sum (so every output
    row depends on its own image only, and a wrong pairing of rows and images shows)."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, *ITEM])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, ITEM[0]])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    all_axes = helper.make_tensor("all_axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["mean"], keepdims=0),
        helper.make_node("ReduceSum", ["images", "all_axes"], ["total"], keepdims=0),
        helper.make_node("Unsqueeze", ["total", "one"], ["total2"]),
        helper.make_node("Add", ["mean", "total2"], ["logits"]),
    ]
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "g", [images], [logits], initializer=[axes, all_axes, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _expected(images: np.ndarray) -> np.ndarray:
    return images.mean(axis=(2, 3)) + images.sum(axis=(1, 2, 3))[:, None]


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *ITEM)).astype(np.float32)


class _Recording(OnnxRuntimeRunner):
    """The real ONNX Runtime runner; it also notes the batch sizes its session was given."""

    def __init__(self, model: Path, batch_range: tuple[int, int] | None = None) -> None:
        super().__init__(model, threads=1)
        self.forced_range = batch_range
        self.fed: list[int] = []

    def activate(self) -> None:
        super().activate()
        if self.forced_range is not None:  # what an engine's optimization profile would set
            self.batch_range = self.forced_range

    def _infer(self, images: np.ndarray) -> np.ndarray:
        self.fed.append(int(images.shape[0]))
        return super()._infer(images)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 10])
def test_fixed_batch_model_takes_any_batch(tmp_path: Path, n: int) -> None:
    model = _model(tmp_path / "fixed4.onnx", 4)
    images = _images(n, seed=n)
    with _Recording(model) as runner:
        assert runner.batch_range == (4, 4)  # read from the model's declared input shape
        out = runner.infer(images)
    assert out.shape == (n, ITEM[0])
    np.testing.assert_allclose(out, _expected(images), rtol=1e-5, atol=1e-4)
    assert set(runner.fed) == {4}  # the session only ever saw its own batch size
    assert len(runner.fed) == -(-n // 4)
    assert len(runner.latencies_ms) == 1  # one timed call per infer(), however many chunks


def test_profile_maximum_splits_large_batches(tmp_path: Path) -> None:
    """A dynamic model under an engine-like range 1..8: 32 images (the default validation batch) run as
    four chunks of 8, 13 as 8 + 5 (no padding: 5 is within the range)."""
    model = _model(tmp_path / "dynamic.onnx", "batch")
    for n, chunks in ((32, [8, 8, 8, 8]), (13, [8, 5]), (2, [2])):
        images = _images(n, seed=n)
        with _Recording(model, (1, 8)) as runner:
            out = runner.infer(images)
        assert runner.fed == chunks
        np.testing.assert_allclose(out, _expected(images), rtol=1e-5, atol=1e-4)


def test_dynamic_model_runs_in_one_call(tmp_path: Path) -> None:
    model = _model(tmp_path / "dynamic.onnx", "batch")
    with _Recording(model) as runner:
        assert runner.batch_range is None
        runner.infer(_images(19))
    assert runner.fed == [19]


def test_padding_repeats_real_images_and_is_dropped() -> None:
    seen: list[np.ndarray] = []

    def infer(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return batch.reshape(batch.shape[0], -1)[:, :2]

    images = _images(6)
    out = run_in_batches(infer, images, (4, 4))
    np.testing.assert_array_equal(out, images.reshape(6, -1)[:, :2])
    assert [b.shape[0] for b in seen] == [4, 4]
    np.testing.assert_array_equal(seen[1][2:], np.repeat(images[5:6], 2, axis=0))


def test_empty_batch_is_a_user_error() -> None:
    with pytest.raises(UserError, match="empty batch"):
        run_in_batches(lambda b: b, np.zeros((0, *ITEM), np.float32), (1, 8))
