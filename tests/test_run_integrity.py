"""Runs that cannot be corrupted, laundered or clobbered (issue 14), in-process and in forked children.

A rewrite of a run (validate, bench, debug) refuses a run that no longer matches its manifest; the
manifest is sealed by a digest of its own content; a commit never swaps away a run that appeared
meanwhile, and ``--force`` replaces only levit-edge runs; a rewrite killed at any point (SIGKILL placed
inside the commit by the child itself) leaves a run that verifies, old or new but never mixed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from levit_edge.data.open_source import open_source
from levit_edge.data.sources import DataSpec
from levit_edge.errors import UserError
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.flows.export import run_export
from levit_edge.flows.job import ExportJob
from levit_edge.io import write_atomic
from levit_edge.model.load import ModelSpec
from levit_edge.runs.finished import FinishedRun
from levit_edge.runs.layout import MANIFEST
from levit_edge.runs.manifest import verify_manifest, write_manifest
from levit_edge.runs.staging import StagedRun, staged_run
from levit_edge.runs.update import update_run
from levit_edge.settings import Targets


def snapshot(root: Path) -> dict[str, str]:
    """Every entry (hidden ones too): files by sha256, other entries by kind."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_run(
    out: Path, name: str = "r", text: str = "model", status: str = "passed", force: bool = True
) -> Path:
    with staged_run(out, name, force=force) as run:
        (run.dir / "model.onnx").write_text(text)
        (run.dir / "report.json").write_text(json.dumps({"status": status}))
        write_manifest(run.dir, {"status": status})
        return run.commit()


def new_report(folder: Path) -> None:
    (folder / "report.json").write_text(json.dumps({"status": "failed", "new": True}))
    (folder / "report.md").write_text("# new\n")


# ---- item 1: a rewrite refuses a run that does not match its manifest ----


def _replace_model(run: Path) -> None:
    (run / "model.onnx").write_text("evil model")


def _add_file(run: Path) -> None:
    (run / "evil.sh").write_text("#!/bin/sh\n")


