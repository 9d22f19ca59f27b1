"""The files of a run directory (README.md, "Run directory")."""

from __future__ import annotations

from levit_edge.artifacts import Artifact

FP32_FILE = "model.fp32.onnx"
ORT_FILE = "model.int8.ort.onnx"
TRT_FILE = "model.int8.trt.onnx"
PLAN_FILE = "model.int8.plan"
TIMING_CACHE = "timing.cache"
CALIBRATION_FILE = "calibration.json"
REPORT_JSON = "report.json"
MANIFEST = "manifest.json"
ARTIFACT_FILES: dict[Artifact, str] = {
    Artifact.FP32: FP32_FILE,
    Artifact.INT8_ORT: ORT_FILE,
    Artifact.INT8_TRT: TRT_FILE,
    Artifact.INT8_PLAN: PLAN_FILE,
}
ONNX_ARTIFACTS = (Artifact.FP32, Artifact.INT8_ORT, Artifact.INT8_TRT)  # what ONNX Runtime can run
TMP_DIR = ".tmp"  # scratch files of a staged run (removed before the commit)
COMMIT_MARKER = ".commit"  # in an ``.update-*`` staging folder: the rewrite is decided (roll forward)
UPDATE_PREFIX = ".update-"
