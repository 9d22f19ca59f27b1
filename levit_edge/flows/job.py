"""What an export run is given (ExportJob), what a run returns (RunResult), and the stage timer."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from levit_edge.artifacts import Status
from levit_edge.data.sources import DataSpec
from levit_edge.errors import UserError
from levit_edge.export.onnx import ExportSettings
from levit_edge.model.load import ModelSpec
from levit_edge.paths import check_lengths, job_paths
from levit_edge.pausepoint import pause_point
from levit_edge.settings import FallbackSettings, GateSettings, QuantSettings, RuntimeSettings, Targets
from levit_edge.validate.gate import GateResult


class Hooks(Protocol):
    """Where a flow reports progress; the CLI implements it with rich, tests may pass None."""

    def stage(self, name: str) -> None: ...

    def progress(self, task: str, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class EngineOptions:
    """TensorRT engine options carried by an export run."""

    workspace_mb: int = 1024
    max_batch: int = 8
    version_compatible: bool = False
    hardware_compatibility: str = "none"

    def __post_init__(self) -> None:
        if self.workspace_mb < 16:
            raise UserError(f"--workspace-mb must be at least 16, got {self.workspace_mb}")
        if self.max_batch < 1:
            raise UserError(f"--max-batch must be at least 1, got {self.max_batch}")


@dataclass(frozen=True)
class ExportJob:
    """Everything one ``levit-edge export`` run needs, validated."""

    model: ModelSpec
    export: ExportSettings = field(default_factory=ExportSettings)
    targets: Targets = field(default_factory=Targets)
    calib: DataSpec | None = None
    val: DataSpec | None = None
    quant: QuantSettings = field(default_factory=QuantSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    engine: EngineOptions = field(default_factory=EngineOptions)
    fallback: FallbackSettings = field(default_factory=FallbackSettings)
    out: Path = Path("artifacts")
    name: str | None = None
    force: bool = False
    command: tuple[str, ...] = ()
    config: Path | None = None  # the --config file the options came from (recorded by name and sha256)

    def __post_init__(self) -> None:
        check_lengths(job_paths(self))  # an over-long path: one line naming its option (ENAMETOOLONG)
        if self.targets.int8 and self.calib is None:
            raise UserError("--int8 needs calibration images: pass --calib DIR|LIST|NPY")
        if self.fallback.enabled:
            if not self.targets.int8 or self.val is None:
                raise UserError("--accuracy-budget needs --int8 and validation images (--val)")
            if self.gate.max_drop != self.fallback.budget:
                raise UserError("--accuracy-budget is also the accuracy gate: set the gate's max_drop to it")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.model.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"

    def options(self) -> dict[str, Any]:
        """Every option of the run as plain JSON values (report.json and manifest.json ``options``)."""
        raw = asdict(self)
        raw.pop("command", None)
        return {k: _plain(v) for k, v in raw.items()}


def _plain(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, frozenset | set):
        return sorted(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


@dataclass(frozen=True)
class RunResult:
    """What a run produced and how it ended (also carried by the exit-3/4 exceptions)."""

    run_dir: Path
    status: Status
    report: dict[str, Any]
    gate: GateResult | None
    engine_reason: str | None


class StageTimer:
    """Times named stages (report.json ``stages``), announces them to the hooks, and passes each
    stage's pause point (levit_edge/pausepoint.py)."""

    def __init__(self, hooks: Hooks | None) -> None:
        self.hooks = hooks
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        pause_point(f"stage:{name}")
        if self.hooks:
            self.hooks.stage(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)

    def progress(self, task: str) -> Callable[[int, int], None] | None:
        hooks = self.hooks
        if hooks is None:
            return None
        return lambda done, total: hooks.progress(task, done, total)
