"""What the Jetson board (JetPack 6: TensorRT 10.3 for Python 3.10, no torch) runs: ``levit_edge.board``
and the modules it imports.

* Statically: every such module parses as Python 3.10 (``ast.parse(feature_version=(3, 10))``), imports
  only the standard library of 3.10 (no module or name added later) and numpy / Pillow / TensorRT / a
  CUDA binding, and no other levit_edge module.
* For real: with torch, timm, onnx, onnxruntime and typer made unimportable, ``python -m levit_edge.board``
  runs and exits 4 (no TensorRT here) naming what is missing, with nothing else imported.
* Its PIL preprocessing gives the same tensors as levit-edge's own (timm's eval transform).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BOARD_MODULES = (
    "levit_edge/__init__.py",
    "levit_edge/errors.py",
    "levit_edge/io.py",
    "levit_edge/board.py",
    "levit_edge/backends/__init__.py",
    "levit_edge/backends/base.py",
    "levit_edge/backends/tensorrt.py",
    "levit_edge/backends/trt_build.py",
    "levit_edge/backends/trt_cuda.py",
    "levit_edge/backends/trt_env.py",
)
THIRD_PARTY = {"numpy", "PIL", "tensorrt", "cuda", "pycuda"}
#: Imported only by functions the board never calls (the trtexec line reads the ONNX input shape).
OFF_BOARD_IMPORTS = {("onnx", "onnx_input_shape")}
#: Standard-library modules and names that Python 3.10 lacks (3.11: tomllib, typing.Self, ...; 3.12+).
NEWER_STDLIB_MODULES = {"tomllib", "_tomllib", "wsgiref.types"}
NEWER_STDLIB_NAMES = {
    "typing": {
        "Self",
        "LiteralString",
        "Never",
        "assert_never",
        "assert_type",
        "reveal_type",
        "dataclass_transform",
        "Required",
        "NotRequired",
        "TypeVarTuple",
        "Unpack",
        "override",
        "TypeAliasType",
        "get_overloads",
        "clear_overloads",
        "ReadOnly",
        "TypeIs",
        "NoDefault",
    },
    "datetime": {"UTC"},
    "enum": {"StrEnum", "verify", "member", "nonmember", "global_enum", "ReprEnum", "EnumCheck"},
    "hashlib": {"file_digest"},
    "contextlib": {"chdir"},
    "asyncio": {"TaskGroup", "timeout", "Runner"},
    "itertools": {"batched"},
    "operator": {"call"},
}
NEWER_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup", "aiter_", "PythonFinalizationError"}


def _imports(tree: ast.AST) -> list[tuple[str, list[str], str]]:
    """(module, imported names, enclosing function or '') for every import statement."""
    out: list[tuple[str, list[str], str]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else func
            if isinstance(child, ast.Import):
                out.extend((alias.name, [], func) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module, [alias.name for alias in child.names], func))
            visit(child, inner)

    visit(tree, "")
    return out


@pytest.mark.parametrize("relpath", BOARD_MODULES)
def test_module_is_python_310_with_board_dependencies_only(relpath: str) -> None:
    source = (ROOT / relpath).read_text()
    tree = ast.parse(source, filename=relpath, feature_version=(3, 10))
    stdlib = set(sys.stdlib_module_names) - NEWER_STDLIB_MODULES
    allowed_own = {
        p.removesuffix("/__init__.py").removesuffix(".py").replace("/", ".") for p in BOARD_MODULES
    }
    for module, names, func in _imports(tree):
        top = module.split(".")[0]
        if module == "__future__":
            continue
        if top == "levit_edge":
            assert module in allowed_own, f"{relpath} imports {module} (not part of the board's set)"
        elif (top, func) in OFF_BOARD_IMPORTS or top in THIRD_PARTY:
            continue
        else:
            assert top in stdlib and module not in NEWER_STDLIB_MODULES, f"{relpath} imports {module}"
            newer = set(names) & NEWER_STDLIB_NAMES.get(module, set())
            assert not newer, f"{relpath}: {module}.{sorted(newer)} is newer than Python 3.10"
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not used & NEWER_BUILTINS, f"{relpath} uses {sorted(used & NEWER_BUILTINS)}"
    # except* (3.11) is rejected by feature_version on some Pythons only: look for it directly.
    assert not [n for n in ast.walk(tree) if type(n).__name__ == "TryStar"], f"{relpath} uses except*"


def test_static_check_catches_what_310_lacks(tmp_path: Path) -> None:
    """The check above can fail: 3.11-only syntax and names are caught."""
    with pytest.raises(SyntaxError):
        ast.parse("try:\n    pass\nexcept* ValueError:\n    pass\n", feature_version=(3, 10))
    tree = ast.parse("from typing import Self\n", feature_version=(3, 10))
    ((module, names, _),) = _imports(tree)
    assert set(names) & NEWER_STDLIB_NAMES[module]


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "timm", "onnx", "onnxruntime", "typer", "rich", "torchvision"}:
            raise ImportError(f"{name} is not on the board")
sys.meta_path.insert(0, Block())
"""


