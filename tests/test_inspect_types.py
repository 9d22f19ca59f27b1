"""``inspect`` of ONNX models whose inputs are valid but are no tensor of a known type."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from helpers import cli
from onnx import TensorProto, helper


def _model(path: Path, input_type: onnx.TypeProto | None) -> Path:
    """An Identity graph whose input is declared with ``input_type`` (None: no type at all)."""
    value = onnx.ValueInfoProto(name="x")
    if input_type is not None:
        value.type.CopyFrom(input_type)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


CASES = {
    "no-type": (None, "(no type)"),
    "sequence": (helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None)),
                 "sequence of float32"),
    "undefined-elem": (helper.make_tensor_type_proto(TensorProto.UNDEFINED, [1, 3]), "undefined"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_inspect_describes_an_input_that_is_no_tensor(tmp_path: Path, name: str) -> None:
    input_type, expected = CASES[name]
    path = _model(tmp_path / "m.onnx", input_type)
    proc = cli("inspect", path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["inputs"][0]["name"] == "x"
    assert doc["inputs"][0]["type"] == expected, doc["inputs"]
    assert doc["outputs"][0] == {"name": "y", "shape": [1, 3], "type": "float32"}
    plain = cli("inspect", path)
    assert plain.returncode == 0 and f"input  x {expected}" in plain.stdout, plain.stdout + plain.stderr


def test_inspect_of_a_run_with_an_edited_manifest_says_so(tmp_path: Path) -> None:
    """A status turned to "passed" by hand: inspect shows the status and that it is no proof."""
    from levit_edge.runs.manifest import write_manifest
    from levit_edge.runs.staging import staged_run

    with staged_run(tmp_path, "r", force=False) as run:
        (run.dir / "report.json").write_text(json.dumps({"status": "failed-accuracy"}))
        write_manifest(run.dir, {"status": "failed-accuracy"})
        folder = run.commit()
    intact = json.loads(cli("inspect", folder, "--json").stdout)
    assert intact["status"] == "failed-accuracy" and intact["sealed"] is True
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "status": "passed"}))
    edited = cli("inspect", folder, "--json")
    assert edited.returncode == 0, edited.stderr
    doc = json.loads(edited.stdout)
    assert doc["status"] == "passed" and doc["sealed"] is False
    plain = cli("inspect", folder)
    line = "status passed, but manifest.json was edited since it was written: run verify"
    assert line in plain.stderr + plain.stdout
