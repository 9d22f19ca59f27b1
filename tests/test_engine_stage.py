"""The engine stage of ``export --target trt`` where TensorRT cannot build: the run survives with every
CPU artifact, the engine's status and reason are recorded, the exit code is 4; with ``--no-engine`` the
engine reads as skipped (exit 0); the trtexec line names the finished run's files, relative to it.

No TensorRT can be installed here, so TensorRT fails the way it does on a host where the ``tensorrt``
package is present but its libraries are not: a ``tensorrt`` package whose import raises the loader's
OSError (first on PYTHONPATH of the real CLI). The in-process test lets that same import fail *inside*
``build_engine`` (only the availability pre-check is skipped), the path a parse or build error takes.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import random_levit, save_state_dict

from levit_edge.errors import EngineUnavailable

pytestmark = pytest.mark.slow  # each test runs one full export of a small LeViT

NAME = "levit_128s"
IMG = 64
CLASSES = 10
LOADER_ERROR = "libnvinfer.so.10: cannot open shared object file: No such file or directory"
CPU_FILES = ("model.fp32.onnx", "model.int8.trt.onnx", "calibration.json", "report.json", "manifest.json")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine-stage")
    checkpoint = save_state_dict(random_levit(NAME, CLASSES, IMG, seed=3), root / "model.pth")
    calib = root / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((8, 3, IMG, IMG)).astype(np.float32))
    broken = root / "broken-trt" / "tensorrt"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(f"raise OSError({LOADER_ERROR!r})\n")
    return {"checkpoint": checkpoint, "calib": calib, "broken": broken.parent, "root": root}


def _export(inputs: dict[str, Path], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env["PYTHONPATH"] = os.pathsep.join([str(inputs["broken"]), env.get("PYTHONPATH", "")])
    args = ["export", "--int8", "--target", "trt", "--model", NAME, "--img-size", str(IMG)]
    args += ["--num-classes", str(CLASSES), "--checkpoint", str(inputs["checkpoint"])]
    args += ["--calib", str(inputs["calib"]), "--out", str(out), "--name", "r", *extra]
    code = "from levit_edge.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=900
    )


def _check_trtexec(report: dict[str, object], run: Path) -> None:
    line = str(report["trtexec"])
    assert ".partial" not in line and str(run.parent) not in line
    args = dict(a.split("=", 1) for a in shlex.split(line)[1:] if "=" in a)
    for flag in ("--onnx", "--saveEngine", "--timingCacheFile"):
        assert not Path(args[flag]).is_absolute(), line
    assert (run / args["--onnx"]).is_file()  # run from inside the finished run folder, it finds the model
    assert "--skipInference" in line


def test_engine_that_cannot_load_keeps_the_run_and_exits_4(inputs: dict[str, Path], tmp_path: Path) -> None:
    proc = _export(inputs, tmp_path)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot load its libraries" in errors[0] and "libnvinfer" in errors[0]
    run = tmp_path / "r"
    for name in CPU_FILES:
        assert (run / name).is_file(), name
    assert not (run / "model.int8.plan").exists()
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "no-engine"
    assert report["engine"]["built"] is False and report["engine"]["status"] == "unavailable"
    assert "libnvinfer" in report["engine"]["reason"]
    _check_trtexec(report, run)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staged leftovers


def test_no_engine_reads_as_skipped(inputs: dict[str, Path], tmp_path: Path) -> None:
    proc = _export(inputs, tmp_path, "--no-engine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "r"
    report = json.loads((run / "report.json").read_text())
    assert report["engine"]["status"] == "skipped" and "--no-engine" in report["engine"]["reason"]
    for name in ("report.md", "report.html"):
        text = (run / name).read_text()
        assert "unknown reason" not in text
        assert "skipped (--no-engine)" in text
        assert "/usr/src/tensorrt/bin" in text  # where trtexec lives on JetPack
        assert ".partial" not in text
    _check_trtexec(report, run)


def test_failure_inside_build_engine_is_recorded(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The availability pre-check is skipped, so build_engine itself meets the failing TensorRT import
    (as a parse or build error would fail inside it): recorded as 'failed', CPU artifacts kept."""
    from levit_edge.backends import trt_env as backend
    from levit_edge.data.sources import DataSpec
    from levit_edge.flows.export import run_export
    from levit_edge.flows.job import ExportJob
    from levit_edge.model.load import ModelSpec
    from levit_edge.settings import Targets

    monkeypatch.syspath_prepend(str(inputs["broken"]))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(backend, "tensorrt_unavailable_reason", lambda runner=True: None)
    job = ExportJob(
        model=ModelSpec(NAME, inputs["checkpoint"], CLASSES, IMG),
        targets=Targets.parse("trt", int8=True),
        calib=DataSpec(inputs["calib"]),
        out=tmp_path,
        name="r",
    )
    with pytest.raises(EngineUnavailable, match="TensorRT build failed") as caught:
        run_export(job)
    assert caught.value.exit_code == 4
    run = tmp_path / "r"
    for name in CPU_FILES:
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "no-engine"
    assert report["engine"]["status"] == "failed" and "libnvinfer" in report["engine"]["reason"]


def test_bench_loads_version_compatible_plans_as_such(tmp_path: Path) -> None:
    """bench hands the run's own version_compatible option to the engine runner (a version-compatible
    plan embeds the lean runtime and loads only with host code allowed)."""
    from levit_edge.flows.bench import plan_is_version_compatible
    from levit_edge.runs.finished import FinishedRun

    run = FinishedRun(tmp_path)
    assert plan_is_version_compatible(run) is False  # no report: the safe default
    for value, expected in ((True, True), (False, False), ("yes", False)):
        report = {"options": {"engine": {"version_compatible": value}}}
        (tmp_path / "report.json").write_text(json.dumps(report))
        assert plan_is_version_compatible(run) is expected