def test_board_runs_without_torch_or_onnx(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    report = {
        "preprocess": {
            "input_size": [3, 32, 32],
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "crop_pct": 0.9,
            "interpolation": "bicubic",
            "crop_mode": "center",
        },
        "model": {"class_names": ["a", "b"]},
    }
    (run / "report.json").write_text(json.dumps(report))
    (run / "model.int8.plan").write_bytes(b"not a plan")
    data = tmp_path / "data.npz"
    np.savez(data, images=np.zeros((3, 3, 32, 32), np.float32), labels=np.array([0, 1, 0]))
    code = BLOCKER + (
        "from levit_edge import board\n"
        "rc = board.main(sys.argv[1:])\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'onnx', 'onnxruntime'})\n"
        "print('LOADED', loaded)\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for argv in (["validate", str(run), "--data", str(data)], ["build", str(tmp_path / "model.onnx")]):
        (tmp_path / "model.onnx").write_bytes(b"x")
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 4, (argv, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: TensorRT Python package is not installed")
        assert "LOADED []" in proc.stdout


def test_board_user_errors_exit_1(tmp_path: Path) -> None:
    from levit_edge import board

    assert board.main(["validate", str(tmp_path), "--data", str(tmp_path)]) == 1  # no report.json
    assert board.main(["build", str(tmp_path / "absent.onnx")]) == 1


@pytest.mark.parametrize(
    ("size", "mode", "crop_mode", "interpolation"),
    [
        ((97, 61), "RGB", "center", "bicubic"),
        ((40, 120), "RGB", "center", "bilinear"),
        ((35, 35), "L", "center", "bicubic"),
        ((90, 50), "RGB", "squash", "bicubic"),
        ((256, 300), "RGB", "center", "nearest"),
    ],
)
def test_board_preprocessing_matches_levit_edge(
    size: tuple[int, int], mode: str, crop_mode: str, interpolation: str
) -> None:
    from levit_edge.board import Preprocess
    from levit_edge.data.preprocess import PreprocessConfig

    section = {
        "input_size": [3, 32, 32],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "crop_pct": 0.875,
        "interpolation": interpolation,
        "crop_mode": crop_mode,
    }
    rng = np.random.default_rng(sum(size))
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    image = Image.fromarray(pixels, mode)
    ours = Preprocess.from_report(section)(image)
    theirs = PreprocessConfig.from_dict(section).transform()(image)
    assert ours.shape == theirs.shape == (3, 32, 32)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def _channel_model(path: Path, size: int) -> Path:
    """images (N,3,S,S) -> logits (N,3): the mean of each channel (class k = the brightest channel)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images", "axes"], ["logits"], keepdims=0)],
        "channels",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [2, 3, size, size])],  # fixed batch 2
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", ["folders", "npz"])
def test_validate_counts_top1_against_the_run(tmp_path: Path, kind: str) -> None:
    """validate_engine's accounting with a real backend (ONNX Runtime on a fixed-batch-2 model, so the
    odd last batch is padded): 7 images, 5 labelled right -> 71.43; gate judged only when asked."""
    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
    from levit_edge.board import validate_engine

    size, names = 16, ["red", "green", "blue"]
    run = tmp_path / "run"
    run.mkdir()
    report = {
        "preprocess": {
            "input_size": [3, size, size],
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "crop_mode": "center",
        },
        "model": {"class_names": names},
        "accuracy": {"fp32": {"top1": 100.0}, "int8.trt": {"top1": 90.0}},
        "thresholds": {"max_drop": 10.0},
    }
    (run / "report.json").write_text(json.dumps(report))
    model = _channel_model(tmp_path / "m.onnx", size)
    brightest = [0, 1, 2, 0, 1, 2, 0]
    labels = [0, 1, 2, 0, 1, 0, 1]  # the last two are wrong
    if kind == "npz":
        images = np.full((7, 3, size, size), -1.0, np.float32)
        for i, k in enumerate(brightest):
            images[i, k] = 1.0
        data = tmp_path / "data.npz"
        np.savez(data, images=images, labels=np.array(labels))
    else:
        data = tmp_path / "val"
        for i, (k, label) in enumerate(zip(brightest, labels, strict=True)):
            pixel = [20, 20, 20]
            pixel[k] = 230
            (data / names[label]).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (size + 3, size), tuple(pixel)).save(data / names[label] / f"{i}.png")
    result = validate_engine(run, data, batch=3, runner=OnnxRuntimeRunner(model, threads=1))
    assert result.n == 7
    assert result.top1 == pytest.approx(500 / 7)
    assert result.ci_top1 == {"fp32": 100.0, "int8.trt": 90.0}
    assert result.drop == pytest.approx(100 - 500 / 7) and result.passed is None
    gated = validate_engine(run, data, batch=3, gate=True, runner=OnnxRuntimeRunner(model, threads=1))
    assert gated.passed is False
