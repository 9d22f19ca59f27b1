"""The accuracy-drop gate that decides a build's status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from levit_edge.artifacts import Status
from levit_edge.settings import GateSettings
from levit_edge.validate.metrics import Comparison


@dataclass(frozen=True)
class GateResult:
    """Whether every gated artifact stayed within the allowed drop."""

    status: Status
    max_drop: float
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED


def apply_gate(comparisons: Mapping[str, Comparison], settings: GateSettings) -> GateResult:
    """Fail when any artifact's drop (top-1 points, or disagreement points without labels) exceeds the max."""
    failures = tuple(
        f"{name}: drop {c.drop:.2f} points > {settings.max_drop:g}"
        + ("" if c.accuracy is not None else " (top-1 disagreement with FP32; no labels)")
        for name, c in sorted(comparisons.items())
        if c.drop > settings.max_drop + 1e-9
    )
    return GateResult(Status.FAILED if failures else Status.PASSED, settings.max_drop, failures)
