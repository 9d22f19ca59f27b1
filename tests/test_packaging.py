"""Packaging: the license the metadata names is in the repository, and no dependency is declared unused."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_license_file_is_the_apache_2_text_pyproject_names() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == {"text": "Apache-2.0"}
    text = " ".join((REPO / "LICENSE").read_text().split())
    assert text.startswith("Apache License Version 2.0, January 2004")
    for clause in (
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "2. Grant of Copyright License.",
        "3. Grant of Patent License.",
        "7. Disclaimer of Warranty.",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
    ):
        assert clause in text, clause


# Export through timm and the TorchScript ONNX exporter with onnxscript made unimportable: the dependency
# is not needed (torch.onnx only imports it for dynamo=True, which levit-edge does not use).
_EXPORT_WITHOUT_ONNXSCRIPT = """
import sys
sys.modules["onnxscript"] = None  # any import of it now raises ImportError
import onnx
from levit_edge.export.onnx import ExportSettings, export_onnx
from levit_edge.model.fuse import fuse_levit
from levit_edge.model.load import create_levit
model = create_levit("levit_128s", 10, 64).eval()
data = export_onnx(fuse_levit(model), (3, 64, 64), ExportSettings(), {})
print(len(onnx.load_from_string(data).graph.node))
"""


def test_onnxscript_is_neither_declared_nor_needed() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.startswith("onnxscript") for d in deps)
    proc = subprocess.run(
        [sys.executable, "-c", _EXPORT_WITHOUT_ONNXSCRIPT], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 50


def test_no_docstring_cites_documents_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(REPO)}"
        for folder in ("levit_edge", "benchmarks", "tests", "scripts", "tools", "examples")
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".sh")
        and path.name != "test_packaging.py"
        and any(doc in path.read_text() for doc in ("DESIGN.md", "REFERENCE.md", "DESIGN contract"))
    ]
    assert hits == []
