"""``setup-platform aarch64`` and ``validate --platform aarch64``: the run's CPU models under a real qemu with
the real aarch64 build of ONNX Runtime (nothing mocked), compared with ONNX Runtime on this x86 host.

The platform is provisioned once into ``<repo>/.cache/platforms`` (scripts/setup.sh does it in CI; the
session fixture does it otherwise), and reused. Image counts stay small: emulation is slow.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, miscalibration_set

from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
from levit_edge.data.open_source import open_source
from levit_edge.data.sources import DataSpec
from levit_edge.errors import UserError
from levit_edge.export.metadata import preprocess_from_onnx
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.platforms.aarch64 import RECORD, SETUP_COMMAND, load_platform, provision
from levit_edge.platforms.check import CPU_MODELS
from levit_edge.settings import PlatformSetup

Fixture = tuple[DatasetPaths, FixtureResult, Path]
REPO = Path(__file__).resolve().parents[1]
PLATFORMS = REPO / ".cache" / "platforms"
IMAGES = 16
DEAD = "http://127.0.0.1:9"  # the discard port: nothing answers, so any download attempt fails at once
MODEL_FILES = [name for _key, name, _opt in CPU_MODELS]


@pytest.fixture(scope="session")
def aarch64_cache() -> Path:
    """The provisioned emulator + arm64 Python + aarch64 ONNX Runtime (downloaded on first use only)."""
    provision(PlatformSetup(cache=PLATFORMS))
    return PLATFORMS


def export(fx: Fixture, out: Path, name: str, calib: Path | None = None) -> Path:
    """An INT8 ONNX Runtime export of the trained fixture with both .ort files (every CPU deliverable)."""
    data, result, checkpoint = fx
    proc = cli(
        "export", "--int8", "--target", "ort", "--ort-format-fp32", "--model", result.model_name,
        "--img-size", result.img_size, "--num-classes", len(result.classes), "--checkpoint", checkpoint,
        "--calib", calib or data.calib, "--val", data.val, "--max-drop", "100", "--out", out, "--name", name,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out / name


@pytest.fixture(scope="module")
def good_run(trained_fixture: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(trained_fixture, tmp_path_factory.mktemp("aarch64"), "good")


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def x86_margins(run_dir: Path, val: Path, name: str) -> np.ndarray:
    """Top-1 minus top-2 logit of each image of the checked subset, by ONNX Runtime here (computed by the
    test on its own: the same seeded subset the check uses)."""
    preprocess, _names, _n = preprocess_from_onnx(run_dir / "model.fp32.onnx")
    source = open_source(DataSpec(val, size=IMAGES, seed=0))
    images = np.concatenate([b.images for b in source.batches(preprocess, IMAGES)])
    optimization = "disable" if name.endswith(".ort") else "all"
    with OnnxRuntimeRunner(run_dir / name, optimization=optimization) as runner:
        logits = runner.infer(images)
    top2 = np.sort(logits, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0], dtype=np.float64)


def test_aarch64_agrees_with_x86(aarch64_cache: Path, good_run: Path, trained_fixture: Fixture) -> None:
    """Every CPU model gives on emulated aarch64 the top-1 it gives on x86, wherever the x86 top-1 leads
    the runner-up by more than twice the largest logit difference measured (there no kernel difference of
    that size can swap the two); the gate passes and the figures land in report.json, report.md and the
    manifest, which still verifies."""
    data, result, _ = trained_fixture
    proc = cli(
        "validate", good_run, "--val", data.val, "--platform", "aarch64",
        "--platform-images", IMAGES, "--platform-cache", aarch64_cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rep = report(good_run)
    check = rep["platforms"]["aarch64"]
    assert check["images"] == IMAGES and check["seed"] == 0 and check["labelled"] is True
    assert sorted(check["models"]) == sorted(MODEL_FILES)
    assert (
        check["onnxruntime"]
        == json.loads((good_run / "manifest.json").read_text())["versions"]["onnxruntime"]
    )
    assert check["qemu"].startswith("qemu-aarch64 version ") and check["python"].startswith("3.11")
    assert check["timings"] is None
    assert check["gate"]["status"] == "passed" and rep["status"] == "passed"
    for name, m in check["models"].items():
        diff = m["max_abs_diff"]
        assert np.isfinite(diff) and diff >= 0.0
        clear = x86_margins(good_run, data.val, name) > 2 * diff
        assert clear.mean() >= 0.5, (name, diff)  # precondition: most images are not near-ties
        assert m["agreement"] >= 100.0 * clear.mean(), (name, m)
        # the drop is the aarch64 top-1 below x86 FP32's on the same images
        assert m["drop"] == pytest.approx(check["reference_top1"] - m["top1_aarch64"], abs=1e-9)
    chance = 100.0 / len(result.classes)
    assert check["reference_top1"] > chance
    manifest = json.loads((good_run / "manifest.json").read_text())
    assert manifest["platforms"]["aarch64"]["models"] == check["models"]
    md = (good_run / "report.md").read_text()
    assert "## Other CPU platforms (emulated)" in md and "aarch64 gate passed" in md
    assert "Other CPU platforms (emulated)" in (good_run / "report.html").read_text()
    assert cli("verify", good_run).returncode == 0
    # a validation without --platform drops the old figures: the status would no longer cover them
    assert cli("validate", good_run, "--val", data.val).returncode == 0
    assert "platforms" not in report(good_run)
    assert "platforms" not in json.loads((good_run / "manifest.json").read_text())


def test_aarch64_gate_fails_like_x86(aarch64_cache: Path, trained_fixture: Fixture, tmp_path: Path) -> None:
    """Ranges 1000x too wide (helpers.miscalibration_set) cost most of the INT8 accuracy on any CPU,
    aarch64 included: exit 3, one error line, the aarch64 INT8 models named among the failures, FP32 not."""
    data, result, _ = trained_fixture
    bad = miscalibration_set(tmp_path / "bad.npy", result.img_size)
    run_dir = export(trained_fixture, tmp_path, "bad", calib=bad)
    proc = cli(
        "validate", run_dir, "--val", data.val, "--max-drop", "1", "--platform", "aarch64",
        "--platform-images", IMAGES, "--platform-cache", aarch64_cache,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().startswith("error: accuracy gate failed")
    assert len(proc.stderr.strip().splitlines()) == 1
    rep = report(run_dir)
    check = rep["platforms"]["aarch64"]
    chance = 100.0 / len(result.classes)
    for name in ("model.int8.ort.onnx", "model.int8.ort"):
        # precondition from the fixture's own figures: INT8 falls at least halfway to chance
        assert check["models"][name]["drop"] > (check["reference_top1"] - chance) / 2, check["models"]
    failures = check["gate"]["failures"]
    assert check["gate"]["status"] == "failed-accuracy"
    assert sorted(f.split(": ")[0] for f in failures) == [
        "aarch64:model.int8.ort",
        "aarch64:model.int8.ort.onnx",
    ]
    assert set(failures) <= set(rep["gate"]["failures"])  # one gate, one status, exit 3 for both CPUs
    assert rep["status"] == "failed-accuracy"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed-accuracy"
    assert cli("verify", run_dir).returncode == 0


def test_not_set_up_is_one_line_naming_the_setup(
    good_run: Path, trained_fixture: Fixture, tmp_path: Path
) -> None:
    """Without a provisioned platform: exit 1, one line naming the set-up command; the run is untouched."""
    data, _, _ = trained_fixture
    before = {p.name: p.read_bytes() for p in good_run.iterdir() if p.is_file()}
    empty = tmp_path / "nothing"
    proc = cli("validate", good_run, "--val", data.val, "--platform", "aarch64", "--platform-cache", empty)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and SETUP_COMMAND in lines[0], lines
    assert {p.name: p.read_bytes() for p in good_run.iterdir() if p.is_file()} == before
    proc = cli("validate", good_run, "--val", data.val, "--platform", "sparc")
    assert proc.returncode == 1 and "--platform must be one of aarch64" in proc.stderr


def test_setup_again_is_offline_and_idempotent(aarch64_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second setup downloads nothing: with every registry unreachable it still succeeds, and leaves
    platform.json as it was."""
    record = (aarch64_cache / "aarch64" / RECORD).read_bytes()
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, DEAD)
    monkeypatch.setenv("PIP_INDEX_URL", DEAD)
    # a relative --cache, as scripts/setup.sh passes it (apt would read relative Dir:: paths elsewhere)
    proc = cli(
        "setup-platform", "aarch64", "--json", "--cache", aarch64_cache.name, "--mirror", f"{DEAD}/debian",
        cwd=aarch64_cache.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["downloaded"] == [] and doc["download_bytes"] == 0 and doc["exit_code"] == 0, doc
    folder = Path(doc["folder"])
    assert folder.is_absolute() and folder.samefile(aarch64_cache / "aarch64"), folder
    assert (aarch64_cache / "aarch64" / RECORD).read_bytes() == record


def test_setup_download_failure_is_one_line(tmp_path: Path) -> None:
    """An unreachable archive: exit 1, one line saying which download failed; nothing half-provisioned."""
    cache = tmp_path / "cache"
    proc = cli("setup-platform", "aarch64", "--cache", cache, "--mirror", f"{DEAD}/debian")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()  # progress lines, then the one error line, no traceback
    assert [ln for ln in lines if ln.startswith("error:")] == lines[-1:], lines
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith(f"error: cannot download the Debian trixie package lists from {DEAD}/debian")
    assert [p.name for p in (cache / "aarch64").iterdir() if p.name != ".lock"] == []
    proc = cli("setup-platform", "riscv64", "--cache", cache)
    assert proc.returncode == 1 and "platform must be one of aarch64" in proc.stderr


def test_a_release_not_set_up_names_the_setup_for_it(aarch64_cache: Path) -> None:
    """A run made with another ONNX Runtime release is checked with exactly that release: when it is not
    provisioned, the error names the set-up command for it."""
    found = load_platform(aarch64_cache)
    with pytest.raises(UserError, match=r"setup-platform aarch64 --cache .* --onnxruntime 0\.0\.1'$"):
        found.runtime("0.0.1")
    installed = metadata.version("onnxruntime")
    assert found.runtime(installed).onnxruntime == installed
    assert (found.runtime(installed).site / "onnxruntime").is_dir()
