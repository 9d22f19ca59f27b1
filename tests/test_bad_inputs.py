"""The catalogue of bad inputs: every command, every way its inputs can be wrong, one parametrized test.

Each case builds its inputs in its own folder (which is also the command's working directory, so a
default ``artifacts/`` output would land there too) and runs the real console entry point. A case passes
when the command

* exits 1 for a user error (2 for a usage error, with Click's usage message; 5 for a run that does not
  match its manifest),
* prints exactly one line on stderr, starting ``error:`` and naming the problem (the expected fragments),
* prints no traceback anywhere, and
* leaves its folder exactly as it was: no new run directory, no ``.partial`` directory, no temporary file,
  no changed byte in an existing run (and a pickle payload did not run).

The ~50 command lines run in one module-level batch through ``tests/cli_batch.py``, which imports the CLI
once and forks a child per command line, so the whole catalogue costs about one CLI start-up plus the work
of the cases that get as far as loading a model (those use the trained fixture at 64x64: fast).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from levit_edge.data.sources import DataSpec
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.flows.export import run_export
from levit_edge.flows.job import ExportJob
from levit_edge.model.load import ModelSpec

Fixture = tuple[DatasetPaths, FixtureResult, Path]
TESTS = Path(__file__).resolve().parent
PARALLEL = 3

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    """One command line and what it must end with."""

    args: list[str | Path]
    code: int = 1
    fragments: tuple[str, ...] = ()  # each must appear in the error line
    fsize: int | None = None  # RLIMIT_FSIZE in bytes: a full disk without root
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ctx:
    """What a case builder gets: its own folder and the shared, read-only inputs."""

    dir: Path
    data: DatasetPaths
    result: FixtureResult
    checkpoint: Path
    base_run: Path  # a complete FP32 run with class names (validated on ``small_val``)
    small_val: Path  # 10 class folders x 2 images

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def model_args(self, checkpoint: Path | None = None) -> list[str | Path]:
        return [
            "--model", self.result.model_name,
            "--img-size", str(self.result.img_size),
            "--num-classes", str(len(self.result.classes)),
            "--checkpoint", checkpoint or self.checkpoint,
        ]  # fmt: skip

    def export(self, *extra: str | Path, checkpoint: Path | None = None) -> list[str | Path]:
        return ["export", *self.model_args(checkpoint), "--out", self.out, "--name", "r", *extra]

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def run_copy(self) -> Path:
        """A private copy of the base run (hard links: cheap; a rewrite-by-rename shows as a change)."""
        dst = self.dir / "run"
        shutil.copytree(self.base_run, dst, copy_function=os.link)
        return dst

    def val_folders(self, names: list[str], per_class: int = 2) -> Path:
        """Class folders of real fixture images under the given names."""
        root = self.dir / "val"
        for i, name in enumerate(names):
            (root / name).mkdir(parents=True)
            source = self.data.val / self.data.classes[i % len(self.data.classes)]
            for png in sorted(source.glob("*.png"))[:per_class]:
                shutil.copy(png, root / name / png.name)
        return root

    def images(self, folder: str, n: int, suffix: str = ".png") -> Path:
        root = self.dir / folder
        root.mkdir(parents=True)
        for i, (png, _) in enumerate(self.data.samples("calib")[:: max(1, 200 // n)][:n]):
            Image.open(png).convert("RGB").save(root / f"img{i:03d}{suffix}")
        return root


class _Payload:
    """Pickles as a call to os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _state(ctx: Ctx) -> dict[str, torch.Tensor]:
    return dict(torch.load(ctx.checkpoint, map_location="cpu", weights_only=True))


# ---- the catalogue ------------------------------------------------------------------------------------
# name -> builder. Names say command and fault; fragments pin the line to the input at fault.

Builder = Callable[[Ctx], Case]
CASES: dict[str, Builder] = {}


