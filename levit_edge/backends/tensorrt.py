"""TensorRT: run a built engine (plan) on a GPU host.

With ``trt_build`` (settings, build, trtexec line), ``trt_env`` (availability, logger) and
``trt_cuda`` (driver and device memory), the only modules that import ``tensorrt`` and a CUDA
binding, and only inside functions: importing them on a machine without either works, and
``trt_env.tensorrt_unavailable_reason`` says what is missing. Python 3.10 syntax and standard
library only at module level: Jetson's JetPack 6 has TensorRT 10.3 for Python 3.10.

Engines are built from strongly typed networks with explicit quantization (Q/DQ nodes in the ONNX
file): no precision builder flags and no INT8 calibrator, the one path that works from TensorRT
10.3 (JetPack 6) through 11.x, where weak typing and calibrators are removed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from levit_edge.backends.base import Runner
from levit_edge.backends.trt_cuda import CudaPython, PyCuda, cuda_binding
from levit_edge.backends.trt_env import dims, joined, make_logger, require_tensorrt
from levit_edge.errors import UserError

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = ["TensorRTRunner"]


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
        self._cuda: CudaPython | PyCuda | None = None
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
        require_tensorrt()
        if not self.plan_path.is_file():
            raise UserError(f"TensorRT plan not found: {self.plan_path}")
        self._cuda = cuda_binding()(self.device)
        try:
            self._load(self._cuda)
        except BaseException:
            self.deactivate()
            raise

    def _load(self, cuda: CudaPython | PyCuda) -> None:
        import tensorrt as trt

        logger, errors, _ = make_logger()
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
            raise UserError(f"cannot load {self.plan_path} ({hint}): {joined(errors)}")
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeError(f"TensorRT could not create an execution context: {joined(errors)}")
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

        shape = dims(engine.get_tensor_shape(self.input_name))
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
        out_shape = dims(context.get_tensor_shape(self._output_name))
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
        out_shape = dims(context.get_tensor_shape(self._output_name))
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
