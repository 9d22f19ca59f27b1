"""The TensorRT backend is type-checked against TensorRT's real Python API, not silently as ``Any``.

TensorRT cannot be installed here, so ``levit_edge/backends/tensorrt.py`` and ``trt_*.py`` are checked
with mypy against the ``tensorrt-stubs`` package, patched by ``tools/trt_stubs.py``. These tests generate
the patched stubs into a temporary folder, then run mypy (the project's ``[tool.mypy]`` settings with
``mypy_path`` pointing at that folder) on the real modules, which must pass, and
on a copy with a misspelled TensorRT call, which must fail naming it. They are skipped only where
``tensorrt-stubs`` is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "trt_stubs.py"
BACKEND = ROOT / "levit_edge" / "backends" / "tensorrt.py"  # the runner: where REAL_CALL is
#: Every module that touches TensorRT's API: the runner, the build, availability and logger, CUDA.
BACKENDS = [BACKEND, *(BACKEND.with_name(f"trt_{part}.py") for part in ("build", "env", "cuda"))]
#: The call that the misspelled copy breaks, and what it becomes.
REAL_CALL = ".execute_async_v3(cuda.stream_handle)"
MISSPELLED_CALL = ".execute_async_v4(cuda.stream_handle)"


def _stubs_installed() -> bool:
    try:
        metadata.distribution("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        return False
    return True


needs_stubs = pytest.mark.skipif(
    not _stubs_installed(),
    reason="tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs==10.13.0.35.1)",
)


def _load_tool() -> ModuleType:
    """tools/trt_stubs.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("trt_stubs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is created
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class MypyResult:
    """Exit status and combined output of one mypy run."""

    returncode: int
    output: str


#: Per-module options for the stubs, as the project's [tool.mypy] is to have them: errors inside
#: the stubs are not ours to fix, and a missing stub must be an error, not a silent ``Any``.
TRT_OVERRIDE: dict[str, object] = {
    "module": ["tensorrt", "tensorrt.*", "tensorrt_bindings", "tensorrt_bindings.*"],
    "ignore_missing_imports": False,
    "ignore_errors": True,
}


def _ini_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def mypy_ini(typings: Path, pyproject: Path = ROOT / "pyproject.toml") -> str:
    """An ini mypy config: pyproject's [tool.mypy] options and overrides, reading ``typings``.

    Targets come from the command line (``packages``/``files`` are dropped); ``mypy_path`` is the
    generated folder. The stub override above is merged in whether or not pyproject has it yet.
    """
    config = dict(tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["mypy"])
    sections: dict[str, dict[str, object]] = {}
    for override in [*config.pop("overrides", []), TRT_OVERRIDE]:
        options = dict(override)
        modules = options.pop("module")
        header = f"mypy-{_ini_value(modules if isinstance(modules, list) else [modules])}"
        sections.setdefault(header, {}).update(options)
    for key in ("packages", "modules", "files", "mypy_path"):
        config.pop(key, None)
    config["mypy_path"] = str(typings)
    lines = ["[mypy]", *(f"{key} = {_ini_value(value)}" for key, value in config.items())]
    for header, options in sections.items():
        lines.append(f"\n[{header}]")
        lines.extend(f"{key} = {_ini_value(value)}" for key, value in options.items())
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class StubsEnv:
    """Generated stubs, their mypy config and a mypy cache shared by this module's tests."""

    typings: Path
    config: Path
    cache_dir: Path

    def mypy(self, *targets: Path) -> MypyResult:
        """mypy with the project's settings on ``targets``, against the generated stubs.

        ``--follow-imports=silent`` reports errors in ``targets`` only (other modules are checked
        by CI's own mypy run; mypy still reads them, and follows stubs regardless).
        """
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--config-file",
                str(self.config),
                "--cache-dir",
                str(self.cache_dir),
                "--follow-imports=silent",
                *(str(target) for target in targets),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return MypyResult(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def stubs_env(tmp_path_factory: pytest.TempPathFactory) -> StubsEnv:
    """Run tools/trt_stubs.py (twice: it must be idempotent) into a temporary folder."""
    base = tmp_path_factory.mktemp("trt_static")
    typings = base / "typings"
    outputs: list[dict[Path, bytes]] = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--out", str(typings)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        files = sorted(p for p in typings.rglob("*") if p.is_file())
        outputs.append({p.relative_to(typings): p.read_bytes() for p in files})
    assert outputs[0] == outputs[1], "a second run of tools/trt_stubs.py changed its output"
    assert sorted(str(p) for p in outputs[0] if p.suffix == ".pyi") == [
        "tensorrt/__init__.pyi",
        "tensorrt_bindings/__init__.pyi",
        "tensorrt_bindings/tensorrt.pyi",
    ]
    config = base / "mypy.ini"
    config.write_text(mypy_ini(typings), encoding="utf-8")
    return StubsEnv(typings=typings, config=config, cache_dir=base / "mypy_cache")


@needs_stubs
def test_backend_type_checks_against_tensorrt_stubs(stubs_env: StubsEnv) -> None:
    result = stubs_env.mypy(*BACKENDS)
    assert result.returncode == 0, result.output
    assert f"Success: no issues found in {len(BACKENDS)} source files" in result.output, result.output


@needs_stubs
def test_misspelled_tensorrt_call_is_caught(stubs_env: StubsEnv, tmp_path: Path) -> None:
    source = BACKEND.read_text(encoding="utf-8")
    assert source.count(REAL_CALL) == 1, f"update REAL_CALL: {REAL_CALL!r} is no longer in {BACKEND}"
    broken = source.replace(REAL_CALL, MISSPELLED_CALL)
    # Also show what mypy sees: real classes, and builtins.bool (not the stub's trt.bool) returns.
    broken += (
        "\n\nif TYPE_CHECKING:\n"
        "    reveal_type(trt.Builder)\n"
        "    reveal_type(trt.IExecutionContext.execute_async_v3)\n"
    )
    copy = tmp_path / "src" / "trt_backend_misspelled.py"  # not tensorrt.py: that would shadow TensorRT
    copy.parent.mkdir()
    copy.write_text(broken, encoding="utf-8")

    result = stubs_env.mypy(copy)
    assert result.returncode == 1, result.output
    assert '"IExecutionContext" has no attribute "execute_async_v4"' in result.output, result.output
    errors = [line for line in result.output.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "execute_async_v4" in errors[0], result.output
    assert "-> tensorrt_bindings.tensorrt.Builder" in result.output, result.output  # not Any
    assert 'stream_handle: int) -> bool"' in result.output, result.output  # not the unbound "bool?"


def test_patch_refuses_text_it_does_not_recognise() -> None:
    tool = _load_tool()
    patch = tool.TEXT_PATCHES[0]
    with pytest.raises(tool.StubsError, match="expected 1 occurrence"):
        tool.apply_text_patch("def unrelated() -> None: ...\n", patch)
    with pytest.raises(tool.StubsError, match="expected 2 'bool' annotations"):
        tool.qualify_bool_annotations(
            "from __future__ import annotations\ndef f(x: bool) -> int: ...\n", "x.pyi", 2
        )


def test_bool_annotations_become_builtins_bool() -> None:
    tool = _load_tool()
    stub = (
        "from __future__ import annotations\n"
        "class DataType: ...\n"
        "def f(flag: bool, other: list[bool]) -> bool:\n"
        '    """bool in a docstring stays."""\n'
        "bool: DataType\n"
    )
    assert tool.qualify_bool_annotations(stub, "x.pyi", 3) == (
        "from __future__ import annotations\n"
        "import builtins\n"
        "class DataType: ...\n"
        "def f(flag: builtins.bool, other: list[builtins.bool]) -> builtins.bool:\n"
        '    """bool in a docstring stays."""\n'
        "bool: DataType\n"
    )


def test_refuses_missing_or_other_version_of_stubs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = _load_tool()

    def not_installed(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(tool.metadata, "distribution", not_installed)
    with pytest.raises(tool.StubsError, match="tensorrt-stubs is not installed"):
        tool.generate(tmp_path / "typings")

    class OtherRelease:
        version = "10.14.1.48"

    monkeypatch.setattr(tool.metadata, "distribution", lambda name: OtherRelease())
    with pytest.raises(tool.StubsError, match=r"10\.14\.1\.48 is installed, but .* patches 10\.13\.0\.35\.1"):
        tool.generate(tmp_path / "typings")
    assert not (tmp_path / "typings").exists()