def case(name: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        CASES[name] = fn
        return fn

    return register


# export: weights
@case("export-missing-checkpoint")
def _(c: Ctx) -> Case:
    return Case(c.export(checkpoint=c.dir / "nope.pth"), fragments=("checkpoint not found", "nope.pth"))


@case("export-empty-checkpoint")
def _(c: Ctx) -> Case:
    return Case(c.export(checkpoint=c.file("empty.pth", b"")), fragments=("checkpoint is empty",))


@case("export-checkpoint-is-a-folder")
def _(c: Ctx) -> Case:
    (c.dir / "weights").mkdir()
    return Case(c.export(checkpoint=c.dir / "weights"), fragments=("not a file", "weights"))


@case("export-truncated-checkpoint")
def _(c: Ctx) -> Case:
    data = c.checkpoint.read_bytes()
    path = c.file("half.pth", data[: len(data) // 2])
    return Case(c.export(checkpoint=path), fragments=("cannot read checkpoint", "half.pth"))


@case("export-pickle-payload")
def _(c: Ctx) -> Case:
    marker = c.dir / "PWNED"  # must never appear: the snapshot of the folder would show it
    path = c.dir / "evil.pth"
    torch.save({"state_dict": _state(c), "hook": _Payload(marker)}, path)
    return Case(c.export(checkpoint=path), fragments=("arbitrary unpickling", "refused"))


@case("export-pickle-payload-plain-pickle")
def _(c: Ctx) -> Case:
    path = c.file("evil.pkl", pickle.dumps(_Payload(c.dir / "PWNED")))
    return Case(c.export(checkpoint=path), fragments=("evil.pkl",))


@case("export-wrong-checkpoint-keys")
def _(c: Ctx) -> Case:
    path = c.dir / "renamed.pth"
    torch.save({f"backbone.{k}": v for k, v in _state(c).items()}, path)
    return Case(c.export(checkpoint=path), fragments=("missing keys", "unexpected keys", "backbone."))


@case("export-wrong-checkpoint-shapes")
def _(c: Ctx) -> Case:
    args = c.export()
    args[args.index("--model") + 1] = "levit_128"  # wider than the levit_128s the weights are for
    return Case(args, fragments=("does not fit levit_128", "wrong shapes"))


@case("export-non-levit-checkpoint")
def _(c: Ctx) -> Case:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    path = c.dir / "convnet.pth"
    torch.save(net.state_dict(), path)
    return Case(c.export(checkpoint=path), fragments=("does not fit", "missing keys"))


@case("export-non-levit-model-name")
def _(c: Ctx) -> Case:
    args = c.export()
    args[args.index("--model") + 1] = "resnet18"
    return Case(args, fragments=("'resnet18' is not a timm LeViT",))


@case("export-wrong-num-classes")
def _(c: Ctx) -> Case:
    return Case(c.export("--num-classes", "7"), fragments=("--num-classes", "head"))


@case("export-bad-img-size")
def _(c: Ctx) -> Case:
    return Case(c.export("--img-size", "50"), fragments=("--img-size must be a multiple of 16",))


@case("export-img-size-absurd")
def _(c: Ctx) -> Case:
    return Case(c.export("--img-size", "4096"), fragments=("--img-size", "between 32 and 1024"))


@case("export-num-classes-absurd")
def _(c: Ctx) -> Case:
    return Case(c.export("--num-classes", str(10**11)), fragments=("--num-classes must be between",))


@case("export-seed-beyond-64-bits")
def _(c: Ctx) -> Case:
    return Case(c.export("--seed", str(2**64)), fragments=("--seed must be between",))


# export: data
@case("export-val-classes-do-not-match")
def _(c: Ctx) -> Case:
    val = c.val_folders(["a", "b", "c"])
    return Case(c.export("--val", val), fragments=("3 class folders", "10 classes"))


@case("export-corrupt-val-image")
def _(c: Ctx) -> Case:
    val = c.val_folders(list(c.data.classes))
    bad = sorted((val / c.data.classes[4]).glob("*.png"))[1]
    bad.write_bytes(os.urandom(3000))
    return Case(c.export("--val", val), fragments=("cannot read image", bad.name))


@case("export-val-image-decompression-bomb")
def _(c: Ctx) -> Case:
    # Beyond Pillow's MAX_IMAGE_PIXELS (89.5 Mpx) but under twice it: Pillow only warns, on stderr
    val = c.val_folders(list(c.data.classes), per_class=1)
    Image.new("L", (9500, 9500)).save(val / c.data.classes[2] / "huge.png", optimize=False, compress_level=1)
    return Case(c.export("--val", val), fragments=("cannot read image", "huge.png", "decompression bomb"))


@case("export-truncated-calib-jpeg")
def _(c: Ctx) -> Case:
    calib = c.images("calib", 6, ".jpg")
    bad = sorted(calib.glob("*.jpg"))[2]
    bad.write_bytes(bad.read_bytes()[:200])
    args = c.export("--int8", "--target", "ort", "--calib", calib)
    return Case(args, fragments=("cannot read image", bad.name))


@case("export-empty-calib-folder")
def _(c: Ctx) -> Case:
    (c.dir / "calib").mkdir()
    args = c.export("--int8", "--target", "ort", "--calib", c.dir / "calib")
    return Case(args, fragments=("no images found",))


@case("export-empty-val-list")
def _(c: Ctx) -> Case:
    return Case(c.export("--val", c.file("val.txt", "# nothing\n")), fragments=("lists no images",))


@case("export-calib-array-wrong-shape")
def _(c: Ctx) -> Case:
    path = c.dir / "calib.npy"
    np.save(path, np.zeros((4, 10), dtype=np.float32))
    args = c.export("--int8", "--target", "ort", "--calib", path)
    return Case(args, fragments=("4-D image array",))


@case("export-exclude-everything")
def _(c: Ctx) -> Case:
    val = c.val_folders(list(c.data.classes), per_class=1)
    names = sorted({p.name for p in val.rglob("*.png")})  # exclude lists match base names
    exclude = c.file("exclude.txt", "\n".join(names) + "\n")
    return Case(c.export("--val", val, "--exclude", exclude), fragments=("excluded",))


# export: labels that cannot be right, class order (issue 13)
@case("export-val-list-label-beyond-classes")
def _(c: Ctx) -> Case:
    val = c.val_folders(list(c.data.classes), per_class=1)
    lines = [f"{p.relative_to(val).as_posix()} {i}" for i, p in enumerate(sorted(val.rglob("*.png")))]
    listing = c.file("val/val.txt", "\n".join(lines) + "\n")  # labels 0..9, one image each ...
    listing.write_text(listing.read_text().replace(" 9\n", " 10\n"))  # ... but 10 for the last
    return Case(c.export("--val", listing), fragments=("1 label(s) up to 10", "[0, 10)"))


@case("export-val-list-label-overflows-int64")
def _(c: Ctx) -> Case:
    val = c.val_folders(list(c.data.classes[:1]), per_class=1)
    name = next(val.rglob("*.png")).relative_to(val).as_posix()
    listing = c.file("val/val.txt", f"{name} {2**63}\n")
    return Case(c.export("--val", listing), fragments=("line 1", "not a class index"))


@case("export-val-npz-label-beyond-classes")
def _(c: Ctx) -> Case:
    images = np.zeros((4, 16, 16, 3), np.uint8)
    np.savez(c.dir / "val.npz", images=images, labels=np.array([0, 1, 2, 12]))
    return Case(c.export("--val", c.dir / "val.npz"), fragments=("up to 12", "[0, 10)"))


@case("export-val-stray-image-beside-class-folders")
def _(c: Ctx) -> Case:
    val = c.val_folders(list(c.data.classes), per_class=1)
    shutil.copy(next(val.rglob("*.png")), val / "stray.png")
    return Case(c.export("--val", val), fragments=("outside them", "stray.png"))


@case("export-val-numbered-folders-lexical-order")
def _(c: Ctx) -> Case:
    # folders 2..11 hold classes 0..9 (timm's natural order); lexical order (10, 11, 2, ...) mislabels
    # every image: FP32 top-1 near 0 % used to pass the gate with a drop of 0
    val = c.val_folders([str(i + 2) for i in range(len(c.data.classes))])
    args = c.export("--val", val, "--class-order", "lexical")
    return Case(args, fragments=("at or below chance", "--class-order natural", "--allow-chance-accuracy"))


@case("export-val-folder-not-in-class-list")
def _(c: Ctx) -> Case:
    val = c.val_folders(list(c.data.classes), per_class=1)
    classes = c.file("classes.txt", "\n".join(c.data.classes[:-1]) + "\n")
    args = c.export("--val", val, "--class-list", classes)
    return Case(args, fragments=(f"class folder '{c.data.classes[-1]}' is not in the class list",))


# export: non-finite data and weights (issue 13)
def _preprocessed(c: Ctx, n: int = 4) -> np.ndarray:
    return np.zeros((n, 3, c.result.img_size, c.result.img_size), np.float32)


@case("export-calib-npy-nan-pixel")
def _(c: Ctx) -> Case:
    images = _preprocessed(c)
    images[2, 1, 5, 5] = np.nan
    np.save(c.dir / "calib.npy", images)
    args = c.export("--int8", "--target", "ort", "--calib", c.dir / "calib.npy")
    return Case(args, fragments=("calib.npy[2]", "non-finite"))


@case("export-calib-npy-inf-pixel")
def _(c: Ctx) -> Case:
    images = _preprocessed(c)
    images[0, 0, 0, 0] = np.inf
    np.save(c.dir / "calib.npy", images)
    args = c.export("--int8", "--target", "ort", "--calib", c.dir / "calib.npy")
    return Case(args, fragments=("calib.npy[0]", "non-finite"))


@case("export-val-npz-nan-image")
def _(c: Ctx) -> Case:
    images = _preprocessed(c)
    images[1] = np.nan
    np.savez(c.dir / "val.npz", images=images, labels=np.array([0, 1, 2, 3]))
    return Case(c.export("--val", c.dir / "val.npz"), fragments=("val.npz[1]", "non-finite"))


def _bad_weight(c: Ctx, how: str, suffix: str = ".pth") -> Path:
    state = _state(c)
    key = next(k for k in state if k.endswith("qkv.linear.weight"))
    if how == "nan":
        state[key][0, 0] = float("nan")
    elif how == "bool":
        state[key] = state[key] > 0
    elif how == "int8":
        state[key] = (state[key] * 100).to(torch.int8)
    elif how == "meta":
        state[key] = torch.empty(state[key].shape, device="meta")
    path = c.dir / f"{how}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path


@case("export-checkpoint-nan-weight")
def _(c: Ctx) -> Case:
    return Case(c.export(checkpoint=_bad_weight(c, "nan")), fragments=("qkv.linear.weight", "non-finite"))


@case("export-checkpoint-bool-weight")
def _(c: Ctx) -> Case:
    args = c.export(checkpoint=_bad_weight(c, "bool"))
    return Case(args, fragments=("is bool, expected floating point",))


@case("export-checkpoint-meta-weight")
def _(c: Ctx) -> Case:
    return Case(c.export(checkpoint=_bad_weight(c, "meta")), fragments=("is a meta tensor",))


@case("export-safetensors-int8-weight")
def _(c: Ctx) -> Case:
    args = c.export(checkpoint=_bad_weight(c, "int8", ".safetensors"))
    return Case(args, fragments=("is int8, expected floating point",))


@case("export-checkpoint-key-not-in-checkpoint")
def _(c: Ctx) -> Case:
    path = c.dir / "train.pth"
    torch.save({"model": _state(c), "epoch": 3}, path)
    args = c.export("--checkpoint-key", "model_ema", checkpoint=path)
    return Case(args, fragments=("no weight set 'model_ema'", "weight sets: model"))


# export: list files
@case("export-list-mixed-labels")
def _(c: Ctx) -> Case:
    c.images("imgs", 2)
    a, b = sorted((c.dir / "imgs").glob("*.png"))
    listing = c.file("calib.txt", f"imgs/{a.name} 1\nimgs/{b.name}\n")
    args = c.export("--int8", "--target", "ort", "--calib", listing)
    return Case(args, fragments=("line 2", "all-or-none"))


@case("export-list-escapes-data-root")
def _(c: Ctx) -> Case:
    c.images("imgs", 1)
    (c.dir / "root").mkdir()
    name = next((c.dir / "imgs").glob("*.png")).name
    listing = c.file("calib.txt", f"../imgs/{name}\n")
    args = c.export("--int8", "--target", "ort", "--calib", listing, "--data-root", c.dir / "root")
    return Case(args, fragments=("line 1", "may not leave the data root"))


@case("export-list-absolute-path")
def _(c: Ctx) -> Case:
    listing = c.file("calib.txt", "ok.png\n/etc/passwd\n")
    return Case(c.export("--int8", "--target", "ort", "--calib", listing), fragments=("line 2", "absolute"))


@case("export-list-not-utf8")
def _(c: Ctx) -> Case:
    listing = c.file("val.txt", b"caf\xe9.png\n")
    return Case(c.export("--val", listing), fragments=("cannot read list file",))


@case("export-list-image-missing")
def _(c: Ctx) -> Case:
    listing = c.file("val.txt", "gone/a.png 0\n")
    return Case(c.export("--val", listing), fragments=("listed image not found", "a.png"))


# export: config files
@case("export-config-not-toml")
def _(c: Ctx) -> Case:
    cfg = c.file("edge.toml", 'model = "levit_128s\nint8 = true\n')
    return Case(["export", "--config", cfg], fragments=("not valid TOML", "edge.toml"))


@case("export-config-wrong-type")
def _(c: Ctx) -> Case:
    cfg = c.file("edge.toml", 'img_size = "64"\n')
    return Case(["export", "--config", cfg], fragments=("'img_size' must be int",))


@case("export-config-missing")
def _(c: Ctx) -> Case:
    return Case(["export", "--config", c.dir / "nope.toml"], fragments=("config file not found",))


# export: output
@case("export-out-is-a-file")
def _(c: Ctx) -> Case:
    target = c.file("out", "a regular file\n")
    return Case(c.export(), fragments=("cannot create output directory", str(target)))


@case("export-disk-full")
def _(c: Ctx) -> Case:
    # 1 MiB file-size limit: model.fp32.onnx (28 MB) cannot be written
    return Case(c.export(), fsize=1 << 20, fragments=("cannot write model.fp32.onnx", "File too large"))


@case("export-existing-run-without-force")
def _(c: Ctx) -> Case:
    shutil.copytree(c.base_run, c.out / "r", copy_function=os.link)
    return Case(c.export(), fragments=("already exists", "--force"))


@case("export-name-escapes-out")
def _(c: Ctx) -> Case:
    args = c.export()
    args[args.index("--name") + 1] = "../escape"
    return Case(args, fragments=("--name must be a plain directory name",))


# export: what stands at out/NAME (issue 14)
@case("export-force-over-a-folder-that-is-not-a-run")
def _(c: Ctx) -> Case:
    c.file("out/r/precious.txt", "keep me\n")
    c.file("out/r/sub/thesis.tex", "years of work\n")
    return Case(c.export("--force"), fragments=("not a levit-edge run", "--force replaces runs only"))


@case("export-force-over-a-symlinked-run")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    c.out.mkdir()
    (c.out / "r").symlink_to(run)
    return Case(c.export("--force"), fragments=("is a symbolic link",))


@case("export-name-is-a-dangling-symlink")
def _(c: Ctx) -> Case:
    c.out.mkdir()
    (c.out / "r").symlink_to(c.dir / "nowhere")
    return Case(c.export(), fragments=("is a symbolic link",))


@case("export-name-too-long")
def _(c: Ctx) -> Case:
    args = c.export()
    args[args.index("--name") + 1] = "n" * 250
    return Case(args, fragments=("--name is too long",))


@case("export-name-with-a-newline")
def _(c: Ctx) -> Case:
    args = c.export()
    args[args.index("--name") + 1] = "a\nb"
    return Case(args, fragments=("--name must be a plain directory name",))


@case("export-name-a-lone-space")
def _(c: Ctx) -> Case:
    args = c.export()
    args[args.index("--name") + 1] = " "
    return Case(args, fragments=("--name must be a plain directory name",))


@case("export-out-inside-a-run")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    args = c.export()
    args[args.index("--out") + 1] = run / "sub"
    return Case(args, fragments=("is inside the run", str(run)))


@case("export-calib-shape-inferred-model-truncated")
def _(c: Ctx) -> Case:
    # Room for model.fp32.onnx but not for ONNX Runtime's larger shape-inferred copy of it
    limit = (c.base_run / "model.fp32.onnx").stat().st_size + 4096
    args = c.export("--int8", "--target", "ort", "--calib", c.data.calib)
    return Case(args, fsize=limit, fragments=("model.fp32-inferred.onnx", "truncated"))


@case("export-ort-format-disk-full")
def _(c: Ctx) -> Case:
    # Room for model.fp32.onnx but not for the (slightly larger) model.fp32.ort ONNX Runtime writes itself
    limit = (c.base_run / "model.fp32.onnx").stat().st_size + 8192
    args = c.export("--target", "ort", "--ort-format-fp32")
    return Case(args, fsize=limit, fragments=("cannot write model.fp32.ort", "ONNX Runtime"))


# over-long paths: one line naming the path, no folder made on the way (ENAMETOOLONG)
_LONG_NAME = "n" * 300  # beyond NAME_MAX (255 bytes) of every common file system
_DEEP = "/".join(["d" * 200] * 22)  # every component fits; the whole is beyond PATH_MAX (4096)


@case("export-out-component-too-long")
def _(c: Ctx) -> Case:
    args = c.export()
    args[args.index("--out") + 1] = c.dir / _LONG_NAME / "runs"
    return Case(args, fragments=("--out", "too long", _LONG_NAME))


@case("export-out-path-too-long")
def _(c: Ctx) -> Case:
    args = c.export()
    args[args.index("--out") + 1] = c.dir / _DEEP
    return Case(args, fragments=("--out", "too long"))


@case("export-val-path-too-long")
def _(c: Ctx) -> Case:
    return Case(c.export("--val", c.dir / _LONG_NAME), fragments=("--val", "too long", _LONG_NAME))


@case("export-checkpoint-path-too-long")
def _(c: Ctx) -> Case:
    args = c.export(checkpoint=c.dir / f"{_LONG_NAME}.pth")
    return Case(args, fragments=("--checkpoint", "too long", _LONG_NAME))


@case("export-calib-path-too-long")
def _(c: Ctx) -> Case:
    args = c.export("--int8", "--target", "ort", "--calib", c.dir / _DEEP / "calib")
    return Case(args, fragments=("--calib", "too long"))


# export: conflicting or invalid options
@case("export-checkpoint-and-pretrained")
def _(c: Ctx) -> Case:
    return Case(c.export("--pretrained"), fragments=("exclusive",))


@case("export-int8-with-fp32-only-target")
def _(c: Ctx) -> Case:
    args = c.export("--int8", "--target", "onnx", "--calib", c.data.calib)
    return Case(args, fragments=("--int8", "--target"))


@case("export-bad-calib-size")
def _(c: Ctx) -> Case:
    args = c.export("--int8", "--target", "ort", "--calib", c.data.calib, "--calib-size", "0")
    return Case(args, fragments=("--calib-size must be at least 1",))


@case("export-bad-batch-size")
def _(c: Ctx) -> Case:
    return Case(c.export("--batch-size", "0"), fragments=("--batch-size must be at least 1",))


@case("export-nan-max-drop")
def _(c: Ctx) -> Case:
    return Case(c.export("--max-drop", "nan"), fragments=("--max-drop",))


# validate
@case("validate-not-a-run")
def _(c: Ctx) -> Case:
    (c.dir / "empty").mkdir()
    args = ["validate", c.dir / "empty", "--val", c.small_val]
    return Case(args, fragments=("not a complete run directory",))


@case("validate-platform-not-set-up")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    args = [
        "validate",
        run,
        "--val",
        c.small_val,
        "--platform",
        "aarch64",
        "--platform-cache",
        c.dir / "none",
    ]
    return Case(args, fragments=("aarch64 platform is not set up", "levit-edge setup-platform aarch64"))


@case("validate-platform-unknown")
def _(c: Ctx) -> Case:
    args = ["validate", c.run_copy(), "--val", c.small_val, "--platform", "sparc"]
    return Case(args, fragments=("--platform must be one of aarch64", "sparc"))


@case("validate-platform-images-zero")
def _(c: Ctx) -> Case:
    args = ["validate", c.run_copy(), "--val", c.small_val, "--platform", "aarch64", "--platform-images", "0"]
    return Case(args, fragments=("--platform-images must be between 1",))


@case("setup-platform-unknown")
def _(c: Ctx) -> Case:
    return Case(["setup-platform", "riscv64", "--cache", c.dir / "p"], fragments=("platform must be one of",))


@case("setup-platform-bad-release")
def _(c: Ctx) -> Case:
    args = ["setup-platform", "aarch64", "--cache", c.dir / "p", "--onnxruntime", "latest"]
    return Case(args, fragments=("--onnxruntime must be a release number", "latest"))


@case("validate-class-names-differ")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    val = c.val_folders([f"other{i}" for i in range(10)], per_class=1)
    return Case(["validate", run, "--val", val], fragments=("differ from the class names",))


@case("validate-model-is-not-onnx")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "model.fp32.onnx").unlink()
    (run / "model.fp32.onnx").write_bytes(b"\x08\x07garbage" * 100)
    # refused before the model is read: it is not the file the manifest hashed
    args = ["validate", run, "--val", c.small_val]
    return Case(args, fragments=("does not match its manifest.json", "model.fp32.onnx: size"))


@case("validate-labels-at-chance")
def _(c: Ctx) -> Case:
    # every label shifted by one class: the run's FP32 model scores ~0 %, which is no result to gate on
    run = c.run_copy()
    names = list(c.data.classes)
    lines = [f"{p.parent.name}/{p.name} {(names.index(p.parent.name) + 1) % len(names)}"
             for p in sorted(c.small_val.rglob("*.png"))]  # fmt: skip
    listing = c.file("val.txt", "\n".join(lines) + "\n")
    args = ["validate", run, "--val", listing, "--data-root", c.small_val]
    return Case(args, fragments=("at or below chance", "--allow-chance-accuracy"))


@case("validate-label-beyond-classes")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    name = next(c.small_val.rglob("*.png")).relative_to(c.small_val).as_posix()
    listing = c.file("val.txt", f"{name} 10\n")
    args = ["validate", run, "--val", listing, "--data-root", c.small_val]
    return Case(args, fragments=("up to 10", "[0, 10)"))


@case("validate-missing-val")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    return Case(["validate", run, "--val", c.dir / "nope"], fragments=("data path not found",))


@case("validate-negative-max-drop")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    args = ["validate", run, "--val", c.small_val, "--max-drop", "-1"]
    return Case(args, fragments=("--max-drop must be a non-negative",))


# validate, bench: a rewrite never launders a changed run (issue 14)
def _swapped_model(c: Ctx, run: Path) -> None:
    import onnx

    model = onnx.load(str(run / "model.fp32.onnx"))
    onnx.helper.set_model_props(model, {"swapped": "yes"})  # a valid model, not the one hashed
    (run / "model.fp32.onnx").unlink()
    onnx.save(model, str(run / "model.fp32.onnx"))


@case("validate-model-swapped-after-the-run")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    _swapped_model(c, run)
    args = ["validate", run, "--val", c.small_val]
    return Case(args, fragments=("does not match its manifest.json", "model.fp32.onnx", "refusing"))


@case("validate-file-added-to-the-run")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "evil.sh").write_text("#!/bin/sh\n")
    args = ["validate", run, "--val", c.small_val]
    return Case(args, fragments=("evil.sh: not listed", "refusing to re-validate"))


@case("validate-hash-edited-in-the-manifest")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["model.fp32.onnx"]["sha256"] = "0" * 64
    (run / "manifest.json").unlink()
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    args = ["validate", run, "--val", c.small_val]
    return Case(args, fragments=("does not match its manifest.json", "manifest_sha256", "refusing"))


@case("validate-fifo-named-png")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    val = c.dir / "val"
    shutil.copytree(c.small_val, val)
    os.mkfifo(val / c.data.classes[3] / "x.png")  # nobody writes to it: reading it would block forever
    return Case(["validate", run, "--val", val], fragments=("x.png", "not a regular file (a FIFO)"))


# validate: a run whose models disagree with its manifest, re-sealed as someone with write access could
def _reseal(run: Path) -> None:
    """Re-hash the run's files into its manifest and re-seal it: what an attacker with write access does."""
    from levit_edge.runs.layout import MANIFEST
    from levit_edge.runs.manifest import DIGEST_KEY, write_manifest

    manifest = json.loads((run / MANIFEST).read_text())
    body = {k: v for k, v in manifest.items() if k not in ("files", "schema_version", DIGEST_KEY)}
    (run / MANIFEST).unlink()  # a hard link to the base run: never write through it
    write_manifest(run, body)


def _set_metadata(path: Path, key: str, edit: Callable[[dict[str, object]], None]) -> None:
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    value = json.loads(props[key])
    edit(value)
    onnx.helper.set_model_props(model, {**props, key: json.dumps(value)})
    path.unlink()
    onnx.save(model, str(path))


def _size_model(c: Ctx, path: Path, size: int) -> None:
    """A small valid ONNX classifier taking ``size`` px images, with the run's metadata but that size."""
    import onnx
    from onnx import TensorProto, helper

    source = onnx.load(str(c.base_run / "model.fp32.onnx"), load_external_data=False)
    props = {p.key: p.value for p in source.metadata_props}
    pre = json.loads(props["levit_edge.preprocess"])
    pre["input_size"] = [3, size, size]
    classes = len(c.result.classes)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, classes], [0.1] * (3 * classes))
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "other-size",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {**props, "levit_edge.preprocess": json.dumps(pre)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@case("validate-model-metadata-input-size-absurd")
def _(c: Ctx) -> Case:
    # The model's metadata asks for 2**40 px images (validate used to allocate for it): the manifest says 64
    run = c.run_copy()
    absurd = [3, 2**40, 2**40]
    _set_metadata(run / "model.fp32.onnx", "levit_edge.preprocess", lambda p: p.update(input_size=absurd))
    _reseal(run)
    args = ["validate", run, "--val", c.small_val]
    return Case(args, fragments=("model.fp32.onnx", "manifest.json", "input_size"))


@case("validate-manifest-and-metadata-input-size-absurd")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    absurd = [3, 2**40, 2**40]
    _set_metadata(run / "model.fp32.onnx", "levit_edge.preprocess", lambda p: p.update(input_size=absurd))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["preprocess"]["input_size"] = absurd
    (run / "manifest.json").unlink()
    (run / "manifest.json").write_text(json.dumps(manifest))
    _reseal(run)
    return Case(["validate", run, "--val", c.small_val], fragments=("input_size", "at most 1024"))


@case("validate-run-mixing-image-sizes")
def _(c: Ctx) -> Case:
    # An INT8 model slot holding a model exported at 80 px beside the 64 px FP32 model, manifest re-sealed
    run = c.run_copy()
    _size_model(c, run / "model.int8.ort.onnx", 80)
    _reseal(run)
    args = ["validate", run, "--val", c.small_val]
    return Case(args, fragments=("model.int8.ort.onnx", "80x80", "64x64"))


@case("bench-run-mixing-image-sizes")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    _size_model(c, run / "model.int8.ort.onnx", 80)
    _reseal(run)
    args = ["bench", run, "--no-torch", "--rounds", "1", "--repeat", "1", "--warmup", "0", "--batches", "1"]
    return Case([*args, "--threads", "1"], fragments=("model.int8.ort.onnx", "80x80", "64x64"))


def _set_prop(path: Path, key: str, value: str) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, key: value})
    path.unlink()
    onnx.save(model, str(path))