def _edit_hash(run: Path) -> None:
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64
    (run / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("tamper", [_replace_model, _add_file, _edit_hash], ids=lambda f: f.__name__)
def test_a_rewrite_refuses_a_tampered_run_and_leaves_it_untouched(
    tmp_path: Path, tamper: Callable[[Path], None]
) -> None:
    run = make_run(tmp_path)
    tamper(run)
    before = snapshot(run)
    with pytest.raises(UserError, match=r"does not match its manifest\.json.*refusing to rewrite"):
        update_run(run, new_report, {"status": "failed"})
    assert snapshot(run) == before
    assert verify_manifest(run) != []  # still caught: nothing was laundered


def test_a_rewrite_keeps_the_other_files_entries_and_hashes_what_it_wrote(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    old = json.loads((run / MANIFEST).read_text())["files"]
    manifest = update_run(run, new_report, {"status": "failed"})
    assert manifest["files"]["model.onnx"] == old["model.onnx"]
    assert set(manifest["files"]) == {"model.onnx", "report.json", "report.md"}
    assert verify_manifest(run) == []


# ---- item 2: no-replace commit ----


def test_a_run_that_appeared_meanwhile_is_not_swapped_away(tmp_path: Path) -> None:
    # Two exports of the same --name at once: the child stages its run first, the parent's run then
    # completes, and only then does the child commit (pipes order the steps; no timing).
    staged_r, staged_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            with staged_run(tmp_path, "r", force=False) as run:
                (run.dir / "model.onnx").write_text("second")
                write_manifest(run.dir, {"status": "passed"})
                os.write(staged_w, b"x")
                os.read(go_r, 1)
                run.commit()
        except UserError as exc:
            code = 10 if "already exists" in str(exc) and "pass --force" in str(exc) else 11
        finally:
            os._exit(code)
    assert os.read(staged_r, 1) == b"x"
    make_run(tmp_path, "r", text="first", force=False)
    os.write(go_w, b"x")
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 10
    assert (tmp_path / "r" / "model.onnx").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # the second staged run is gone
    assert verify_manifest(tmp_path / "r") == []


# ---- item 3 and the Low symlink cases: --force replaces runs only ----


def test_force_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    (folder / "sub").mkdir(parents=True)
    (folder / "precious.txt").write_text("keep me")
    (folder / "sub" / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=r"not a levit-edge run.*--force replaces runs only"):
        StagedRun(tmp_path, "r", force=True)
    assert snapshot(tmp_path) == before


def test_force_rechecks_at_commit_what_it_replaces(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(UserError, match="not a levit-edge run"), staged_run(tmp_path, "r", True) as staged:
        write_manifest(staged.dir, {"status": "passed"})
        (run / MANIFEST).unlink()  # someone turned the run into an ordinary folder meanwhile
        (run / "precious.txt").write_text("keep me")
        staged.commit()
    assert (run / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


@pytest.mark.parametrize("dangling", [False, True])
def test_a_run_name_that_is_a_symlink_is_refused(tmp_path: Path, dangling: bool) -> None:
    target = make_run(tmp_path / "elsewhere") if not dangling else tmp_path / "nowhere"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r").symlink_to(target)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="is a symbolic link"):
        StagedRun(tmp_path / "out", "r", force=True)
    assert snapshot(tmp_path) == before


def test_out_inside_a_run_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(UserError, match="inside the run"):
        StagedRun(run / "sub", "x", force=False)
    assert verify_manifest(run) == []


@pytest.mark.parametrize("name", ["a\nb", " ", "x ", "tab\there", "n" * 250])
def test_names_that_cannot_be_a_run_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match="--name"):
        StagedRun(tmp_path, name, force=False)
    assert list(tmp_path.iterdir()) == []


# ---- item 4: the manifest checks itself ----


def test_an_edited_status_in_the_manifest_is_caught(tmp_path: Path) -> None:
    run = make_run(tmp_path, status="failed")
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["status"] = "passed"
    (run / MANIFEST).write_text(json.dumps(manifest, indent=2))
    problems = verify_manifest(run)
    assert any("manifest.json" in p and "digest" not in p.split(":")[0] for p in problems), problems
    assert any("manifest_sha256" in p for p in problems), problems


def test_a_resealed_status_edit_is_caught_by_the_report(tmp_path: Path) -> None:
    # Whoever recomputes the digest still has report.json (hashed in the manifest) against them.
    from levit_edge.runs.manifest import seal

    run = make_run(tmp_path, status="failed")
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["status"] = "passed"
    (run / MANIFEST).write_text(json.dumps(seal(manifest)))
    problems = verify_manifest(run)
    assert problems == ["manifest.json: status 'passed' differs from report.json's 'failed'"]


def test_a_manifest_without_its_digest_is_caught(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    manifest = json.loads((run / MANIFEST).read_text())
    del manifest["manifest_sha256"]
    (run / MANIFEST).write_text(json.dumps(manifest))
    assert any("no manifest_sha256" in p for p in verify_manifest(run))


# ---- item 5: one commit protocol, all-or-nothing under SIGKILL and write failures ----


def in_child(body: Callable[[], None]) -> int:
    """Run ``body`` in a forked child; return its wait status as an exit code (-9 for SIGKILL)."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_sigkill_in_the_middle_of_the_commit_rolls_forward(tmp_path: Path) -> None:
    run = make_run(tmp_path)

    def child() -> None:
        real = os.replace
        calls = []

        def replace_then_die(src: str | Path, dst: str | Path) -> None:
            if Path(dst).parent == run:  # the commit's renames into the run
                calls.append(dst)
                if len(calls) == 2:  # report.json is in place, report.md and the manifest are not
                    os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)

        os.replace = replace_then_die  # type: ignore[assignment]
        update_run(run, new_report, {"status": "failed"})

    assert in_child(child) == -signal.SIGKILL
    assert verify_manifest(run) == []  # finished by verify
    assert json.loads((run / "report.json").read_text())["new"] is True
    assert json.loads((run / MANIFEST).read_text())["status"] == "failed"
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_sigkill_while_staging_leaves_a_run_that_verifies(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    before = {k: v for k, v in snapshot(run).items() if not k.startswith(".")}

    def staging_then_die(folder: Path) -> None:
        new_report(folder)
        os.kill(os.getpid(), signal.SIGKILL)

    assert in_child(lambda: update_run(run, staging_then_die, {"status": "failed"}) and None) == -9
    assert [p.name for p in run.iterdir() if p.name.startswith(".update-")]  # the dead rewrite's folder
    assert verify_manifest(run) == []
    assert snapshot(run) == before  # rolled back: exactly the old run, staging folder removed


def test_a_debug_save_that_fails_half_way_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    before = snapshot(run)

    def full_disk_at_html(folder: Path) -> None:
        write_atomic(folder / "report.json", json.dumps({"sensitivity": []}))
        write_atomic(folder / "report.md", "# report\n")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "report.html"))

    with pytest.raises(OSError):
        FinishedRun(run).rewrite(full_disk_at_html)
    assert snapshot(run) == before
    assert verify_manifest(run) == []


# ---- items 7 and 8: special files as images, names that are not UTF-8 ----


def test_a_fifo_named_png_is_refused_not_waited_on(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "calib"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    fifo = folder / "b.png"
    os.mkfifo(fifo)
    # A writer that feeds a valid PNG to whoever opens the FIFO for reading, so that code reading it
    # (wrongly) gets an image and ends, instead of this test hanging.
    png = (folder / "a.png").read_bytes()

    def feed() -> None:
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_WRONLY)
            try:
                os.write(fd, png)
            finally:
                os.close(fd)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        source = open_source(DataSpec(folder))
        with pytest.raises(UserError, match=r"b\.png.*not a regular file \(a FIFO\)"):
            source.fingerprint()
    finally:
        while writer.is_alive():  # release a writer still waiting for a reader
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            writer.join(0.01)


def test_reports_with_names_that_are_not_utf8_are_written(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9")  # how Python hands over a Latin-1 folder name
    write_atomic(tmp_path / "report.md", f"# class {name}\n")
    assert (tmp_path / "report.md").read_bytes().decode("utf-8") == "# class caf\\udce9\n"


@pytest.mark.slow
def test_an_export_with_a_class_folder_name_that_is_not_utf8_writes_its_reports(
    trained_fixture: tuple[DatasetPaths, FixtureResult, Path], tmp_path: Path
) -> None:
    import shutil

    data, result, checkpoint = trained_fixture
    val = tmp_path / "val"
    # the last class folder gets Latin-1 bytes, and a name that still sorts last (the labels stay right)
    names = [*data.classes[:-1], os.fsdecode(b"zcaf\xe9")]
    for name, source in zip(names, data.classes, strict=True):
        (val / name).mkdir(parents=True)
        for png in sorted((data.val / source).glob("*.png"))[:2]:
            shutil.copy(png, val / name / png.name)
    job = ExportJob(
        model=ModelSpec(result.model_name, checkpoint, len(result.classes), result.img_size),
        val=DataSpec(val),
        out=tmp_path / "out",
        name="r",
    )
    run = run_export(job).run_dir
    markdown = (run / "report.md").read_bytes().decode("utf-8")  # valid UTF-8 whatever the names
    assert "zcaf\\udce9" in markdown
    assert json.loads((run / "report.json").read_text())["status"] == "passed"
    assert verify_manifest(run) == []


def test_skip_bad_also_skips_a_dangling_symlink_in_the_data_hash(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "calib"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "b.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(UserError, match=r"b\.png"):
        open_source(DataSpec(folder)).fingerprint()
    assert len(open_source(DataSpec(folder, skip_bad=True)).fingerprint()) == 64


def _read_only_bind(target: Path) -> list[str] | None:
    """A command prefix running its command in a private mount namespace where ``target`` is bound onto
    itself read-only (writes fail with EROFS even for root); None where no such namespace is allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    flags = ["--mount"] if os.geteuid() == 0 else ["--mount", "--map-root-user"]
    mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'
    probe = subprocess.run(
        [unshare, *flags, "sh", "-c", f'{mount} && ! touch "$0/.probe" 2>/dev/null', str(target)],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    return [unshare, *flags, "sh", "-c", f'{mount} && exec "$@"', str(target)]


@pytest.mark.slow
def test_debug_on_a_read_only_run(
    trained_fixture: tuple[DatasetPaths, FixtureResult, Path], tmp_path: Path
) -> None:
    """debug on a run of a read-only file system: ORT's shape-inferred scratch copies never go into the
    run (a FileNotFoundError traceback); saving is refused in one line before measuring; --no-save ranks."""
    data, result, checkpoint = trained_fixture
    job = ExportJob(
        model=ModelSpec(result.model_name, checkpoint, len(result.classes), result.img_size),
        targets=Targets.parse("ort", True),
        calib=DataSpec(data.calib, size=8),
        val=DataSpec(data.val, size=20),
        out=tmp_path,
        name="q",
    )
    run = run_export(job).run_dir
    prefix = _read_only_bind(run)
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare --mount refused): cannot make a read-only run")
    before = snapshot(run)
    code = "from levit_edge.cli.app import main; main()"
    debug = [*prefix, sys.executable, "-c", code, "debug", str(run), "--samples", "4", "--rank-images", "8"]
    env = {**os.environ, "COLUMNS": "200"}
    saved = subprocess.run(debug, capture_output=True, text=True, env=env, timeout=600)
    assert saved.returncode == 1, saved.stderr
    assert saved.stderr.splitlines() == [
        f"error: cannot save the ranking into {run}: it is not writable; pass --no-save"
    ], saved.stderr
    ranked = subprocess.run([*debug, "--no-save"], capture_output=True, text=True, env=env, timeout=600)
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    assert "Traceback" not in ranked.stderr
    assert "most harmful layer int8.ort: " in ranked.stderr + ranked.stdout
    assert snapshot(run) == before


# A full inode table at the start of INT8 calibration, in a private tmpfs: the run is held at its
# pause point, the script takes every free inode but FREE, then lets the run go on.
_FULL_INODES = r"""
root="$1"; outside="$2"; free="$3"; shift 3
mount -t tmpfs -o size=400m,nr_inodes=4096 tmpfs "$root" || exit 99
"$@" > "$outside/stdout" 2> "$outside/stderr" &
pid=$!
while [ ! -e "$outside/paused" ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
mkdir "$root/fill"; i=0
while true > "$root/fill/$i" 2>/dev/null; do i=$((i+1)); done
while [ "$free" -gt 0 ]; do i=$((i-1)); free=$((free-1)); rm "$root/fill/$i"; done
rm -f "$outside/paused"
wait $pid; code=$?
find "$root" -path "$root/fill" -prune -o -print > "$outside/left"
exit $code
"""


@pytest.mark.slow
@pytest.mark.parametrize("free", [0, 2])  # 2: room for the model's link in scratch, not for ORT's copy
def test_inodes_exhausted_during_calibration_is_one_line(
    trained_fixture: tuple[DatasetPaths, FixtureResult, Path], tmp_path: Path, free: int
) -> None:
    from levit_edge.pausepoint import ENV

    data, result, checkpoint = trained_fixture
    unshare = shutil.which("unshare")
    root = tmp_path / "root"
    root.mkdir()
    flags = ["--mount"] if os.geteuid() == 0 else ["--mount", "--map-root-user"]
    probe = [unshare or "unshare", *flags, "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', str(root)]
    if unshare is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare --mount refused): cannot make a small tmpfs")
    export = [
        sys.executable, "-c", "from levit_edge.cli.app import main; main()", "export",
        "--model", result.model_name, "--img-size", str(result.img_size),
        "--num-classes", str(len(result.classes)), "--checkpoint", str(checkpoint),
        "--int8", "--target", "ort", "--calib", str(data.calib), "--calib-size", "8",
        "--out", str(root / "out"), "--name", "r",
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200", ENV: f"stage:calibrate={tmp_path / 'paused'}"}
    script = [unshare, *flags, "sh", "-c", _FULL_INODES, "sh", str(root), str(tmp_path), str(free)]
    proc = subprocess.run([*script, *export], capture_output=True, text=True, env=env, timeout=600)
    stderr = (tmp_path / "stderr").read_text()
    assert proc.returncode == 1, proc.stderr + stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "No space left on device" in lines[0] or "is the disk full" in lines[0], stderr
    assert (tmp_path / "left").read_text().split() == [str(root)], "the failed run left files behind"
