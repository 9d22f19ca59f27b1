"""TensorRT: build an engine from a Q/DQ ONNX model and run it (GPU hosts only).

The only module that imports ``tensorrt`` and a CUDA binding (cuda-python or pycuda, needed only to
run engines; building needs neither), and only inside functions: importing it on a machine without
them works, and :func:`tensorrt_unavailable_reason` says what is missing. Python 3.10 syntax and
standard library only at module level: Jetson's JetPack 6 has TensorRT 10.3 for Python 3.10.

Engines are built from strongly typed networks with explicit quantization (Q/DQ nodes in the ONNX
file): no precision builder flags and no INT8 calibrator, the one path that works from TensorRT
10.3 (JetPack 6) through 11.x, where weak typing and calibrators are removed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from levit_edge.backends.base import Runner
from levit_edge.errors import EngineUnavailable, UserError

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "HARDWARE_COMPATIBILITY",
    "MIN_TENSORRT",
    "TRTEXEC_LEVEL_SINCE",
    "TRTEXEC_LOCATIONS",
    "EngineBuildResult",
    "EngineSettings",
    "TensorRTRunner",
    "build_engine",
    "cuda_binding_unavailable_reason",
    "onnx_input_shape",
    "tensorrt_unavailable_reason",
    "trtexec_command",
]

#: Oldest TensorRT this module supports: name-based I/O tensors and ``execute_async_v3``.
MIN_TENSORRT: tuple[int, int] = (10, 0)

#: ``hardware_compatibility`` values -> (``trt.HardwareCompatibilityLevel`` member, trtexec value).
HARDWARE_COMPATIBILITY: dict[str, tuple[str, str]] = {
    "none": ("NONE", "none"),
    "ampere_plus": ("AMPERE_PLUS", "ampere+"),
    "same_compute_capability": ("SAME_COMPUTE_CAPABILITY", "sameComputeCapability"),
}

_MAX_OPTIMIZATION_LEVEL = 5  # builder optimization levels are 0..5 (TensorRT default 3)


@dataclass(frozen=True)
class EngineSettings:
    """What ``build-engine`` builds: input, output, batch range and builder options."""

    onnx_path: Path
    plan_path: Path
    timing_cache_path: Path | None = None
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mb: int = 1024
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    builder_optimization_level: int | None = None
    input_name: str = "images"

    def __post_init__(self) -> None:
        for name in ("onnx_path", "plan_path", "timing_cache_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserError(
                f"batch sizes must satisfy min <= opt <= max, got min={self.min_batch} "
                f"opt={self.opt_batch} max={self.max_batch}"
            )
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            choices = ", ".join(HARDWARE_COMPATIBILITY)
            raise UserError(
                f"hardware_compatibility must be one of {choices}; got {self.hardware_compatibility!r}"
            )
        level = self.builder_optimization_level
        if level is not None and (
            isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= _MAX_OPTIMIZATION_LEVEL
        ):
            raise UserError(f"builder_optimization_level must be 0..{_MAX_OPTIMIZATION_LEVEL}, got {level!r}")
        if not isinstance(self.version_compatible, bool):
            raise UserError(f"version_compatible must be true or false, got {self.version_compatible!r}")
        if not self.input_name:
            raise UserError("input_name must not be empty")
        if self.onnx_path.resolve() == self.plan_path.resolve():
            raise UserError(f"the plan would overwrite the ONNX model: {self.plan_path}")


@dataclass(frozen=True)
class EngineBuildResult:
    """What :func:`build_engine` produced and on what."""

    plan_path: Path
    seconds: float
    tensorrt_version: str
    gpu_name: str
    batch_range: tuple[int, int, int]  # (min, opt, max); all equal for a fixed-batch model
    dynamic_batch: bool
    timing_cache_path: Path | None
    version_compatible: bool
    hardware_compatibility: str
    num_layers: int | None = None
    layer_info_json: str | None = None  # the engine inspector's JSON (detailed verbosity)
    warnings: tuple[str, ...] = field(default_factory=tuple)  # TensorRT's logged warnings


# --- availability ---------------------------------------------------------------------------------
def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def tensorrt_unavailable_reason(runner: bool = True) -> str | None:
    """None when TensorRT imports and a CUDA GPU is usable; otherwise one line saying why not.

    Building needs only TensorRT and the CUDA driver; ``runner=True`` (running an engine) also needs
    a CUDA binding for device memory: cuda-python (``cuda-bindings``) or pycuda.
    """
    try:
        import tensorrt as trt
    except ImportError:
        return "TensorRT Python package is not installed"
    except OSError as exc:  # the package is there but its shared libraries are not
        return f"TensorRT Python package cannot load its libraries: {_first_line(exc)}"
    except Exception as exc:  # a broken install raises whatever its loader raises
        return f"TensorRT Python package cannot be imported: {_first_line(exc)}"
    if not hasattr(trt, "Builder"):  # e.g. only the tensorrt-stubs type stubs (a namespace package)
        return "TensorRT Python package is not installed (only type stubs were found)"
    version = str(getattr(trt, "__version__", "0"))
    if _version_tuple(version)[:2] < MIN_TENSORRT:
        return f"TensorRT {version} is too old; {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} or newer is needed"
    try:
        count = _cuda_device_count()
    except OSError as exc:
        return f"no CUDA driver ({_first_line(exc)})"
    if count == 0:
        return "no CUDA GPU found"
    if runner:
        return cuda_binding_unavailable_reason()
    return None


def cuda_binding_unavailable_reason() -> str | None:
    """None when cuda-python or pycuda imports (what the engine runner needs for device memory)."""
    try:
        _cuda_binding()
    except EngineUnavailable as exc:
        return str(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _require_tensorrt(runner: bool = True) -> None:
    reason = tensorrt_unavailable_reason(runner)
    if reason is not None:
        raise EngineUnavailable(reason)


# --- the CUDA driver, through ctypes (stdlib): a GPU check and its name without pycuda -------------
def _libcuda() -> Any:
    import ctypes

    lib = ctypes.CDLL("libcuda.so.1")  # OSError where no NVIDIA driver is installed
    status = lib.cuInit(0)
    if status != 0:
        raise OSError(f"cuInit failed with CUDA error {status}")
    return lib


def _cuda_device_count() -> int:
    import ctypes

    lib = _libcuda()
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    return int(count.value) if status == 0 else 0


def _gpu_name(device: int = 0) -> str:
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


# --- logging --------------------------------------------------------------------------------------
class _Messages:
    """What the process's one TensorRT logger collected since the last :meth:`clear`."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def clear(self) -> None:
        self.errors.clear()
        self.warnings.clear()