@case("validate-model-metadata-not-json")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    _set_prop(run / "model.fp32.onnx", "levit_edge.preprocess", "{input_size: [3, 64, 64]")
    _reseal(run)
    args = ["validate", run, "--val", c.small_val]
    return Case(args, fragments=("model.fp32.onnx", "levit_edge.preprocess", "not JSON"))


@case("validate-model-metadata-num-classes-not-a-number")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    _set_prop(run / "model.fp32.onnx", "levit_edge.num_classes", "ten")
    _reseal(run)
    args = ["validate", run, "--val", c.small_val]
    return Case(args, fragments=("model.fp32.onnx", "num_classes"))


@case("validate-threads-beyond-64-bits")
def _(c: Ctx) -> Case:
    args = ["validate", c.run_copy(), "--val", c.small_val, "--threads", str(2**64)]
    return Case(args, fragments=("--threads must be",))


@case("debug-truncated-int8-model")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "model.int8.ort.onnx").write_bytes((run / "model.fp32.onnx").read_bytes()[:100_000])
    _reseal(run)
    args = ["debug", run, "--no-save", "--val", c.small_val, "--calib", c.small_val, "--samples", "2"]
    return Case(args, fragments=("model.int8.ort.onnx", "is not an ONNX model"))


@case("bench-file-added-to-the-run")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "evil.sh").write_text("#!/bin/sh\n")
    args = ["bench", run, "--no-torch", "--rounds", "1", "--repeat", "1", "--warmup", "0"]
    return Case([*args, "--batches", "1", "--threads", "1"], fragments=("evil.sh", "refusing"))


