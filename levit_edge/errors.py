"""The exceptions the CLI turns into exit codes; anything else is a bug and shows a traceback.

| exit | exception |
|---|---|
| 1 | :class:`UserError`: bad input, a missing file, an invalid option value |
| 2 | (usage error: unknown option, bad choice; raised by the command-line parser) |
| 3 | :class:`AccuracyGateFailed`: the accuracy gate failed; ``result`` is the finished run |
| 4 | :class:`EngineUnavailable`: no TensorRT engine here; ``result`` is the finished run |
| 5 | :class:`RunMismatch`: a run's files do not match its manifest.json |
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Bad input, a missing file or an invalid option value (exit code 1)."""

    exit_code = 1


class _RunEnded(Exception):
    """A run that finished and was written, but did not end as asked; ``result`` carries it."""

    exit_code = 1

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        # a levit_edge.flows.job.RunResult; build-engine's: a levit_edge.flows.engine.EngineOutcome
        self.result = result


class AccuracyGateFailed(_RunEnded):
    """An accuracy drop above the allowed maximum (exit code 3); artifacts are kept (``result``)."""

    exit_code = 3


class EngineUnavailable(_RunEnded):
    """A TensorRT engine was requested where TensorRT or a GPU is missing (exit code 4).

    ``result`` is the run (everything else produced) when raised by an export.
    """

    exit_code = 4


class RunMismatch(Exception):
    """A run directory's files differ from its manifest.json: changed, missing or extra (exit code 5)."""

    exit_code = 5

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []
