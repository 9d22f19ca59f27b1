"""The exceptions the CLI turns into exit codes; anything else is a bug and shows a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing file or an invalid option value (exit code 1)."""

    exit_code = 1


class AccuracyGateFailed(Exception):
    """An accuracy drop above the allowed maximum (exit code 3); artifacts are kept."""

    exit_code = 3


class EngineUnavailable(Exception):
    """A TensorRT engine was requested where TensorRT or a GPU is missing (exit code 4)."""

    exit_code = 4