# verify
@case("verify-missing-dir")
def _(c: Ctx) -> Case:
    return Case(["verify", c.dir / "nope"], fragments=("not a run directory",))


@case("verify-flipped-byte")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    report = run / "report.json"
    data = bytearray(report.read_bytes())
    data[10] ^= 0x01
    report.unlink()
    report.write_bytes(bytes(data))
    return Case(["verify", run], fragments=("1 file(s) do not match manifest.json: report.json",), code=5)


@case("verify-removed-file")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "report.md").unlink()
    return Case(["verify", run], fragments=("do not match manifest.json: report.md",), code=5)


@case("verify-added-file")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "notes.txt").write_text("added after the run\n")
    return Case(["verify", run], fragments=("do not match manifest.json: notes.txt",), code=5)


@case("verify-status-edited-in-the-manifest")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "failed" if manifest["status"] == "passed" else "passed"
    (run / "manifest.json").unlink()
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return Case(["verify", run], code=5, fragments=("do not match manifest.json: manifest.json",))


@case("verify-manifest-not-json")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "manifest.json").unlink()
    (run / "manifest.json").write_text("{not json")
    return Case(["verify", run], fragments=("not valid JSON",))


@case("verify-manifest-files-malformed")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "manifest.json").unlink()
    (run / "manifest.json").write_text(json.dumps({"files": ["model.fp32.onnx"]}))
    return Case(["verify", run], fragments=("not a levit-edge manifest",))


