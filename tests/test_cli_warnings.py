"""Warnings that dependencies print (torch, timm, Pillow) never join a failed command's one error line."""

from __future__ import annotations

import warnings

import pytest

from levit_edge.cli import app
from levit_edge.errors import UserError


def _torch_warning() -> None:
    """A real torch UserWarning: a tensor over a read-only numpy buffer."""
    import numpy as np
    import torch

    torch.from_numpy(np.frombuffer(b"\0" * 16, dtype=np.float32))


def test_warnings_of_a_command_that_fails_are_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    warnings.resetwarnings()  # every warning reaches the handler (pytest's filters would record them)
    with pytest.raises(UserError), app._warnings_held() as held:
        _torch_warning()
        assert any("not writable" in str(w.message) for w in held)  # the real warning was raised ...
        raise UserError("bad input")
    assert capfd.readouterr().err == ""  # ... and not printed beside the error line
    with app._warnings_held():
        warnings.warn("kept for a command that succeeds", UserWarning, stacklevel=1)
    assert "kept for a command that succeeds" in capfd.readouterr().err
