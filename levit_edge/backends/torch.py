"""PyTorch backend: eager (the baseline every exported model is compared against) and ``torch.compile``."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from levit_edge.backends.base import Runner


def compile_unavailable_reason() -> str | None:
    """Why ``torch.compile`` cannot run here (None: it can). Inductor's CPU code needs a C++ compiler."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if importlib.util.find_spec("torch._dynamo") is None:  # pragma: no cover - depends on the torch build
        return "this torch build has no torch._dynamo"
    cxx = os.environ.get("CXX") or "c++"
    if shutil.which(cxx) is None and shutil.which("g++") is None:
        return "torch.compile's inductor needs a C++ compiler (none on PATH)"
    return None


class TorchRunner(Runner):
    """Runs an eval-mode module under ``torch.inference_mode`` on the CPU (or ``device``).

    ``threads`` (None = every core, as ONNX Runtime's runner) is set on enter and the previous count
    restored on exit: PyTorch's thread count is process-wide, so runners must be exited in the reverse
    order of entering (a ``contextlib.ExitStack``) for the count to come back right.
    """

    name = "torch"

    def __init__(
        self, module: nn.Module, threads: int | None = None, device: str = "cpu", compile: bool = False
    ) -> None:
        super().__init__()
        self.module = module
        self.threads = threads
        self.device = torch.device(device)
        self.compile = compile
        self._previous_threads: int | None = None
        self._observed_threads: int | None = None
        self._call: Callable[[torch.Tensor], torch.Tensor] | None = None

    def activate(self) -> None:
        self._previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads or (os.cpu_count() or 1))
        self.module = self.module.to(self.device).eval()
        if self.compile:
            # Inductor fixes its CPU kernels' parallelism to the thread count at compile time: drop graphs
            # compiled at another count (seen: batch 16 compiled on one thread ran 2.8x slower at 16).
            torch._dynamo.reset()
        # dynamic=False: one specialised graph per batch size, as a deployment would compile it.
        self._call = torch.compile(self.module, dynamic=False) if self.compile else self.module

    def _infer(self, images: np.ndarray) -> np.ndarray:
        assert self._call is not None
        with torch.inference_mode():
            self._observed_threads = torch.get_num_threads()  # what this call really ran with
            out = self._call(torch.from_numpy(images).to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        return out.float().cpu().numpy()

    def threads_in_use(self) -> int | None:
        return self._observed_threads if self.device.type == "cpu" else None

    def deactivate(self) -> None:
        self._call = None
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None