# inspect
@case("inspect-truncated-onnx")
def _(c: Ctx) -> Case:
    path = c.file("model.onnx", (c.base_run / "model.fp32.onnx").read_bytes()[:5000])
    return Case(["inspect", path], fragments=("is not an ONNX model", "model.onnx"))


@case("inspect-empty-onnx")
def _(c: Ctx) -> Case:
    path = c.file("model.onnx", b"")
    return Case(["inspect", path], fragments=("is not an ONNX model",))


@case("inspect-missing")
def _(c: Ctx) -> Case:
    return Case(["inspect", c.dir / "nope.onnx"], fragments=("not found",))


@case("inspect-json-not-a-manifest")
def _(c: Ctx) -> Case:
    path = c.file("report.json", "{}")
    return Case(["inspect", path], fragments=("is not a manifest.json",))


@case("inspect-manifest-files-entry-malformed")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["report.md"] = "not an entry"
    (run / "manifest.json").unlink()
    (run / "manifest.json").write_text(json.dumps(manifest))
    return Case(["inspect", run], fragments=("not a levit-edge manifest", "sha256/size"))


# check-trt, build-engine
@case("check-trt-image-not-onnx")
def _(c: Ctx) -> Case:
    png = c.data.samples("val")[0][0]
    path = c.file("model.onnx", png.read_bytes())
    return Case(["check-trt", path], fragments=("model.onnx",))


