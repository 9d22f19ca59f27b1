"""Issue 13 end to end: results a pipeline can trust.

* ``--batch N`` (a fixed-batch model) runs through every stage: parity, calibration, validation,
  ``validate`` and ``bench``, with batches that do not divide the image counts.
* Numbered class folders are labelled in timm's order: the same accuracy timm's own ``create_dataset``
  gives on the same folders and model; the order used is in report.json and manifest.json.
* An export makes no network access, not even a DNS query from native code (ONNX Runtime telemetry):
  traced at the system-call level with strace, with a control run proving the trace sees native DNS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from levit_edge.data.sources import DataSpec
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.flows.export import run_export
from levit_edge.flows.job import ExportJob
from levit_edge.model.load import ModelSpec, load_model

Fixture = tuple[DatasetPaths, FixtureResult, Path]
pytestmark = pytest.mark.slow


def cli(*args: str | Path, cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    code = "from levit_edge.cli.app import main; main()"
    return subprocess.run(
        [*prefix, sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"},
        timeout=600,
    )


def model_args(fx: Fixture) -> list[str]:
    _, result, checkpoint = fx
    return [
        "--model", result.model_name,
        "--img-size", str(result.img_size),
        "--num-classes", str(len(result.classes)),
        "--checkpoint", str(checkpoint),
    ]  # fmt: skip


def small_val(data: DatasetPaths, root: Path, per_class: int, names: list[str] | None = None) -> Path:
    for i, cls in enumerate(data.classes):
        folder = root / (names[i] if names else cls)
        folder.mkdir(parents=True)
        for png in sorted((data.val / cls).glob("*.png"))[:per_class]:
            shutil.copy(png, folder / png.name)
    return root


def report(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "report.json").read_text())
    return data


# ---- --batch N ------------------------------------------------------------------------------------------


def test_fixed_batch_runs_through_every_stage(trained_fixture: Fixture, tmp_path: Path) -> None:
    data = trained_fixture[0]
    val = small_val(data, tmp_path / "val", per_class=2)  # 20 images: 6 batches of 3 and one of 2
    proc = cli(
        "export", *model_args(trained_fixture),
        "--batch", "3",
        "--int8", "--target", "ort",
        "--calib", data.calib, "--calib-size", "8",  # 8 images: batches of 3, 3 and 2
        "--val", val,
        "--max-drop", "100",
        "--out", tmp_path / "out", "--name", "b3",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "out" / "b3"
    rep = report(run)
    assert rep["options"]["export"]["batch"] == 3
    assert rep["calibration"]["count"] == 8
    assert rep["validation"]["n"] == 20 and rep["latency"]["fp32"]["batch"] == 3
    assert rep["accuracy"]["fp32"]["top1"] >= 80.0
    proc = cli("validate", run, "--val", val, "--max-drop", "100", "--batch-size", "7", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report(run)["accuracy"]["fp32"] == rep["accuracy"]["fp32"]
    bench = ["bench", run, "--no-torch", "--no-save", "--rounds", "1", "--repeat", "1", "--warmup", "0"]
    proc = cli(*bench, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli(*bench, "--batches", "1,16", cwd=tmp_path)
    assert proc.returncode == 1 and "--batches can only be 3" in proc.stderr, proc.stderr[-3000:]


def test_batch_one_export(trained_fixture: Fixture, tmp_path: Path) -> None:
    """The parity check used to feed two images to a batch-1 model (an InvalidArgument traceback)."""
    proc = cli(
        "export", *model_args(trained_fixture), "--batch", "1", "--out", tmp_path / "out", "--name", "b1",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report(tmp_path / "out" / "b1")["parity"]["onnxruntime_vs_torch_fused"] < 1e-4


# ---- class order against timm ---------------------------------------------------------------------------


def _timm_top1(fx: Fixture, root: Path) -> float:
    """FP32 top-1 of the fixture model on ``root``, with timm's own dataset, labels and transform."""
    from timm.data import create_dataset, create_transform, resolve_data_config

    _, result, checkpoint = fx
    model = load_model(ModelSpec(result.model_name, checkpoint, len(result.classes), result.img_size)).model
    config = resolve_data_config(model=model)
    dataset = create_dataset("", root=str(root), transform=create_transform(**config, is_training=False))
    correct = 0
    with torch.no_grad():
        for i in range(len(dataset)):
            image, target = dataset[i]
            correct += int(model(image[None]).argmax(1).item() == target)
    return 100.0 * correct / len(dataset)