_LOGGER: tuple[trt.ILogger, _Messages] | None = None


def _make_logger() -> tuple[trt.ILogger, list[str], list[str]]:
    """The process's TensorRT logger (collecting errors and warnings, printing nothing), cleared.

    TensorRT keeps one logger per process (the first one given to a builder or runtime), so a second
    logger would never see a message: every build and load shares this one and clears it first.
    """
    global _LOGGER
    import tensorrt as trt

    if _LOGGER is None:
        messages = _Messages()

        class _CollectingLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
                if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                    messages.errors.append(msg.strip())
                elif severity == trt.ILogger.Severity.WARNING:
                    messages.warnings.append(msg.strip())

        _LOGGER = (_CollectingLogger(), messages)
    logger, messages = _LOGGER
    messages.clear()
    return logger, messages.errors, messages.warnings


def _joined(messages: Sequence[str], limit: int = 5) -> str:
    shown = [" ".join(m.split()) for m in messages[-limit:] if m]
    return "; ".join(shown) if shown else "no details logged"


# --- build ----------------------------------------------------------------------------------------
def _network_flags() -> int:
    """Strongly typed network: the creation flag on 10.x; always on (flag ignored) on 11.x."""
    import tensorrt as trt

    if _version_tuple(trt.__version__)[:1] >= (11,):
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise EngineUnavailable(f"TensorRT {trt.__version__} cannot create strongly typed networks")
    return 1 << int(flag)