@case("check-trt-missing")
def _(c: Ctx) -> Case:
    return Case(["check-trt", c.dir / "nope.onnx"], fragments=("nope.onnx",))


@case("build-engine-missing")
def _(c: Ctx) -> Case:
    return Case(["build-engine", c.dir / "nope.onnx"], fragments=("model not found",))


@case("build-engine-bad-batch-range")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    args = ["build-engine", run / "model.fp32.onnx", "--min-batch", "4", "--opt-batch", "2"]
    return Case(args, fragments=("min <= opt <= max",))


@case("build-engine-plan-exists")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (run / "engine.plan").write_bytes(b"an engine built earlier")
    args = ["build-engine", run / "model.fp32.onnx", "--plan", run / "engine.plan"]
    return Case(args, fragments=("already exists", "--force"))


@case("build-engine-plan-is-a-directory")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    (c.dir / "plans").mkdir()
    args = ["build-engine", run / "model.fp32.onnx", "--plan", c.dir / "plans", "--force"]
    return Case(args, fragments=("is a directory", "give an engine file path"))


# bench
@case("bench-not-a-run")
def _(c: Ctx) -> Case:
    (c.dir / "empty").mkdir()
    return Case(["bench", c.dir / "empty"], fragments=("has no model.fp32.onnx",))


