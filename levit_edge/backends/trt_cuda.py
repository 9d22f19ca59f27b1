"""CUDA for the TensorRT backend: the driver through ctypes (a GPU check and its name, without any
binding) and device memory through cuda-python or pycuda (what running an engine needs).

Python 3.10 syntax and standard library only at module level (JetPack 6); the bindings are imported
inside functions, so importing this module works on a machine without CUDA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from levit_edge.errors import EngineUnavailable


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _libcuda() -> Any:
    import ctypes

    lib = ctypes.CDLL("libcuda.so.1")  # OSError where no NVIDIA driver is installed
    status = lib.cuInit(0)
    if status != 0:
        raise OSError(f"cuInit failed with CUDA error {status}")
    return lib


def cuda_device_count() -> int:
    import ctypes

    lib = _libcuda()
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    return int(count.value) if status == 0 else 0


def gpu_name(device: int = 0) -> str:
    """The GPU's name from the CUDA driver; "unknown GPU" where the driver does not say."""
    import ctypes

    try:
        lib = _libcuda()
        handle = ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(handle), device) != 0:
            return "unknown GPU"
        if lib.cuDeviceGetName(name, len(name), handle) != 0:
            return "unknown GPU"
    except OSError:
        return "unknown GPU"
    return name.value.decode(errors="replace") or "unknown GPU"


class CudaPython:
    """Streams, copies and allocations through cuda-python's runtime API (TensorRT's own samples' choice
    since 10.13); the runtime uses the device's primary context, as TensorRT does."""

    name = "cuda-python"

    def __init__(self, device: int) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self._rt = cudart
        self._check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self._stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: list[Any] = []

    def _check(self, result: Any, call: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA {call} failed: {err}")
        return rest[0] if len(rest) == 1 else None

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def host_empty(self, size: int, dtype: np.dtype[Any]) -> np.ndarray:
        return np.empty(size, dtype)  # pageable: cudaMemcpyAsync stages it, still in stream order

    def alloc(self, nbytes: int) -> int:
        ptr = self._check(self._rt.cudaMalloc(nbytes), "cudaMalloc")
        self._buffers.append(ptr)
        return int(ptr)

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        copy = self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self._stream)
        self._check(copy, "cudaMemcpyAsync")

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        copy = self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self._stream)
        self._check(copy, "cudaMemcpyAsync")

    def synchronize(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for ptr in self._buffers:
            self._rt.cudaFree(ptr)
        self._buffers = []
        self._rt.cudaStreamDestroy(self._stream)


class PyCuda:
    """The same through pycuda, on the device's primary context (shared with the TensorRT runtime)."""

    name = "pycuda"

    def __init__(self, device: int) -> None:
        import pycuda.driver as cuda

        self._cuda = cuda
        cuda.init()
        self._context = cuda.Device(device).retain_primary_context()
        self._context.push()
        self._stream = cuda.Stream()
        self._buffers: list[Any] = []

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def host_empty(self, size: int, dtype: np.dtype[Any]) -> np.ndarray:
        return np.asarray(self._cuda.pagelocked_empty(size, dtype))  # pycuda's async copies need it

    def alloc(self, nbytes: int) -> int:
        buffer = self._cuda.mem_alloc(nbytes)
        self._buffers.append(buffer)
        return int(buffer)

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(ptr, host, self._stream)

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        self._cuda.memcpy_dtoh_async(host, ptr, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        self._stream.synchronize()
        for buffer in self._buffers:
            buffer.free()
        self._buffers = []
        self._context.pop()
        self._context.detach()


def cuda_binding() -> type[CudaPython] | type[PyCuda]:
    """cuda-python where installed, else pycuda; EngineUnavailable naming both when neither imports."""
    problems: list[str] = []
    for module, binding in (("cuda.bindings.runtime", CudaPython), ("cuda.cudart", CudaPython)):
        try:
            __import__(module)
        except ImportError as exc:
            problems.append(f"{module}: {first_line(exc)}")
            continue
        except OSError as exc:
            problems.append(f"{module} cannot load CUDA: {first_line(exc)}")
            continue
        return binding
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        pass
    except OSError as exc:
        raise EngineUnavailable(f"pycuda cannot load the CUDA driver: {first_line(exc)}") from None
    else:
        return PyCuda
    raise EngineUnavailable(
        "neither cuda-python nor pycuda is installed (one is needed to run TensorRT engines: "
        "pip install 'levit-edge[trt-cu12]' or cuda-python)"
    )


def cuda_binding_unavailable_reason() -> str | None:
    """None when cuda-python or pycuda imports (what the engine runner needs for device memory)."""
    try:
        cuda_binding()
    except EngineUnavailable as exc:
        return str(exc)
    return None
