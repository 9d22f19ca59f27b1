"""Interrupted runs leave the previous complete run or nothing; a second run is byte-identical; verify.

Real ``levit-edge export`` processes (INT8 for ONNX Runtime and TensorRT, validated) on the trained
fixture are held at a stage's pause point (``LEVIT_EDGE_PAUSE_AT``, see levit_edge/pausepoint.py) and
signalled there, so each signal lands inside its stage on any machine, however fast or loaded:

==========================  ========================  =========================================
signal                      pause point               stage
==========================  ========================  =========================================
SIGINT                      ``stage:load``            load (staged directory exists, still empty)
SIGHUP                      ``stage:export``          ONNX export
SIGTERM                     ``stage:calibrate``       calibration (``model.fp32.onnx`` written)
SIGTERM (new run B)         ``stage:quantize.trt``    quantization (``model.int8.ort.onnx`` written)
SIGKILL                     ``stage:validate``        validation (both INT8 models written)
==========================  ========================  =========================================

Every kill of ``A`` runs with ``--force`` over a complete ``A``, which must come out byte for byte as it
was. The same export then runs once more to completion: it removes the SIGKILL's leftover and must
reproduce the first run's models, calibration and metrics exactly (the reproducibility check shares these
runs to keep the module near a minute and a half). The staging mechanics that no kill can time (the swap
itself, recovery of a run left aside, deferred signals, all-or-nothing rewrites) are tested in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from levit_edge.errors import UserError
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.io import signals_deferred
from levit_edge.pausepoint import ENV as PAUSE_ENV
from levit_edge.runs.layout import MANIFEST
from levit_edge.runs.manifest import verify_manifest, write_manifest
from levit_edge.runs.staging import StagedRun, staged_run
from levit_edge.runs.update import update_run

Fixture = tuple[DatasetPaths, FixtureResult, Path]
ARTIFACTS = ("model.fp32.onnx", "calibration.json", "model.int8.ort.onnx", "model.int8.trt.onnx")
METRICS = ("accuracy", "drop", "agreement", "kl", "cosine", "per_class", "confusion_changes", "status")
TIMEOUT = 300


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Env:
    root: Path
    out: Path
    tmp: Path  # TMPDIR of the runs: no scratch models may be left there (they live in the staged run)
    args: tuple[str, ...]

    def command(self, name: str, *extra: str) -> list[str]:
        code = "from levit_edge.cli.app import main; main()"
        return [sys.executable, "-c", code, *self.args, "--name", name, *extra]

    def env(self) -> dict[str, str]:
        return {**os.environ, "COLUMNS": "200", "TMPDIR": str(self.tmp)}


@dataclass(frozen=True)
class Killed:
    signal: str
    point: str
    returncode: int
    stderr: str
    seen: list[str]  # the staged directory's entries when the signal went
    own_leftovers: list[str]  # entries of out (and TMPDIR) named after this process, once it ended


def run_to_completion(env: Env, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        env.command(name, *extra), capture_output=True, text=True, env=env.env(), timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_at(env: Env, name: str, sig: signal.Signals, point: str, *extra: str) -> Killed:
    """Start an export held at pause point ``point`` (levit_edge.pausepoint), send ``sig`` once it is
    there, and wait for the process to end. The run is certain to be inside that stage when the signal
    lands, however fast or loaded the machine."""
    marker = env.root / f"paused-{name}-{point.replace(':', '-')}"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        env.command(name, *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**env.env(), PAUSE_ENV: f"{point}={marker}"},
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None and marker.exists():
            assert marker.read_text().strip() == str(proc.pid)
            staged = sorted(env.out.glob(f".{name}.partial-*-{proc.pid}"))
            seen = sorted(p.name for p in staged[0].iterdir()) if staged else []
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert marker.exists(), f"the run ended (exit {proc.returncode}) before {point}: {stderr[-2000:]}"
    own = sorted(
        str(p.relative_to(env.root))
        for folder in (env.out, env.tmp)
        if folder.is_dir()
        for p in folder.iterdir()
        if str(proc.pid) in p.name
    )
    return Killed(sig.name, point, proc.returncode, stderr, seen, own)


@dataclass(frozen=True)
class Runs:
    env: Env
    first: dict[str, str]  # snapshot of the first complete A
    first_report: dict[str, Any]
    killed: dict[str, Killed]
    after_kills: dict[str, str]  # snapshot of A after all the kills
    leftovers_after_kill: list[str]  # hidden entries of out right after the SIGKILL
    tmp_after_kills: list[str]
    second: Path  # A again, run to completion after the kills


@pytest.fixture(scope="module")
def runs(trained_fixture: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    data, result, checkpoint = trained_fixture
    root = tmp_path_factory.mktemp("interrupts")
    val = root / "val"  # 8 per class: validation long enough to be hit, short enough to be cheap
    for name in data.classes:
        (val / name).mkdir(parents=True)
        for png in sorted((data.val / name).glob("*.png"))[:8]:
            shutil.copy(png, val / name / png.name)
    out, tmp = root / "out", root / "tmp"
    tmp.mkdir()
    args = (
        "export",
        "--model", result.model_name,
        "--img-size", str(result.img_size),
        "--num-classes", str(len(result.classes)),
        "--checkpoint", str(checkpoint),
        "--int8", "--target", "all", "--no-engine",
        "--calib", str(data.calib),
        "--val", str(val),
        "--max-drop", "100",  # the gate is not under test here
        "--out", str(out),
    )  # fmt: skip
    env = Env(root, out, tmp, args)

    run_to_completion(env, "A")
    first = snapshot(out / "A")
    first_report = json.loads((out / "A" / "report.json").read_text())

    killed = {
        "export": kill_at(env, "A", signal.SIGINT, "stage:load", "--force"),
        "calibration": kill_at(env, "A", signal.SIGTERM, "stage:calibrate", "--force"),
        "quantization-new-run": kill_at(env, "B", signal.SIGTERM, "stage:quantize.trt"),
        "hangup": kill_at(env, "A", signal.SIGHUP, "stage:export", "--force"),
        "validation": kill_at(env, "A", signal.SIGKILL, "stage:validate", "--force"),
    }
    after_kills = snapshot(out / "A")
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    tmp_after = sorted(p.name for p in tmp.iterdir())

    run_to_completion(env, "A", "--force")
    return Runs(env, first, first_report, killed, after_kills, leftovers, tmp_after, out / "A")


# ---- kills ----------------------------------------------------------------------------------------------


# For each kill: the files its staged directory must (and must not yet) hold when the signal went.
STAGE_FILES = {
    "export": ((), ("model.fp32.onnx",)),
    "hangup": ((), ("model.fp32.onnx",)),
    "calibration": (("model.fp32.onnx",), ("calibration.json",)),
    "quantization-new-run": (("calibration.json", "model.int8.ort.onnx"), ("model.int8.trt.onnx",)),
    "validation": (("model.int8.trt.onnx",), ("report.json", MANIFEST)),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "code"),
    [("export", 130), ("hangup", 129), ("calibration", 143), ("quantization-new-run", 143)],
)
def test_sigint_sigterm_and_sighup_unwind_and_remove_the_staged_run(
    runs: Runs, stage: str, code: int
) -> None:
    k = runs.killed[stage]
    assert k.returncode == code, k
    assert k.stderr.strip() == f"interrupted by {k.signal}", k
    present, absent = STAGE_FILES[stage]
    assert set(present) <= set(k.seen) and not set(absent) & set(k.seen), k
    # nothing of this process is left: not its staged run, nor scratch files in TMPDIR
    assert k.own_leftovers == [], k


@pytest.mark.slow
def test_sigkill_leaves_only_a_hidden_partial(runs: Runs) -> None:
    k = runs.killed["validation"]
    assert k.returncode == -signal.SIGKILL, k
    present, absent = STAGE_FILES["validation"]
    assert set(present) <= set(k.seen) and not set(absent) & set(k.seen), k
    # SIGKILL cannot be caught: exactly its own staged directory stays, hidden, until the next run of A
    assert len(k.own_leftovers) == 1 and k.own_leftovers[0].startswith("out/.A.partial-"), k
    assert runs.leftovers_after_kill == [Path(k.own_leftovers[0]).name], runs.leftovers_after_kill


@pytest.mark.slow
def test_previous_run_survives_every_kill_byte_for_byte(runs: Runs) -> None:
    assert runs.after_kills == runs.first
    assert not (runs.env.out / "B").exists()
    # scratch models of calibration/quantization lived inside the staged run, not in TMPDIR (where
    # torch leaves its own cache files at import)
    assert [n for n in runs.tmp_after_kills if n.startswith(("levit-edge", "ort", "tmp"))] == []


@pytest.mark.slow
def test_next_run_cleans_up_and_completes(runs: Runs) -> None:
    hidden = sorted(p.name for p in runs.env.out.iterdir() if p.name.startswith("."))
    assert hidden == []
    assert sorted(p.name for p in runs.env.out.iterdir()) == ["A"]
    assert verify_manifest(runs.second) == []


# ---- reproducibility --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_second_run_is_byte_identical(runs: Runs) -> None:
    second = snapshot(runs.second)
    for name in ARTIFACTS:
        assert second[name] == runs.first[name], f"{name} differs between two identical runs"
    report = json.loads((runs.second / "report.json").read_text())
    for key in METRICS:
        assert report[key] == runs.first_report[key], key
    assert report["quantization"] == runs.first_report["quantization"]
    assert report["validation"]["data_hash"] == runs.first_report["validation"]["data_hash"]


@pytest.mark.slow
def test_manifest_records_what_a_rebuild_needs(runs: Runs) -> None:
    manifest = json.loads((runs.second / MANIFEST).read_text())
    for key in ("versions", "options", "command", "seed", "model", "preprocess", "calibration"):
        assert manifest.get(key) is not None, key
    assert {"torch", "timm", "onnx", "onnxruntime", "numpy", "levit-edge"} <= set(manifest["versions"])
    assert manifest["model"]["checkpoint_sha256"]
    assert len(manifest["calibration"]["data_hash"]) == 64
    assert len(manifest["validation_data_hash"]) == 64
    assert manifest["options"]["quant"]["method"] == "minmax"
    assert set(manifest["files"]) >= set(ARTIFACTS) | {"report.json", "report.html", "report.md"}


@pytest.mark.slow
def test_verify_names_every_kind_of_mismatch(runs: Runs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs.second, run)
    assert verify_manifest(run) == []
    model = run / "model.int8.ort.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x40  # one bit, same size
    model.write_bytes(bytes(data))
    (run / "calibration.json").unlink()
    (run / "extra.txt").write_text("added\n")
    (run / ".hidden").write_text("added\n")
    (run / "report.md").unlink()
    (run / "report.md").symlink_to(runs.second / "report.md")  # same bytes, but not the run's own file
    problems = "\n".join(verify_manifest(run))
    assert "model.int8.ort.onnx: sha256" in problems
    assert "calibration.json: missing" in problems
    assert "extra.txt: not listed" in problems
    assert ".hidden: not listed" in problems
    assert "report.md: a link" in problems
    assert len(verify_manifest(run)) == 5


@pytest.mark.slow
def test_verify_catches_a_change_in_every_listed_file(runs: Runs, tmp_path: Path) -> None:
    """Each file the manifest lists, changed by one bit (same size), is named by verify, alone."""
    listed = sorted(json.loads((runs.second / MANIFEST).read_text())["files"])
    assert set(ARTIFACTS) | {"report.json", "report.md", "report.html", "model.int8.ort"} <= set(listed)
    run = tmp_path / "run"
    shutil.copytree(runs.second, run)
    for name in listed:
        path = run / name
        original = path.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        path.write_bytes(bytes(changed))
        problems = verify_manifest(run)
        path.write_bytes(original)
        assert len(problems) == 1 and problems[0].startswith(f"{name}: sha256"), (name, problems)
    assert verify_manifest(run) == []


# ---- staging mechanics, in-process ---------------------------------------------------------------------


def _complete_run(out: Path, name: str, text: str) -> Path:
    with staged_run(out, name, force=True) as run:
        (run.dir / "model.txt").write_text(text)
        write_manifest(run.dir, {"status": "passed"})
        return run.commit()


RUN_FILES = (
    *ARTIFACTS,
    "model.int8.ort",
    "report.json",
    "report.md",
    "report.html",
    "required_operators.config",
)


@pytest.mark.parametrize("change", ["bit", "size", "missing", "link"])
def test_verify_names_a_change_in_any_listed_file(tmp_path: Path, change: str) -> None:
    """In-process (fast) twin of the fixture-run test: each kind of run file, changed alone, is named."""
    with staged_run(tmp_path, "r", force=False) as staged:
        for i, name in enumerate(RUN_FILES):
            (staged.dir / name).write_bytes(bytes([i]) * (64 + i))
        write_manifest(staged.dir, {"status": "passed"})
        run = staged.commit()
    assert verify_manifest(run) == []
    for name in RUN_FILES:
        path = run / name
        original = path.read_bytes()
        if change == "bit":
            path.write_bytes(bytes([original[0] ^ 0x80]) + original[1:])
        elif change == "size":
            path.write_bytes(original + b"x")
        elif change == "missing":
            path.unlink()
        else:
            path.unlink()
            (tmp_path / "elsewhere").write_bytes(original)
            path.symlink_to(tmp_path / "elsewhere")
        problems = verify_manifest(run)
        path.unlink(missing_ok=True)
        path.write_bytes(original)
        expected = {"bit": ": sha256", "size": ": size", "missing": ": missing", "link": ": a link"}[change]
        assert problems == [p for p in problems if p.startswith(name + expected)] and len(problems) == 1, (
            name,
            problems,
        )
    assert verify_manifest(run) == []


def test_verify_refuses_entries_that_are_not_plain_run_files(tmp_path: Path) -> None:
    final = _complete_run(tmp_path, "r", "model")
    manifest = json.loads((final / MANIFEST).read_text())
    good = manifest["files"]["model.txt"]
    (final / "model.txt").write_text("changed")  # listed after the bad names: must still be checked
    bad_names = ["", ".", "..", "../outside", "a/b", "a\\b", MANIFEST]
    manifest["files"] = {**{n: good for n in bad_names}, "model.txt": good}
    (final / MANIFEST).write_text(json.dumps(manifest))
    problems = verify_manifest(final)
    assert sorted(p for p in problems if "not a plain file name" in p) == sorted(
        f"{n!r}: not a plain file name of the run directory" for n in bad_names
    )
    assert [p for p in problems if p.startswith("model.txt: ")] == [
        "model.txt: size 7 does not match the manifest's 5"
    ]


@pytest.mark.parametrize(
    "files",
    [[], {"m": "sha"}, {"m": {"size": 1}}, {"m": {"sha256": "x"}}, {"m": {"sha256": "x", "size": "1"}}],
)
def test_verify_refuses_a_manifest_that_is_not_ours(tmp_path: Path, files: object) -> None:
    final = _complete_run(tmp_path, "r", "model")
    (final / MANIFEST).write_text(json.dumps({"status": "passed", "files": files}))
    with pytest.raises(UserError, match="is not a levit-edge manifest"):
        verify_manifest(final)


def test_force_swaps_the_complete_runs_atomically(tmp_path: Path) -> None:
    final = _complete_run(tmp_path, "r", "old")
    inode = final.stat().st_ino
    _complete_run(tmp_path, "r", "new")
    assert (final / "model.txt").read_text() == "new"
    assert final.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert verify_manifest(final) == []


def test_a_run_left_aside_by_a_dead_replacement_is_recovered(tmp_path: Path) -> None:
    # The state SIGKILL would leave between the two renames where no atomic swap exists.
    final = _complete_run(tmp_path, "r", "old")
    aside = tmp_path / f".r.old-{int(time.time())}-999999999"
    final.rename(aside)
    StagedRun(tmp_path, "r", force=True).discard()
    assert (final / "model.txt").read_text() == "old"
    assert not aside.exists()


def test_failed_run_removes_the_output_folders_it_made(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), staged_run(out, "r", force=False):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_signals_are_held_until_the_block_ends() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: received.append(s))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert received == []
        time.sleep(0.05)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_ignored_signal_stays_ignored_and_the_others_raise() -> None:
    from levit_edge.cli.app import Interrupted, install_signal_handlers

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup leaves it
        install_signal_handlers()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing raised
        with pytest.raises(Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises at the next bytecode; the sleep is only a fallback
        assert caught.value.signum == signal.SIGTERM
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_rewrite_of_a_finished_run_is_all_or_nothing(tmp_path: Path) -> None:
    final = _complete_run(tmp_path, "r", "model")
    (final / "report.json").write_text("{}")
    write_manifest(final, {"status": "passed"})
    before = snapshot(final)

    def interrupted(folder: Path) -> None:
        (folder / "report.json").write_text('{"new": true}')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        update_run(final, interrupted, {"status": "failed"})
    assert snapshot(final) == before
    assert sorted(p.name for p in final.iterdir()) == sorted(before)

    update_run(final, lambda folder: (folder / "report.json").write_text('{"new": true}'), {"status": "x"})
    assert json.loads((final / "report.json").read_text()) == {"new": True}
    assert json.loads((final / MANIFEST).read_text())["status"] == "x"
    assert verify_manifest(final) == []


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "../x", "a\\b"])
def test_run_names_cannot_leave_the_output_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match="plain directory name"):
        StagedRun(tmp_path, name, force=True)
    assert list(tmp_path.iterdir()) == []


def test_a_finished_run_has_ordinary_file_modes(tmp_path: Path) -> None:
    # mkstemp/mkdtemp make 0600/0700: a run must be readable like any file its user writes
    mask = os.umask(0o022)
    os.umask(mask)
    final = _complete_run(tmp_path, "r", "x")
    assert final.stat().st_mode & 0o777 == 0o777 & ~mask
    for path in final.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path.name