@case("bench-bad-batches")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    return Case(["bench", run, "--batches", "1,x"], fragments=("--batches must be a comma-separated",))


@case("bench-zero-rounds")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    return Case(["bench", run, "--rounds", "0"], fragments=("--rounds",))


@case("bench-budget-inf")
def _(c: Ctx) -> Case:
    return Case(["bench", c.run_copy(), "--budget", "inf"], fragments=("--budget must be seconds",))


@case("bench-huge-batches")
def _(c: Ctx) -> Case:
    run = c.run_copy()
    return Case(["bench", run, "--batches", "1,1000000000"], fragments=("--batches must be integers from 1",))


# demo: options are checked before the fixture is generated (which takes minutes)
@case("demo-negative-max-drop")
def _(c: Ctx) -> Case:
    args = ["demo", "--cache", c.dir / "cache", "--out", c.out, "--max-drop", "-1"]
    return Case(args, fragments=("--max-drop must be a non-negative",))


@case("demo-bad-name")
def _(c: Ctx) -> Case:
    args = ["demo", "--cache", c.dir / "cache", "--out", c.out, "--name", "a/b"]
    return Case(args, fragments=("--name must be a plain directory name",))


# usage errors: Click's message, exit 2
@case("usage-unknown-option")
def _(c: Ctx) -> Case:
    return Case(["validate", "--bogus"], code=2)


