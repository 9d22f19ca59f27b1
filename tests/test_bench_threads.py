"""``levit-edge bench`` measures what it says: each runner infers at the thread count its row reports.

No timing here: the thread count is observed inside inference (a module that reads
``torch.get_num_threads()`` in its forward) and read back from the runtimes (ONNX Runtime's session
options, OpenVINO's compiled-model property).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
from levit_edge.backends.torch import TorchRunner, compile_unavailable_reason
from levit_edge.bench import BenchSettings, time_variants

CORES = os.cpu_count() or 1
SIZE = (3, 8, 8)
needs_two_cores = pytest.mark.skipif(CORES < 2, reason="one core: every thread count is the same")


class ThreadProbe(nn.Module):
    """Records PyTorch's thread count each time it runs (inside the runner's inference call)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.proj = nn.Linear(SIZE[0], 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.proj(x.mean(dim=(2, 3)))


def _mean_model(path: Path) -> Path:
    """A real ONNX model (ReduceMean over H, W): (N, 3, H, W) -> (N, 3)."""
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph(
        [node],
        "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", SIZE[0]])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def _settings(threads: tuple[int | None, ...]) -> BenchSettings:
    return BenchSettings(batches=(1, 2), threads=threads, warmup=1, rounds=1, per_round=1, input_size=SIZE)


@needs_two_cores
def test_every_runner_infers_at_the_thread_count_of_its_row(tmp_path: Path) -> None:
    # Two PyTorch runners entered together, a one-thread pass first: the order that used to leave PyTorch on
    # one thread for the "all" pass (each runner restored the count it found, exited first-in first-out).
    eager, fused = ThreadProbe(), ThreadProbe()
    onnx_path = _mean_model(tmp_path / "mean.onnx")
    factories = {
        "torch": lambda t: TorchRunner(eager, t),
        "torch.fused": lambda t: TorchRunner(fused, t),
        "fp32": lambda t: OnnxRuntimeRunner(onnx_path, t),
    }
    before = torch.get_num_threads()
    threads = (1, None, 1, 2)
    results = time_variants(factories, _settings(threads))
    assert torch.get_num_threads() == before  # restored once every runner has exited
    assert len(results) == len(threads) * 2 * len(factories)
    for r in results:
        assert r.threads_used == (r.threads or CORES), r
    # Inside inference: each pass's calls (warm-up and timed, both batches) ran at that pass's count.
    calls_per_pass = 2 * 2
    for probe in (eager, fused):
        expected = [t or CORES for t in threads for _ in range(calls_per_pass)]
        assert probe.seen == expected


def test_onnxruntime_runner_reports_its_session_threads(tmp_path: Path) -> None:
    path = _mean_model(tmp_path / "mean.onnx")
    for threads in (1, None):
        with OnnxRuntimeRunner(path, threads) as runner:
            runner.infer(np.zeros((1, *SIZE), np.float32))
            assert runner.threads_in_use() == (threads or CORES)


@pytest.mark.slow
def test_torch_compile_runner_matches_eager_at_its_threads() -> None:
    reason = compile_unavailable_reason()
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    probe = ThreadProbe()
    x = np.random.default_rng(0).standard_normal((2, *SIZE)).astype(np.float32)
    with TorchRunner(probe, 1) as eager:
        expected = eager.infer(x)
    with TorchRunner(probe, 1, compile=True) as compiled:
        got = compiled.infer(x)
        assert compiled.threads_in_use() == 1
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * max(scale, 1.0))


def test_openvino_runner_reports_its_threads(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from levit_edge.backends.openvino import OpenVinoRunner

    path = _mean_model(tmp_path / "mean.onnx")
    x = np.random.default_rng(0).standard_normal((2, *SIZE)).astype(np.float32)
    for threads in (1, None):
        with OpenVinoRunner(path, threads, precision="f32") as runner:
            out = runner.infer(x)
            assert runner.threads_in_use() == (threads or CORES)
        np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


def test_bench_prints_variant_names_in_full_when_not_a_terminal(tmp_path: Path) -> None:
    # A real run directory needs only the FP32 model with levit-edge's preprocessing metadata.
    run = tmp_path / "run"
    run.mkdir()
    model = onnx.load(str(_mean_model(tmp_path / "mean.onnx")))
    pre = {
        "input_size": list(SIZE),
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "crop_mode": "center",
    }
    model.metadata_props.add(key="levit_edge.preprocess", value=json.dumps(pre))
    onnx.save(model, str(run / "model.fp32.onnx"))
    # The INT8 file name is the longest variant; a copy of the FP32 model stands in for it.
    onnx.save(model, str(run / "model.int8.ort.onnx"))
    env = {**os.environ, "COLUMNS": "40"}  # a narrow log: rich would cut names to fit it
    cli = [sys.executable, "-c", "from levit_edge.cli.app import main; main()"]
    options = ["--batches", "1", "--threads", "1", "--rounds", "1", "--repeat", "1", "--warmup", "0"]
    proc = subprocess.run(
        [*cli, "bench", str(run), *options, "--no-save", "--no-torch", "--no-openvino"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any("int8.ort" in line and "0." in line for line in lines), proc.stdout
    assert any(" fp32 " in line for line in lines), proc.stdout
    assert "…" not in proc.stdout, proc.stdout