def test_numbered_class_folders_score_as_in_timm(trained_fixture: Fixture, tmp_path: Path) -> None:
    data, result, checkpoint = trained_fixture
    # class i in folder str(i + 1): folders 1 ... 10, the layout of the issue
    val = small_val(data, tmp_path / "val", 5, [str(i + 1) for i in range(len(data.classes))])
    job = ExportJob(
        model=ModelSpec(result.model_name, checkpoint, len(result.classes), result.img_size),
        val=DataSpec(val),
        out=tmp_path / "out",
        name="r",
    )
    rep = run_export(job).report
    expected = _timm_top1(trained_fixture, val)
    assert expected >= 80.0  # the fixture model is good; a wrong order would be near 10 %
    # ONNX Runtime vs PyTorch may flip one near-tied image at most
    assert abs(rep["accuracy"]["fp32"]["top1"] - expected) <= 100.0 / 50 + 1e-9
    assert rep["validation"]["class_order_rule"] == "natural"
    manifest = json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())
    assert manifest["class_order_rule"] == "natural"
    assert manifest["options"]["val"]["class_order"] == "natural"
    assert rep["model"]["class_names"] == [str(i + 1) for i in range(10)]


def test_chance_level_accepted_only_with_the_override(trained_fixture: Fixture, tmp_path: Path) -> None:
    data = trained_fixture[0]
    val = small_val(data, tmp_path / "val", 2, [str(i + 2) for i in range(len(data.classes))])
    common = ["export", *model_args(trained_fixture), "--val", val, "--class-order", "lexical"]
    proc = cli(*common, "--out", tmp_path / "out", "--name", "a", cwd=tmp_path)
    assert proc.returncode == 1 and "at or below chance" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out" / "a").exists()
    proc = cli(*common, "--allow-chance-accuracy", "--out", tmp_path / "out", "--name", "b", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = report(tmp_path / "out" / "b")
    assert rep["accuracy"]["fp32"]["top1"] <= 10.0
    assert rep["validation"]["class_order_rule"] == "lexical"
    assert rep["options"]["gate"]["allow_chance"] is True


# ---- no network, down to native DNS ---------------------------------------------------------------------

STRACE = shutil.which("strace")
# What a host name lookup or a connection looks like at the system-call level, from any code: glibc's
# resolver reads resolv.conf and sends to port 53; any TCP/UDP peer shows up as an AF_INET(6) connect
# or sendto; systemd-resolved is reached over its own socket.
NETWORK = re.compile(
    r'"/etc/resolv\.conf"|sa_family=AF_INET6?\b|htons\(53\)|/run/systemd/resolve/|nscd/socket'
)


def _traced(*command: str, cwd: Path) -> list[str]:
    assert STRACE is not None
    log = cwd / f"strace-{len(list(cwd.glob('strace-*')))}.txt"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.run(
        [STRACE, "-f", "-qq", "-e", "trace=%network,openat,open", "-o", str(log), *command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "COLUMNS": "200", "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line for line in log.read_text().splitlines() if NETWORK.search(line)]


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_the_trace_sees_dns_from_native_code(tmp_path: Path) -> None:
    """Control: a getaddrinfo call made by C code (no Python socket audit event) is caught."""
    code = (
        "import ctypes; res = ctypes.c_void_p(); "
        "ctypes.CDLL(None).getaddrinfo(b'telemetry.example.invalid', None, None, ctypes.byref(res))"
    )
    assert _traced(sys.executable, "-c", code, cwd=tmp_path)


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_export_makes_no_dns_query_even_from_native_code(trained_fixture: Fixture, tmp_path: Path) -> None:
    data = trained_fixture[0]
    val = small_val(data, tmp_path / "val", 1)
    code = "from levit_edge.cli.app import main; main()"
    for i in range(3):  # telemetry was seen in 4 of 6 exports: one export proves little
        args = [
            "export", *model_args(trained_fixture),
            "--int8", "--target", "ort", "--calib", str(data.calib), "--calib-size", "4",
            "--val", str(val), "--max-drop", "100",
            "--out", str(tmp_path / "out"), "--name", f"r{i}",
        ]  # fmt: skip
        hits = _traced(sys.executable, "-c", code, *args, cwd=tmp_path)
        assert not hits, "network activity:\n" + "\n".join(hits[:10])
    assert np.all([(tmp_path / "out" / f"r{i}" / "manifest.json").is_file() for i in range(3)])


# ---- portable runs ------------------------------------------------------------------------------------


def test_inputs_recorded_by_name_and_hash(trained_fixture: Fixture, tmp_path: Path) -> None:
    import hashlib

    from levit_edge.runs.manifest import verify_manifest

    data, result, checkpoint = trained_fixture
    small_val(data, tmp_path / "val", 1)
    config = tmp_path / "edge.toml"
    config.write_text(
        f'model = "{result.model_name}"\nimg_size = {result.img_size}\n'
        f'num_classes = {len(result.classes)}\ncheckpoint = "{checkpoint}"\nval = "val"\n'
    )
    proc = cli("export", "--config", config, "--out", tmp_path / "out", "--name", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())
    inputs = manifest["inputs"]
    assert inputs["config"]["name"] == "edge.toml"
    assert inputs["config"]["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert inputs["checkpoint"]["name"] == checkpoint.name
    assert inputs["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (
        inputs["val"]["name"] == "val"
        and inputs["val"]["data_hash"] == report(tmp_path / "out" / "r")["validation"]["data_hash"]
    )
    moved = tmp_path / "elsewhere" / "r"
    shutil.copytree(tmp_path / "out" / "r", moved)
    assert verify_manifest(moved) == []
