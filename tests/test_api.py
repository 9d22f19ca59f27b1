"""The Python API: docs/API.md's examples run as written, one set of defaults, no process-wide effects."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from levit_edge.errors import UserError

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "onnxruntime", "onnx", "matplotlib")


def test_importing_the_api_imports_no_heavy_library() -> None:
    code = (
        "import sys, json, levit_edge, levit_edge.api; levit_edge.api.export_job; levit_edge.verify; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []


def test_unknown_option_names_the_closest_key() -> None:
    from levit_edge import api

    with pytest.raises(UserError, match="did you mean 'calib_size'"):
        api.export_job({"calib_sizes": 10})


def test_help_defaults_are_the_settings_defaults() -> None:
    """Every "[default: X]" that ``export -h`` shows is the value the API and config files use."""
    from levit_edge.settings import EXPORT_DEFAULTS

    proc = subprocess.run(
        [sys.executable, "-c", "from levit_edge.cli.app import main; main()", "export", "-h"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    # an option, its help up to the next option, and the default its help names
    pattern = r"--([a-z0-9-]+)(?: / --no-[a-z0-9-]+)?(?: <[^>]+>)? (?:(?! --[a-z]).)*?\[default: ([^\]]+)\]"
    shown: dict[str, str] = {}
    for flag, text in re.findall(pattern, flat):
        shown.setdefault(flag, text)  # later hits are a flag named inside another option's help
    checked = 0
    for flag, text in shown.items():
        key = flag.replace("-", "_")
        if key in EXPORT_DEFAULTS and EXPORT_DEFAULTS[key] is not None and "-" not in text:
            value = EXPORT_DEFAULTS[key]
            assert text == (flag if value is True else str(value)), (flag, text, value)
            checked += 1
    assert checked >= 8, shown


def _tiny_conv_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2"], ["logits"], name="conv2"),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_quantize_leaves_the_root_logger_as_it_was(tmp_path: Path) -> None:
    from levit_edge.data.open_source import open_source
    from levit_edge.data.preprocess import PreprocessConfig
    from levit_edge.data.sources import DataSpec
    from levit_edge.quant.calibrate import calibrate
    from levit_edge.quant.profiles import TRT_PROFILE
    from levit_edge.quant.quantize import quantize
    from levit_edge.settings import QuantSettings

    model = _tiny_conv_model(tmp_path / "m.onnx")
    images = np.random.default_rng(1).standard_normal((8, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", images)
    preprocess = PreprocessConfig((3, 8, 8), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1.0, "bilinear")
    calibration = calibrate(model, open_source(DataSpec(tmp_path / "calib.npy")), preprocess, QuantSettings())
    root = logging.getLogger()
    before = (root.level, list(root.filters), list(root.handlers))
    result = quantize(model, calibration, TRT_PROFILE, tmp_path / "q.onnx")
    assert result.quantized_nodes > 0  # the quantizer really ran
    assert (root.level, list(root.filters), list(root.handlers)) == before
    assert root.getEffectiveLevel() != logging.ERROR or before[0] == logging.ERROR


@pytest.mark.slow
def test_api_md_examples_run(trained_fixture: tuple, tmp_path: Path) -> None:
    data, fixture, checkpoint = trained_fixture
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "API.md").read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace = {
        "checkpoint": str(checkpoint),
        "model_name": fixture.model_name,
        "img_size": fixture.img_size,
        "num_classes": len(fixture.classes),
        "calib_dir": str(data.calib),
        "val_dir": str(data.val),
        "out_dir": str(tmp_path / "runs"),
    }
    root = logging.getLogger()
    before = (root.level, list(root.filters), tempfile.tempdir)
    for block in blocks:
        exec(compile(block, "docs/API.md", "exec"), namespace)
    assert (root.level, list(root.filters), tempfile.tempdir) == before  # no process-wide side effect
    assert (tmp_path / "runs" / "r1" / "manifest.json").is_file()
    assert (tmp_path / "runs" / "from-config" / "model.fp32.onnx").is_file()