@case("usage-not-an-integer")
def _(c: Ctx) -> Case:
    return Case(c.export("--img-size", "abc"), code=2)


@case("usage-unknown-command")
def _(c: Ctx) -> Case:
    return Case(["frobnicate"], code=2)


@case("usage-missing-argument")
def _(c: Ctx) -> Case:
    return Case(["verify"], code=2)


# ---- running the batch ----------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too): files by sha256, folders and links by kind."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"link:{os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        elif not path.is_file():  # a FIFO: reading it would block
            out[rel] = "special"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: int
    stdout: str
    stderr: str
    before: dict[str, str]
    after: dict[str, str]
    seconds: float

    def __str__(self) -> str:
        args = " ".join(str(a) for a in self.case.args)
        return (
            f"levit-edge {args}\n-> exit {self.code} after {self.seconds}s\n"
            f"--- stdout\n{self.stdout[-2000:]}\n--- stderr\n{self.stderr[-4000:]}"
        )


def _base_run(root: Path, fx: Fixture, small_val: Path) -> Path:
    _, result, checkpoint = fx
    job = ExportJob(
        model=ModelSpec(result.model_name, checkpoint, len(result.classes), result.img_size),
        val=DataSpec(small_val),
        out=root,
        name="base",
    )
    return run_export(job).run_dir


@pytest.fixture(scope="module")
def outcomes(
    trained_fixture: Fixture, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Outcome]:
    # Only the cases this session selected (``-k``) are built and run; a plain run takes every one.
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")
    }
    chosen = {name: build for name, build in CASES.items() if name in selected}
    root = tmp_path_factory.mktemp("bad-inputs")
    data, result, checkpoint = trained_fixture
    shared = root / "shared"
    small_val = shared / "val"
    for name in data.classes:
        (small_val / name).mkdir(parents=True)
        for png in sorted((data.val / name).glob("*.png"))[:2]:
            shutil.copy(png, small_val / name / png.name)
    base = _base_run(shared, trained_fixture, small_val)
    logs = root / "logs"
    logs.mkdir()
    cases: dict[str, Case] = {}
    jobs = []
    for name, build in chosen.items():
        ctx = Ctx(root / "cases" / name, data, result, checkpoint, base, small_val)
        ctx.dir.mkdir(parents=True)
        cases[name] = build(ctx)
        jobs.append(
            {
                "name": name,
                "args": [str(a) for a in cases[name].args],
                "cwd": str(ctx.dir),
                "env": {"COLUMNS": "200", "OMP_NUM_THREADS": "1", **cases[name].env},
                "stdout": str(logs / f"{name}.out"),
                "stderr": str(logs / f"{name}.err"),
                "fsize": cases[name].fsize,
            }
        )
    before = {name: _snapshot(root / "cases" / name) for name in chosen}
    spec = root / "jobs.json"
    spec.write_text(json.dumps({"parallel": PARALLEL, "timeout": 120, "jobs": jobs}))
    results_path = root / "results.json"
    proc = subprocess.run(
        [sys.executable, str(TESTS / "cli_batch.py"), str(spec), str(results_path)],
        capture_output=True,
        text=True,
        # a hung child is killed at 120 s by the batch itself; this bounds the batch as a whole
        timeout=120 * (-(-len(jobs) // PARALLEL)) + 300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads(results_path.read_text())
    return {
        name: Outcome(
            cases[name],
            results[name]["code"],
            (logs / f"{name}.out").read_text(errors="replace"),
            (logs / f"{name}.err").read_text(errors="replace"),
            before[name],
            _snapshot(root / "cases" / name),
            results[name]["seconds"],
        )
        for name in chosen
    }


def test_catalogue_is_large_and_spans_every_command() -> None:
    assert len(CASES) >= 25
    commands = {name.split("-")[0] for name in CASES}
    assert {"export", "validate", "verify", "inspect", "check", "build", "bench", "demo", "usage"} <= commands


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(outcomes: dict[str, Outcome], name: str) -> None:
    o = outcomes[name]
    assert o.code == o.case.code, str(o)
    assert "Traceback" not in o.stdout + o.stderr, str(o)
    if o.case.code == 2:
        assert "Usage:" in o.stderr, str(o)
    else:
        lines = o.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), str(o)
        for fragment in o.case.fragments:
            assert fragment in lines[0], f"{fragment!r} not in the error line\n{o}"
    assert o.after == o.before, f"the command changed its folder: {sorted(set(o.after) ^ set(o.before))}\n{o}"
