"""The engine runner's CUDA side on a real GPU, without TensorRT: the driver check and GPU name through
ctypes (what building uses instead of pycuda) and device memory through cuda-python / pycuda (what the
runner uses). Marked ``gpu``; skipped with the reason where there is no CUDA driver or binding."""

from __future__ import annotations

import numpy as np
import pytest

from levit_edge.backends import trt_cuda, trt_env


def _driver_reason() -> str | None:
    try:
        count = trt_cuda.cuda_device_count()
    except OSError as exc:
        return f"no CUDA driver: {exc}"
    return None if count > 0 else "no CUDA GPU"


DRIVER = _driver_reason()
BINDING = trt_cuda.cuda_binding_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DRIVER is not None, reason=str(DRIVER))]


def test_driver_names_the_gpu_without_pycuda() -> None:
    name = trt_cuda.gpu_name()
    assert name and name != "unknown GPU"
    assert trt_cuda.gpu_name(device=10_000) == "unknown GPU"  # no such device: no exception


def test_build_needs_tensorrt_only() -> None:
    reason = trt_env.tensorrt_unavailable_reason(runner=False)
    assert reason is None or "TensorRT" in reason  # never a CUDA binding or driver complaint here


@pytest.mark.skipif(BINDING is not None, reason=str(BINDING))
@pytest.mark.parametrize("n", [1, 4097, 3 * 224 * 224 * 8])
def test_device_memory_round_trip(n: int) -> None:
    binding = trt_cuda.cuda_binding()(0)
    try:
        assert binding.stream_handle != 0
        data = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        host_in = binding.host_empty(n, np.dtype(np.float32))
        host_in[:] = data
        host_out = binding.host_empty(n, np.dtype(np.float32))
        host_out[:] = np.nan
        ptr = binding.alloc(host_in.nbytes)
        binding.to_device(ptr, host_in)
        binding.to_host(host_out, ptr)
        binding.synchronize()
        np.testing.assert_array_equal(host_out, data)
        # A leading slice, as the runner copies a batch smaller than its buffers.
        part = binding.host_empty(n, np.dtype(np.float32))
        part[:] = 0
        binding.to_host(part[: n // 2 + 1], ptr)
        binding.synchronize()
        np.testing.assert_array_equal(part[: n // 2 + 1], data[: n // 2 + 1])
        assert not part[n // 2 + 1 :].any()
    finally:
        binding.close()
