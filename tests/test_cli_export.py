"""The real ``levit-edge`` command in a subprocess: export a small LeViT from a checkpoint made here, the
run directory and its hashes, refusal to overwrite, --force, inspect, --version, and the exit codes and
single ``error:`` line of every bad input (exit 1) and usage error (exit 2)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from helpers import random_levit, save_state_dict

from levit_edge import __version__
from levit_edge.runs.manifest import verify_manifest

NAME = "levit_128s"
IMG = 64
CLASSES = 10
TIMEOUT = 600

pytestmark = pytest.mark.slow  # every test here starts at least one full CLI process (torch, timm, onnx)


def _cli() -> list[str]:
    exe = shutil.which("levit-edge", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "from levit_edge.cli.app import main; main()"]


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def __str__(self) -> str:
        command = f"levit-edge {' '.join(self.args)} -> {self.returncode}"
        return f"{command}\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}"


def _env(**extra: str) -> dict[str, str]:
    # One intra-op thread: the machine has two shared cores and several processes run at once below.
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **extra}


def run_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Result:
    argv = tuple(str(a) for a in args)
    proc = subprocess.run(
        [*_cli(), *argv], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones included) with its sha256."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def hidden_entries(out: Path) -> list[str]:
    """Leftovers of staged runs: ``.NAME.partial-*`` / ``.NAME.old-*`` directories, ``.*.tmp`` files."""
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*"))


@dataclass(frozen=True)
class Workspace:
    root: Path
    checkpoint: Path
    out: Path
    first: Result

    @property
    def run_dir(self) -> Path:
        return self.out / "run1"

    def export_args(self, *extra: str | Path) -> list[str | Path]:
        return [
            "export",
            "--model", NAME,
            "--checkpoint", self.checkpoint,
            "--img-size", str(IMG),
            "--num-classes", str(CLASSES),
            "--target", "onnx",
            "--out", self.out,
            *extra,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("cli")
    checkpoint = save_state_dict(random_levit(NAME, CLASSES, IMG, seed=31), root / "levit.pth")
    out = root / "out"
    partial = Workspace(root, checkpoint, out, Result((), -1, "", ""))
    first = run_cli(*partial.export_args("--name", "run1"), cwd=root)
    return Workspace(root, checkpoint, out, first)


# ---- a successful export ----------------------------------------------------------------------------


def test_export_writes_a_complete_run(ws: Workspace) -> None:
    result = ws.first
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.stderr + result.stdout
    run = ws.run_dir
    for name in ("model.fp32.onnx", "manifest.json", "report.json"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    listed = manifest["files"]
    on_disk = {p.name for p in run.iterdir() if p.is_file() and p.name != "manifest.json"}
    assert set(listed) == on_disk
    for name, entry in listed.items():
        assert entry["sha256"] == sha256(run / name), name
        assert entry["size"] == (run / name).stat().st_size, name
    assert verify_manifest(run) == []

    report = json.loads((run / "report.json").read_text())
    checkpoint_sha = sha256(ws.checkpoint)
    assert report["model"]["name"] == NAME
    assert report["model"]["classes"] == CLASSES
    assert report["model"]["checkpoint_sha256"] == checkpoint_sha
    assert report["artifacts"]["fp32"] == "model.fp32.onnx"
    assert report["sizes"]["fp32"] == (run / "model.fp32.onnx").stat().st_size
    assert report["preprocess"]["input_size"] == [3, IMG, IMG]
    assert all(0 <= v < 1e-4 for v in report["parity"].values()), report["parity"]

    model = onnx.load(str(run / "model.fp32.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["levit_edge.checkpoint_sha256"] == checkpoint_sha
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [3, IMG, IMG]

    assert result.stdout.strip().splitlines()[-1].endswith(str(run / "report.html"))
    assert hidden_entries(ws.out) == []


def test_rerun_with_same_name_is_refused_and_leaves_the_run_alone(ws: Workspace) -> None:
    assert ws.first.returncode == 0
    before = snapshot(ws.out)
    result = run_cli(*ws.export_args("--name", "run1"), cwd=ws.root)
    assert result.returncode == 1, str(result)
    _assert_one_error_line(result, "--force")
    assert snapshot(ws.out) == before
    assert hidden_entries(ws.out) == []


def test_force_replaces_the_run(ws: Workspace) -> None:
    assert ws.first.returncode == 0
    target = ws.out / "forced"
    shutil.copytree(ws.run_dir, target)
    (target / "stale.txt").write_text("left over from an older run")
    result = run_cli(*ws.export_args("--name", "forced", "--force"), cwd=ws.root)
    assert result.returncode == 0, str(result)
    assert not (target / "stale.txt").exists()
    assert verify_manifest(target) == []
    # the same checkpoint and settings give the same model bytes
    assert sha256(target / "model.fp32.onnx") == sha256(ws.run_dir / "model.fp32.onnx")
    assert hidden_entries(ws.out) == []


# ---- inspect and --version --------------------------------------------------------------------------


def test_inspect_onnx(ws: Workspace) -> None:
    assert ws.first.returncode == 0
    path = ws.run_dir / "model.fp32.onnx"
    result = run_cli("inspect", path, cwd=ws.root)
    assert result.returncode == 0, str(result)
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        re.escape(str(path)) + r": \d+ nodes, 0 QuantizeLinear / 0 DequantizeLinear, [\d.]+ MB", last
    )
    assert re.search(r"^input\s+images\s+float32\s+\[", result.stdout, re.MULTILINE)
    assert "levit_edge.checkpoint_sha256: " + sha256(ws.checkpoint) in result.stdout


def test_inspect_run_dir(ws: Workspace) -> None:
    assert ws.first.returncode == 0
    result = run_cli("inspect", ws.run_dir, cwd=ws.root)
    assert result.returncode == 0, str(result)
    files = json.loads((ws.run_dir / "manifest.json").read_text())["files"]
    status = json.loads((ws.run_dir / "report.json").read_text())["status"]
    last = result.stdout.strip().splitlines()[-1]
    assert last == f"run {ws.run_dir}: {len(files)} files, status {status}"


# ---- failures: one "error:" line and exit 1, or a usage error and exit 2 ------------------------------


def _assert_one_error_line(result: Result, *fragments: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout, str(result)
    errors = result.error_lines()
    assert len(errors) == 1, str(result)
    assert result.stderr.strip().splitlines()[-1] == errors[0], str(result)  # nothing after it
    for fragment in fragments:
        assert fragment in errors[0], str(result)


@dataclass(frozen=True)
class Case:
    args: list[str | Path]
    code: int
    fragments: tuple[str, ...] = ()
    env: dict[str, str] | None = None


def _error_cases(ws: Workspace) -> dict[str, Case]:
    bad = ws.root / "bad"
    bad.mkdir(exist_ok=True)
    garbage = bad / "garbage.pth"
    garbage.write_bytes(os.urandom(2048))
    notes = bad / "notes.txt"
    notes.write_text("not a model\n")
    a_file = bad / "a_file"
    a_file.write_text("")
    locked = bad / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o500)
    out = bad / "out"
    missing = bad / "missing.pth"

    def export(*extra: str | Path, out_dir: Path = out) -> list[str | Path]:
        return ["export", "--model", NAME, "--img-size", str(IMG), "--out", out_dir, "--name", "r", *extra]

    cases = {
        "missing_checkpoint": Case(export("--checkpoint", missing), 1, (str(missing), "not found")),
        "non_levit": Case(export("--model", "resnet50"), 1, ("resnet50", "levit_128s", "levit_conv_512d")),
        "bad_opset": Case(export("--opset", "12"), 1, ("--opset", "13", "21")),
        "wrong_num_classes": Case(
            export("--checkpoint", ws.checkpoint, "--num-classes", "5"),
            1,
            ("head.linear.weight", "--num-classes"),
        ),
        "garbage_checkpoint": Case(export("--checkpoint", garbage), 1, (str(garbage),)),
        # unwritable --out that root cannot write either: a path below a regular file
        "out_is_a_file": Case(
            export("--checkpoint", ws.checkpoint, out_dir=a_file / "sub"), 1, (str(a_file),)
        ),
        "inspect_not_onnx": Case(["inspect", notes], 1, (str(notes), "not an ONNX model")),
        "usage_unknown_option": Case(["export", "--bogus"], 2),
        "usage_missing_argument": Case(["inspect"], 2),
        "version": Case(["--version"], 0),
    }
    if not os.access(locked, os.W_OK):  # root writes through 0o500: that case is skipped, not run
        cases["unwritable_out"] = Case(
            export("--checkpoint", ws.checkpoint, out_dir=locked), 1, (str(locked),)
        )
    return cases


@pytest.fixture(scope="module")
def failures(ws: Workspace) -> Iterator[dict[str, tuple[Case, Result]]]:
    """All failure cases, two at a time (each is mostly process start-up: importing torch, timm, onnx)."""
    cases = _error_cases(ws)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run_cli, *c.args, cwd=ws.root, env=c.env) for k, c in cases.items()}
        results = {k: (cases[k], f.result()) for k, f in futures.items()}
    yield results
    (ws.root / "bad" / "locked").chmod(0o700)


_EXIT_1 = [
    "missing_checkpoint",
    "non_levit",
    "bad_opset",
    "wrong_num_classes",
    "garbage_checkpoint",
    "out_is_a_file",
    "unwritable_out",
    "inspect_not_onnx",
]


@pytest.mark.parametrize("case", _EXIT_1)
def test_bad_input_exits_1_with_one_error_line(failures: dict[str, tuple[Case, Result]], case: str) -> None:
    if case not in failures:
        pytest.skip("running as root: a 0o500 directory is writable; see the read-only mount test")
    spec, result = failures[case]
    assert result.returncode == spec.code, str(result)
    _assert_one_error_line(result, *spec.fragments)
    out = Path(str(spec.args[spec.args.index("--out") + 1])) if "--out" in spec.args else None
    if out is not None and out.is_dir():
        assert sorted(p.name for p in out.iterdir()) == [], "a failed run left files behind"


@pytest.mark.parametrize("case", ["usage_unknown_option", "usage_missing_argument"])
def test_usage_error_exits_2(failures: dict[str, tuple[Case, Result]], case: str) -> None:
    _, result = failures[case]
    assert result.returncode == 2, str(result)
    assert "Traceback" not in result.stderr + result.stdout
    assert "Usage:" in result.stderr or "Usage:" in result.stdout


def test_version(failures: dict[str, tuple[Case, Result]]) -> None:
    _, result = failures["version"]
    assert result.returncode == 0, str(result)
    assert result.stdout.strip() == f"levit-edge {__version__}"


def _read_only_mount(target: Path) -> list[str] | None:
    """A command prefix running its command in a private mount namespace where ``target`` is a read-only
    tmpfs (a really read-only file system: writes fail with EROFS even for root), or None where this
    machine allows no such namespace. The mount vanishes with the process; the host never sees it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    flags = ["--mount"] if os.geteuid() == 0 else ["--mount", "--map-root-user"]
    mount = 'mount -t tmpfs -o ro,size=1m tmpfs "$0"'
    probe = subprocess.run(
        [unshare, *flags, "sh", "-c", f'{mount} && ! touch "$0/probe" 2>/dev/null', str(target)],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    return [unshare, *flags, "sh", "-c", f'{mount} && exec "$@"', str(target)]


@pytest.mark.parametrize("below", [False, True])
def test_read_only_file_system_is_one_error_line(ws: Workspace, tmp_path: Path, below: bool) -> None:
    """--out on a read-only file system (or a folder to be made below it): exit 1, one line naming it."""
    ro = tmp_path / "ro"
    ro.mkdir()
    prefix = _read_only_mount(ro)
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare --mount refused): cannot make a read-only fs")
    out = ro / "runs" if below else ro
    args = ["export", "--model", NAME, "--img-size", str(IMG), "--checkpoint", str(ws.checkpoint)]
    proc = subprocess.run(
        [*prefix, *_cli(), *args, "--out", str(out), "--name", "r"],
        cwd=ws.root, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)
    assert result.returncode == 1, str(result)
    _assert_one_error_line(result, str(ro))
    line = result.error_lines()[0]
    assert "Read-only file system" in line or "not writable" in line, str(result)
    assert list(ro.iterdir()) == []
