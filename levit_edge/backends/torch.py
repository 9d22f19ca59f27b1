"""PyTorch eager backend: the baseline every exported model is compared against."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from levit_edge.backends.base import Runner


class TorchRunner(Runner):
    """Runs an eval-mode module under ``torch.inference_mode`` on the CPU (or ``device``)."""

    name = "torch"

    def __init__(self, module: nn.Module, threads: int | None = None, device: str = "cpu") -> None:
        super().__init__()
        self.module = module
        self.threads = threads
        self.device = torch.device(device)
        self._previous_threads: int | None = None

    def activate(self) -> None:
        if self.threads:
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self.module = self.module.to(self.device).eval()

    def _infer(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(images).to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        return out.float().cpu().numpy()

    def deactivate(self) -> None:
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None