def _parser_error_text(parser: trt.OnnxParser) -> str:
    parts: list[str] = []
    for index in range(parser.num_errors):
        error: trt.ParserError = parser.get_error(index)  # the stubs leave the return type open
        where = ""
        node_name = str(error.node_name() or "")
        node_op = str(error.node_operator() or "")
        if node_name or node_op:
            where = f"node '{node_name}' ({node_op}): " if node_op else f"node '{node_name}': "
        elif int(error.node()) >= 0:
            where = f"node #{int(error.node())}: "
        parts.append(where + " ".join(str(error.desc()).split()))
    return "; ".join(parts) if parts else "no parser errors reported"


def _dims(shape: trt.Dims) -> list[int]:
    return [int(shape[i]) for i in range(len(shape))]


def _add_batch_profile(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    config: trt.IBuilderConfig,
    settings: EngineSettings,
) -> tuple[tuple[int, int, int], bool]:
    """Add an optimization profile over the batch range when dim 0 is dynamic."""
    import tensorrt as trt

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    names = [tensor.name for tensor in inputs]
    if settings.input_name not in names:
        raise UserError(
            f"{settings.onnx_path} has no input named '{settings.input_name}' (inputs: {', '.join(names)})"
        )
    profile = builder.create_optimization_profile()
    dynamic = False
    for tensor in inputs:
        shape = _dims(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise UserError(f"input '{tensor.name}' has shape {shape}: only the batch dim may be dynamic")
        if shape and shape[0] < 0:
            dynamic = True
            rest = shape[1:]
            profile.set_shape(
                tensor.name,
                trt.Dims([settings.min_batch, *rest]),
                trt.Dims([settings.opt_batch, *rest]),
                trt.Dims([settings.max_batch, *rest]),
            )
    if dynamic and config.add_optimization_profile(profile) < 0:
        raise UserError(f"invalid optimization profile for batch {settings.min_batch}..{settings.max_batch}")
    main = _dims(inputs[names.index(settings.input_name)].shape)
    if main and main[0] >= 0:
        return (main[0], main[0], main[0]), dynamic
    return (settings.min_batch, settings.opt_batch, settings.max_batch), dynamic


def _load_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> bool:
    """Use the timing cache at ``path`` (or a fresh one); False when TensorRT gave none to use."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)  # None for a cache it cannot read
    if cache is not None and config.set_timing_cache(cache, False):
        return True
    # A cache from another GPU or TensorRT version is rejected: start a fresh one.
    fresh = config.create_timing_cache(b"")
    return fresh is not None and bool(config.set_timing_cache(fresh, False))


def _atomic_write(path: Path, data: Any) -> None:
    """Write bytes (or any buffer, e.g. TensorRT's IHostMemory) under a temporary name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(memoryview(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def build_engine(settings: EngineSettings) -> EngineBuildResult:
    """Build and save a TensorRT engine (plan) from a Q/DQ ONNX model; GPU hosts only.

    Raises EngineUnavailable where TensorRT or a GPU is missing, and UserError when TensorRT
    rejects the model (every parser error, with node names, in one line).
    """
    _require_tensorrt(runner=False)
    import tensorrt as trt

    if not settings.onnx_path.is_file():
        raise UserError(f"ONNX model not found: {settings.onnx_path}")
    logger, errors, warnings = _make_logger()
    try:
        builder = trt.Builder(logger)
    except TypeError:  # the bindings raise TypeError when the builder cannot be created (no usable GPU)
        raise EngineUnavailable(f"TensorRT could not create a builder: {_joined(errors)}") from None
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(settings.onnx_path)):
        raise UserError(f"TensorRT cannot parse {settings.onnx_path}: {_parser_error_text(parser)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer info for the report
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if settings.hardware_compatibility != "none":
        member, _ = HARDWARE_COMPATIBILITY[settings.hardware_compatibility]
        level = getattr(trt.HardwareCompatibilityLevel, member, None)
        if level is None:
            raise UserError(
                f"hardware compatibility '{settings.hardware_compatibility}' is not available in "
                f"TensorRT {trt.__version__}"
            )
        config.hardware_compatibility_level = level
    if settings.builder_optimization_level is not None:
        config.builder_optimization_level = settings.builder_optimization_level
    batch_range, dynamic = _add_batch_profile(builder, network, config, settings)
    cached = _load_timing_cache(config, settings.timing_cache_path)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise UserError(f"TensorRT could not build an engine from {settings.onnx_path}: {_joined(errors)}")
    _atomic_write(settings.plan_path, plan)
    timing_cache = config.get_timing_cache() if cached else None
    if settings.timing_cache_path is not None and timing_cache is not None:
        _atomic_write(settings.timing_cache_path, timing_cache.serialize())

    num_layers, layer_info = _inspect(bytes(memoryview(plan)), settings.version_compatible, logger)
    return EngineBuildResult(
        plan_path=settings.plan_path,
        seconds=seconds,
        tensorrt_version=str(trt.__version__),
        gpu_name=_gpu_name(),
        batch_range=batch_range,
        dynamic_batch=dynamic,
        timing_cache_path=settings.timing_cache_path if timing_cache is not None else None,
        version_compatible=settings.version_compatible,
        hardware_compatibility=settings.hardware_compatibility,
        num_layers=num_layers,
        layer_info_json=layer_info,
        warnings=tuple(warnings),
    )


def _inspect(plan: bytes, version_compatible: bool, logger: trt.ILogger) -> tuple[int, str]:
    """Layer count and the engine inspector's JSON for a freshly built plan."""
    import tensorrt as trt

    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True  # the plan embeds the lean runtime
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError("TensorRT built a plan it cannot load back")
    inspector = engine.create_engine_inspector()
    return int(engine.num_layers), str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


# --- device memory: cuda-python or pycuda ------------------------------------------------------------
class _CudaPython:
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


class _PyCuda:
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


def _cuda_binding() -> type[_CudaPython] | type[_PyCuda]:
    """cuda-python where installed, else pycuda; EngineUnavailable naming both when neither imports."""
    problems: list[str] = []
    for module, binding in (("cuda.bindings.runtime", _CudaPython), ("cuda.cudart", _CudaPython)):
        try:
            __import__(module)
        except ImportError as exc:
            problems.append(f"{module}: {_first_line(exc)}")
            continue
        except OSError as exc:
            problems.append(f"{module} cannot load CUDA: {_first_line(exc)}")
            continue
        return binding
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        pass
    except OSError as exc:
        raise EngineUnavailable(f"pycuda cannot load the CUDA driver: {_first_line(exc)}") from None
    else:
        return _PyCuda
    raise EngineUnavailable(
        "neither cuda-python nor pycuda is installed (one is needed to run TensorRT engines: "
        "pip install 'levit-edge[trt-cu12]' or cuda-python)"
    )


# --- run ------------------------------------------------------------------------------------------
class TensorRTRunner(Runner):
    """Run a TensorRT plan on NCHW float32 batches of any size; logits come back as float32.

    Batches larger than the engine's profile maximum run in chunks; a batch smaller than a fixed-batch
    engine's size is padded and the padding's outputs dropped (``Runner.infer``).
    ``version_compatible`` must be true for plans built with ``version_compatible=True``: those
    embed the lean runtime (host code), which a TensorRT runtime refuses to load by default. Only
    load plans you built or received over a trusted channel.
    """

    name = "tensorrt"

    def __init__(
        self,
        plan_path: Path | str,
        *,
        input_name: str = "images",
        version_compatible: bool = False,
        device: int = 0,
    ) -> None:
        super().__init__()
        self.plan_path = Path(plan_path)
        self.input_name = input_name
        self.version_compatible = version_compatible
        self.device = device
        self._cuda: _CudaPython | _PyCuda | None = None
        self._logger: trt.ILogger | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._output_name = ""
        self._input_dtype: np.dtype[Any] = np.dtype(np.float32)
        self._output_dtype: np.dtype[Any] = np.dtype(np.float32)
        self._item_shape: tuple[int, ...] = ()
        self._device_in = 0
        self._device_out = 0
        self._host_in: np.ndarray = np.empty(0, dtype=np.float32)
        self._host_out: np.ndarray = np.empty(0, dtype=np.float32)

    def activate(self) -> None:
        _require_tensorrt()
        if not self.plan_path.is_file():
            raise UserError(f"TensorRT plan not found: {self.plan_path}")
        self._cuda = _cuda_binding()(self.device)
        try:
            self._load(self._cuda)
        except BaseException:
            self.deactivate()
            raise

    def _load(self, cuda: _CudaPython | _PyCuda) -> None:
        import tensorrt as trt

        logger, errors, _ = _make_logger()
        self._logger = logger  # TensorRT keeps a reference; it must outlive the runtime
        runtime = trt.Runtime(logger)
        if self.version_compatible:
            runtime.engine_host_code_allowed = True
        self._runtime = runtime
        engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if engine is None:
            hint = (
                "built for another GPU or TensorRT version?"
                if self.version_compatible
                else "built for another GPU or TensorRT version, or version-compatible "
                "(then load it with version_compatible=True / --version-compatible)?"
            )
            raise UserError(f"cannot load {self.plan_path} ({hint}): {_joined(errors)}")
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeError(f"TensorRT could not create an execution context: {_joined(errors)}")
        self._context = context

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [self.input_name]:
            raise UserError(f"{self.plan_path}: expected one input '{self.input_name}', found {inputs}")
        if len(outputs) != 1:
            raise UserError(f"{self.plan_path}: expected one output (logits), found {outputs}")
        self._output_name = outputs[0]
        self._input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self._output_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._output_name)))

        shape = _dims(engine.get_tensor_shape(self.input_name))
        if shape[0] < 0:
            profile = engine.get_tensor_profile_shape(self.input_name, 0)
            self.batch_range = (int(profile[0][0]), int(profile[2][0]))
        else:
            self.batch_range = (shape[0], shape[0])
        self._item_shape = tuple(shape[1:])

        # Buffers for the largest batch, bound once; smaller batches use their leading part.
        max_batch = self.batch_range[1]
        if not context.set_input_shape(self.input_name, trt.Dims([max_batch, *self._item_shape])):
            raise RuntimeError(f"TensorRT rejected input shape {[max_batch, *self._item_shape]}")
        out_shape = _dims(context.get_tensor_shape(self._output_name))
        self._host_in = cuda.host_empty(int(np.prod([max_batch, *self._item_shape])), self._input_dtype)
        self._host_out = cuda.host_empty(int(np.prod(out_shape)), self._output_dtype)
        self._device_in = cuda.alloc(self._host_in.nbytes)
        self._device_out = cuda.alloc(self._host_out.nbytes)
        context.set_tensor_address(self.input_name, self._device_in)
        context.set_tensor_address(self._output_name, self._device_out)

    def _infer(self, images: np.ndarray) -> np.ndarray:
        import tensorrt as trt

        context, cuda = self._context, self._cuda
        if context is None or cuda is None:
            raise RuntimeError("TensorRTRunner used before activate()")
        if images.ndim == 0 or tuple(images.shape[1:]) != self._item_shape:
            raise UserError(
                f"input batch has shape {list(images.shape)}; the engine takes N x {list(self._item_shape)}"
            )
        batch = int(images.shape[0])  # within batch_range: Runner.infer chunks and pads
        if not context.set_input_shape(self.input_name, trt.Dims([batch, *self._item_shape])):
            raise RuntimeError(f"TensorRT rejected input shape {list(images.shape)}")
        n_in = images.size
        self._host_in[:n_in] = images.astype(self._input_dtype, copy=False).ravel()
        cuda.to_device(self._device_in, self._host_in[:n_in])
        if not context.execute_async_v3(cuda.stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        out_shape = _dims(context.get_tensor_shape(self._output_name))
        n_out = int(np.prod(out_shape))
        cuda.to_host(self._host_out[:n_out], self._device_out)
        cuda.synchronize()
        return np.array(self._host_out[:n_out].reshape(out_shape), dtype=np.float32)

    def deactivate(self) -> None:
        if self._cuda is not None:
            with contextlib.suppress(Exception):
                self._cuda.synchronize()
        # Engine objects go before the memory and context they use.
        self._context = None
        self._engine = None
        self._runtime = None
        self._logger = None
        self._host_in = np.empty(0, dtype=np.float32)
        self._host_out = np.empty(0, dtype=np.float32)
        if self._cuda is not None:
            self._cuda.close()
            self._cuda = None


# --- trtexec --------------------------------------------------------------------------------------
def onnx_input_shape(onnx_path: Path, input_name: str = "images") -> list[int | None]:
    """The declared shape of an ONNX graph input; None for a dynamic (named or missing) dim."""
    import onnx

    if not onnx_path.is_file():
        raise UserError(f"ONNX model not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserError(f"{onnx_path} is not a readable ONNX model: {exc}") from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in initializers}
    if input_name not in inputs:
        raise UserError(f"{onnx_path} has no input named '{input_name}' (inputs: {', '.join(inputs)})")
    tensor_type = inputs[input_name].type.tensor_type
    if not tensor_type.HasField("shape"):
        raise UserError(f"input '{input_name}' of {onnx_path} has no declared shape")
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


#: Where trtexec is installed: JetPack (and NVIDIA's .deb packages) put it outside PATH; NGC TensorRT
#: containers have it on PATH; the pip wheels ship none.
TRTEXEC_LOCATIONS = (
    "/usr/src/tensorrt/bin/trtexec (JetPack / Jetson, TensorRT .deb packages)",
    "on PATH in NVIDIA's TensorRT containers (nvcr.io/nvidia/tensorrt, l4t-tensorrt)",
    "bin/trtexec of a TensorRT tar package; the pip wheels ship no trtexec",
)
#: hardware compatibility levels -> oldest trtexec that accepts them (samples/common/sampleOptions.cpp).
TRTEXEC_LEVEL_SINCE: dict[str, tuple[int, int]] = {
    "none": (10, 0),
    "ampere_plus": (10, 0),
    "same_compute_capability": (10, 9),
}


def _shown(path: Path, base: Path | None) -> str:
    """``path`` relative to ``base`` when inside it (a run folder that is copied elsewhere), else as is."""
    if base is not None:
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            pass
    return str(path)


def trtexec_command(settings: EngineSettings, base: Path | None = None, trtexec: str = "trtexec") -> str:
    """The trtexec command line that builds the same engine as :func:`build_engine`.

    Only flags that trtexec accepts on TensorRT 10.3 (JetPack 6) and 11.x alike, except
    ``same_compute_capability`` (10.9+, :data:`TRTEXEC_LEVEL_SINCE`). Files inside ``base`` are named
    relative to it: run the line from inside that folder. ``--skipInference``: build only, no benchmark.
    """
    shape = onnx_input_shape(settings.onnx_path, settings.input_name)
    if any(d is None for d in shape[1:]):
        raise UserError(f"input '{settings.input_name}' has shape {shape}: only the batch dim may be dynamic")
    args = [
        trtexec,
        f"--onnx={_shown(settings.onnx_path, base)}",
        f"--saveEngine={_shown(settings.plan_path, base)}",
        "--stronglyTyped",  # needed on 10.x; the default (and a no-op) on 11.x
    ]
    if shape and shape[0] is None:
        rest = "x".join(str(d) for d in shape[1:])
        for flag, batch in (
            ("--minShapes", settings.min_batch),
            ("--optShapes", settings.opt_batch),
            ("--maxShapes", settings.max_batch),
        ):
            args.append(f"{flag}={settings.input_name}:{batch}x{rest}")
    args.append(f"--memPoolSize=workspace:{settings.workspace_mb}M")
    if settings.timing_cache_path is not None:
        args.append(f"--timingCacheFile={_shown(settings.timing_cache_path, base)}")
    if settings.version_compatible:
        args.append("--versionCompatible")
    if settings.hardware_compatibility != "none":
        args.append(
            f"--hardwareCompatibilityLevel={HARDWARE_COMPATIBILITY[settings.hardware_compatibility][1]}"
        )
    if settings.builder_optimization_level is not None:
        args.append(f"--builderOptimizationLevel={settings.builder_optimization_level}")
    args += ["--profilingVerbosity=detailed", "--skipInference"]
    return shlex.join(args)
