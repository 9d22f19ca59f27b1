"""The one small interface every inference backend implements.

A *loader* builds the backend's object (an ONNX Runtime session, a TensorRT engine, a torch module);
a *runner* is a context manager around it that infers on NCHW float32 batches and times each call.

A runner whose model takes only some batch sizes (a fixed-batch ONNX model, an engine's optimization
profile) sets ``batch_range``; :meth:`Runner.infer` then feeds any batch size through
:func:`run_in_batches`: split into chunks of the largest size taken, a short chunk padded up to the
smallest size and the padding's outputs dropped.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import numpy as np

from levit_edge.errors import UserError

_R = TypeVar("_R", bound="Runner")  # typing.Self is 3.11+; the board (JetPack 6) has Python 3.10


class Runner(ABC):
    """Context-managed inference: ``with runner: logits = runner.infer(batch)``."""

    name: str = "runner"

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self._active = False
        #: (smallest, largest) batch the model takes, set by ``activate``; None: any batch size.
        self.batch_range: tuple[int, int] | None = None

    @abstractmethod
    def activate(self) -> None:
        """Acquire the session, engine or device memory."""

    @abstractmethod
    def _infer(self, images: np.ndarray) -> np.ndarray:
        """Run one batch (N,3,H,W float32) and return logits (N,C float32)."""

    def deactivate(self) -> None:  # noqa: B027  (optional hook: most runners hold nothing to release)
        """Release what ``activate`` acquired."""

    def threads_in_use(self) -> int | None:
        """The CPU threads this runner infers with, read back from the backend itself (None: not a CPU
        runner, or not known before the first call)."""
        return None

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Run one batch of any size and record its wall-clock latency in milliseconds."""
        if not self._active:
            raise RuntimeError(f"{self.name}: infer() called outside 'with runner:'")
        batch = np.ascontiguousarray(images, dtype=np.float32)
        start = time.perf_counter()
        out = run_in_batches(self._infer, batch, self.batch_range)
        self.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        return out

    def __enter__(self: _R) -> _R:
        self.activate()
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        self.deactivate()


def run_in_batches(
    infer: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    batch_range: tuple[int, int] | None,
) -> np.ndarray:
    """``infer`` over ``images`` in chunks the model takes: at most ``batch_range[1]`` images each, a
    short last chunk padded up to ``batch_range[0]`` by repeating its last image (real values, so the
    padding cannot produce NaNs); the padding's outputs are dropped. None: one call, as given."""
    if batch_range is None:
        return infer(images)
    low, high = batch_range
    if not 1 <= low <= high:
        raise ValueError(f"invalid batch range {batch_range}")
    if images.ndim < 1 or images.shape[0] < 1:
        raise UserError(f"cannot run an empty batch (shape {list(images.shape)})")
    outputs: list[np.ndarray] = []
    for start in range(0, images.shape[0], high):
        chunk = images[start : start + high]
        n = chunk.shape[0]
        if n < low:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], low - n, axis=0)])
        out = infer(np.ascontiguousarray(chunk))
        if out.shape[0] != chunk.shape[0]:
            raise RuntimeError(f"model returned {out.shape[0]} rows for a batch of {chunk.shape[0]}")
        outputs.append(out[:n])
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
