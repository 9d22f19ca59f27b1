"""Whether TensorRT can build or run here, and the process's one TensorRT logger.

``tensorrt`` is imported only inside functions: importing this module on a machine without it works,
and :func:`tensorrt_unavailable_reason` says what is missing. Python 3.10 syntax and standard library
only at module level (JetPack 6 has TensorRT 10.3 for Python 3.10).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from levit_edge.backends.trt_cuda import cuda_binding_unavailable_reason, cuda_device_count, first_line
from levit_edge.errors import EngineUnavailable

if TYPE_CHECKING:
    import tensorrt as trt

#: Oldest TensorRT this module supports: name-based I/O tensors and ``execute_async_v3``.
MIN_TENSORRT: tuple[int, int] = (10, 0)


def version_tuple(text: str) -> tuple[int, ...]:
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
        return f"TensorRT Python package cannot load its libraries: {first_line(exc)}"
    except Exception as exc:  # a broken install raises whatever its loader raises
        return f"TensorRT Python package cannot be imported: {first_line(exc)}"
    if not hasattr(trt, "Builder"):  # e.g. only the tensorrt-stubs type stubs (a namespace package)
        return "TensorRT Python package is not installed (only type stubs were found)"
    version = str(getattr(trt, "__version__", "0"))
    if version_tuple(version)[:2] < MIN_TENSORRT:
        return f"TensorRT {version} is too old; {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} or newer is needed"
    try:
        count = cuda_device_count()
    except OSError as exc:
        return f"no CUDA driver ({first_line(exc)})"
    if count == 0:
        return "no CUDA GPU found"
    if runner:
        return cuda_binding_unavailable_reason()
    return None


def require_tensorrt(runner: bool = True) -> None:
    reason = tensorrt_unavailable_reason(runner)
    if reason is not None:
        raise EngineUnavailable(reason)


class _Messages:
    """What the process's one TensorRT logger collected since the last :meth:`clear`."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def clear(self) -> None:
        self.errors.clear()
        self.warnings.clear()


_LOGGER: tuple[trt.ILogger, _Messages] | None = None


def make_logger() -> tuple[trt.ILogger, list[str], list[str]]:
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


def joined(messages: Sequence[str], limit: int = 5) -> str:
    shown = [" ".join(m.split()) for m in messages[-limit:] if m]
    return "; ".join(shown) if shown else "no details logged"


def dims(shape: trt.Dims) -> list[int]:
    return [int(shape[i]) for i in range(len(shape))]
