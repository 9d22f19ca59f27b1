"""The names every layer shares: artifact keys, run statuses and engine statuses.

They are ``StrEnum`` members, so they compare equal to, and serialize as, the plain strings that
report.json, manifest.json and ``--json`` documents have always held (README.md, "report.json keys").
"""

from __future__ import annotations

from enum import StrEnum


class Artifact(StrEnum):
    """An artifact of a run, as keyed in report.json (``accuracy``, ``drop``, ``artifacts``, ...)."""

    FP32 = "fp32"
    INT8_ORT = "int8.ort"
    INT8_TRT = "int8.trt"
    INT8_PLAN = "int8.plan"


class Status(StrEnum):
    """How a run ended (report.json and manifest.json ``status``; the exit code follows from it)."""

    PASSED = "passed"
    FAILED = "failed-accuracy"
    NO_ENGINE = "no-engine"
    UNVALIDATED = "unvalidated"


class EngineStatus(StrEnum):
    """report.json ``engine.status``: what happened to the requested TensorRT engine."""

    BUILT = "built"
    SKIPPED = "skipped"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"
