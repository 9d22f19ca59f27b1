"""Helpers shared by the model, fusion, export and CLI tests (plain functions, no fixtures).

timm's default init zeroes every ``attention_biases`` table and leaves BatchNorm trivial (mean 0, var 1,
weight 1 or 0, bias 0), so a freshly created LeViT cannot reveal a wrong BatchNorm fold or a misplaced
attention bias. ``randomize_levit`` gives every one of those tensors seeded, non-trivial values.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from timm.models.levit import ConvNorm, LinearNorm
from torch import nn

from levit_edge.model.load import create_levit


def randomize_levit(model: nn.Module, seed: int) -> nn.Module:
    """Give BatchNorm statistics/affine and attention biases seeded random values (in place); eval mode.

    Values are chosen so every fold matters: conv/linear weights have unit gain (token features vary as
    much as the BatchNorm shifts them), running means and BN biases shift by ~0.3, running variances and
    BN weights scale by 0.5..2, and bias tables are O(1), so the attention pattern depends on the biases
    and the scale. The classifier heads get distinct random weights so head/head_dist averaging is visible.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ConvNorm | LinearNorm):
                # Unit-gain weights: with timm's std 0.02 the BatchNorm shift dominates every token alike,
                # attention then averages near-identical values and a wrong bias or scale goes unseen.
                weight = module.linear.weight
                weight.copy_(torch.randn(weight.shape, generator=gen) / weight[0].numel() ** 0.5)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.3)
        for name, param in model.named_parameters():
            if name.endswith("attention_biases"):
                param.copy_(torch.randn(param.shape, generator=gen))
            elif name.startswith(("head.", "head_dist.")) and ".linear." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    # timm caches the gathered bias per device in eval mode; train() clears that cache.
    model.train()
    return model.eval()


def random_levit(name: str, num_classes: int = 10, img_size: int | None = None, seed: int = 0) -> nn.Module:
    """A timm LeViT built by the production factory, with seeded weights and randomized BN/biases."""
    torch.manual_seed(seed)
    return randomize_levit(create_levit(name, num_classes, img_size), seed)


def random_images(n: int, img_size: int, seed: int) -> torch.Tensor:
    """Seeded normalized-image-like inputs (N, 3, img_size, img_size)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, img_size, img_size, generator=gen)


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Eval-mode forward without autograd."""
    with torch.no_grad():
        return model.eval()(images)


def save_state_dict(model: nn.Module, path: Path) -> Path:
    """Write a plain ``state_dict`` checkpoint (tensors only, cloned off the model)."""
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    return path


def miscalibration_set(path: Path, img_size: int, n: int = 4, scale: float = 1000.0, seed: int = 0) -> Path:
    """A preprocessed calibration array (N,3,H,W) whose values are ``scale`` times larger than any real
    normalized image: every activation range comes out orders of magnitude too wide, so real inputs fall
    into a handful of quantization steps and the INT8 model loses most of its accuracy on any CPU (a
    property of the arithmetic, not of one processor's rounding)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    np.save(path, (rng.standard_normal((n, 3, img_size, img_size)) * scale).astype(np.float32))
    return path


def cli(
    *args: object, cwd: Path | None = None, timeout: int = 600, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess (the process a pipeline starts)."""
    code = "from levit_edge.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": str(columns)},
        timeout=timeout,
    )
