"""Generate mypy-usable TensorRT type stubs from the installed ``tensorrt-stubs`` distribution.

TensorRT cannot be installed on CI, so ``levit_edge/backends/tensorrt.py`` and ``trt_*.py`` are type-checked
against the PyPI package ``tensorrt-stubs`` (installed with ``pip install --no-deps tensorrt-stubs==VERSION``;
its ``tensorrt`` dependency is not installable). As shipped, mypy silently ignores those stubs:
they sit in ``site-packages/tensorrt/`` without a ``py.typed`` marker (so, with
``ignore_missing_imports``, every ``trt.*`` name is ``Any``), and they contain syntax errors.

This script copies the stub files into a folder that mypy reads through ``mypy_path`` (default
``.cache/typings``, git-ignored), as plain ``tensorrt/`` and ``tensorrt_bindings/`` packages of
``.pyi`` files (no ``py.typed`` is needed on ``mypy_path``), normalises the wheel's CRLF line
endings to LF, and applies a few small, explicit patches (TEXT_PATCHES and BOOL_ANNOTATIONS
below, each with its reason). Every patch checks that its target occurs exactly as often as
expected, so a different stubs version fails here, loudly, instead of being checked silently
wrong. Re-running it rewrites the same output (idempotent). Only the standard library is used.

The stubs still hold errors that need no patch for type checking (unannotated helpers, names
such as ``capsule`` that are never defined, ``-> ...`` return types, which mypy reads as ``Any``);
the mypy configuration sets ``ignore_errors`` for ``tensorrt.*`` and ``tensorrt_bindings.*``.

Usage (from the repository root, with the project's virtual environment)::

    python tools/trt_stubs.py                  # writes .cache/typings/{tensorrt,tensorrt_bindings}/
    python tools/trt_stubs.py --out some/dir
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DIST_NAME = "tensorrt-stubs"
#: The patches below are written against this release; any other one is refused.
DIST_VERSION = "10.13.0.35.1"
DEFAULT_OUT = Path(".cache/typings")
#: The stub files copied, relative to site-packages (and to the output folder).
STUB_FILES = (
    "tensorrt/__init__.pyi",
    "tensorrt_bindings/__init__.pyi",
    "tensorrt_bindings/tensorrt.pyi",
)
PACKAGES = ("tensorrt", "tensorrt_bindings")

_BINDINGS = "tensorrt_bindings/tensorrt.pyi"


class StubsError(RuntimeError):
    """The stubs are missing, of another version, or no longer match a patch."""


@dataclass(frozen=True)
class TextPatch:
    """Replace ``old`` with ``new`` in one stub file; ``old`` must occur exactly ``count`` times."""

    path: str
    old: str
    new: str
    count: int
    why: str


TEXT_PATCHES: tuple[TextPatch, ...] = (
    TextPatch(
        path=_BINDINGS,
        old="power: Weights = None, channel_axis: int) -> IScaleLayer:",
        new="power: Weights = None, channel_axis: int = ...) -> IScaleLayer:",
        count=1,
        why=(
            "INetworkDefinition.add_scale_nd: a parameter without a default after defaulted ones is a "
            "syntax error. pybind11 requires channel_axis at run time; giving it a default here accepts "
            "every valid call (positional or keyword) and only misses an omitted channel_axis."
        ),
    ),
    TextPatch(
        path=_BINDINGS,
        old=", in: list[",
        new=", in_: list[",
        count=4,
        why=(
            "IPluginV2DynamicExt.get_workspace_size and IPluginV3One*.configure_plugin / "
            "get_workspace_size / on_shape_change name a parameter 'in', a keyword: a syntax error. "
            "Python code cannot pass it by keyword anyway."
        ),
    ),
)

#: Module-level ``bool: DataType`` (``trt.bool``) shadows the builtin in the stub's own annotations,
#: so ``-> bool`` would mean "the variable trt.bool" (mypy: unbound type ``bool?``, effectively Any).
#: These files get ``import builtins`` and every annotation ``bool`` becomes ``builtins.bool``;
#: ``trt.bool`` itself keeps its meaning. Value: how many ``bool`` names are rewritten.
BOOL_ANNOTATIONS: dict[str, int] = {_BINDINGS: 375}

_FUTURE_IMPORT = "from __future__ import annotations\n"


def find_stubs() -> dict[str, Path]:
    """The installed stub files by relative path; StubsError unless exactly version DIST_VERSION."""
    try:
        dist = metadata.distribution(DIST_NAME)
    except metadata.PackageNotFoundError:
        raise StubsError(
            f"{DIST_NAME} is not installed in {sys.prefix}; install it with "
            f"'pip install --no-deps {DIST_NAME}=={DIST_VERSION}' (its 'tensorrt' dependency "
            "cannot be installed without a GPU toolchain, and is not needed for type checking)"
        ) from None
    if dist.version != DIST_VERSION:
        raise StubsError(
            f"{DIST_NAME} {dist.version} is installed, but {Path(__file__).name} patches "
            f"{DIST_VERSION} only; install 'pip install --no-deps {DIST_NAME}=={DIST_VERSION}' "
            "or update the patches (and DIST_VERSION) for the new release"
        )
    found = {str(item.as_posix()): Path(str(dist.locate_file(item))) for item in dist.files or ()}
    missing = [name for name in STUB_FILES if name not in found or not found[name].is_file()]
    if missing:
        raise StubsError(f"{DIST_NAME} {dist.version} lacks {', '.join(missing)}; reinstall it")
    extra = sorted(name for name in found if name.endswith(".pyi") and name.split("/")[0] in PACKAGES)
    if extra != sorted(STUB_FILES):
        raise StubsError(f"{DIST_NAME} {dist.version} ships unexpected stub files: {extra}")
    return {name: found[name] for name in STUB_FILES}


def apply_text_patch(text: str, patch: TextPatch) -> str:
    """``text`` with ``patch`` applied; StubsError unless its target occurs exactly ``patch.count`` times."""
    found = text.count(patch.old)
    if found != patch.count:
        raise StubsError(
            f"{patch.path}: expected {patch.count} occurrence(s) of {patch.old!r}, found {found}. "
            f"Patch reason: {patch.why}"
        )
    return text.replace(patch.old, patch.new)


def qualify_bool_annotations(text: str, path: str, expected: int) -> str:
    """Rewrite every ``bool`` name the stub reads (annotations) as ``builtins.bool``.

    Uses the syntax tree, so docstrings, comments and ``trt.bool``'s own declaration are left
    alone. StubsError unless exactly ``expected`` names are rewritten.
    """
    tree = ast.parse(text, filename=path)
    spots = sorted(
        (
            (node.lineno, node.col_offset)
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and node.id == "bool" and isinstance(node.ctx, ast.Load)
        ),
        reverse=True,
    )
    if len(spots) != expected:
        raise StubsError(f"{path}: expected {expected} 'bool' annotations to qualify, found {len(spots)}")
    lines = text.splitlines(keepends=True)
    for lineno, col in spots:  # from the end, so earlier offsets stay valid
        raw = lines[lineno - 1].encode("utf-8")  # ast offsets count UTF-8 bytes
        if raw[col : col + 4] != b"bool":
            raise StubsError(f"{path}:{lineno}: no 'bool' at column {col}")
        lines[lineno - 1] = (raw[:col] + b"builtins.bool" + raw[col + 4 :]).decode("utf-8")
    text = "".join(lines)
    if text.count(_FUTURE_IMPORT) != 1:
        raise StubsError(
            f"{path}: expected one {_FUTURE_IMPORT.strip()!r} line to add 'import builtins' after"
        )
    return text.replace(_FUTURE_IMPORT, _FUTURE_IMPORT + "import builtins\n", 1)


def patched_text(path: str, text: str) -> str:
    """One stub file's text with every patch for it applied; StubsError if a patch does not fit."""
    for patch in TEXT_PATCHES:
        if patch.path == path:
            text = apply_text_patch(text, patch)
    if path in BOOL_ANNOTATIONS:
        text = qualify_bool_annotations(text, path, BOOL_ANNOTATIONS[path])
    try:
        ast.parse(text, filename=path)
    except SyntaxError as exc:
        raise StubsError(f"{path} still has a syntax error after patching: {exc}") from None
    return text


def generate(out: Path) -> list[Path]:
    """Write the patched stubs under ``out`` (replacing earlier output); the files written."""
    sources = find_stubs()
    texts = {name: patched_text(name, src.read_text(encoding="utf-8")) for name, src in sources.items()}
    for package in PACKAGES:  # refuse to replace anything this script did not write
        target = out / package
        if target.exists() and any(p.is_file() and p.suffix != ".pyi" for p in target.rglob("*")):
            raise StubsError(f"{target} holds files other than stubs; refusing to replace it")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".trt_stubs.", dir=out) as tmp:
        staging = Path(tmp)
        for name, text in texts.items():
            dest = staging / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8", newline="\n")
        for package in PACKAGES:
            target = out / package
            if target.exists():
                shutil.rmtree(target)
            (staging / package).rename(target)
    return [out / name for name in STUB_FILES]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for mypy_path (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    try:
        written = generate(args.out)
    except StubsError as exc:
        print(f"trt_stubs: error: {exc}", file=sys.stderr)
        return 1
    print(f"trt_stubs: wrote {len(written)} patched {DIST_NAME} {DIST_VERSION} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
