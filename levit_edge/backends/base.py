"""The one small interface every inference backend implements.

A *loader* builds the backend's object (an ONNX Runtime session, a TensorRT engine, a torch module);
a *runner* is a context manager around it that infers on NCHW float32 batches and times each call.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

import numpy as np


class Runner(ABC):
    """Context-managed inference: ``with runner: logits = runner.infer(batch)``."""

    name: str = "runner"

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self._active = False

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
        """Run one batch and record its wall-clock latency in milliseconds."""
        if not self._active:
            raise RuntimeError(f"{self.name}: infer() called outside 'with runner:'")
        start = time.perf_counter()
        out = self._infer(np.ascontiguousarray(images, dtype=np.float32))
        self.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        return out

    def __enter__(self) -> Self:
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
