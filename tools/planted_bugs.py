"""Plant each bug that issue 19 named in a scratch copy and run the tests that must catch it.

Run by hand, not by CI: ``python tools/planted_bugs.py SCRATCH_WORKTREE [--slow]``. Each bug is a textual
edit of one module; the script applies it, runs the named tests with PYTHONPATH at the scratch copy,
records whether they failed (the bug was caught), and restores the file. ``--slow`` adds the bugs whose
catching tests need the trained fixture (several minutes each).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    slow: bool = False


BUGS = (
    Bug(
        "verify skips model.fp32.onnx",
        "levit_edge/runs/manifest.py",
        "        path = run_dir / name\n        if path.is_symlink() or not path.is_file():",
        "        path = run_dir / name\n        if name == 'model.fp32.onnx':\n            continue\n"
        "        if path.is_symlink() or not path.is_file():",
        ("tests/test_interrupts.py::test_verify_names_a_change_in_any_listed_file",),
    ),
    Bug(
        "a drop exactly equal to --max-drop fails the gate",
        "levit_edge/validate/gate.py",
        "if c.drop > settings.max_drop + 1e-9",
        "if c.drop >= settings.max_drop",
        ("tests/test_metrics_gate.py",),
    ),
    Bug(
        "per-class rows of classes 0 and 1 get each other's names",
        "levit_edge/validate/metrics.py",
        "names[c] if c < len(names) else str(c),",
        "names[1 - c if c < 2 else c] if c < len(names) else str(c),",
        ("tests/test_metrics_gate.py",),
    ),
    Bug(
        "top5 = top1",
        "levit_edge/validate/metrics.py",
        "    top5 = float(np.mean((top == labels[:, None]).any(axis=1)) * 100.0)",
        "    top5 = top1",
        ("tests/test_metrics_gate.py",),
    ),
    Bug(
        "calibration uses half of every batch",
        "levit_edge/quant/calibrate.py",
        "            calibrator.collect_data(_BatchReader(batch))\n            done += batch.shape[0]",
        "            batch = batch[: max(1, len(batch) // 2)]\n"
        "            calibrator.collect_data(_BatchReader(batch))\n            done += batch.shape[0]",
        ("tests/test_calibrate.py",),
    ),
    Bug(
        "the gate never fails",
        "levit_edge/validate/gate.py",
        "    return GateResult(FAILED if failures else PASSED, settings.max_drop, failures)",
        "    return GateResult(PASSED, settings.max_drop, ())",
        ("tests/test_metrics_gate.py",),
    ),
    Bug(
        "a SIGINT leaves .NAME.partial-* behind",
        "levit_edge/runs/staging.py",
        "        with signals_deferred():\n            shutil.rmtree(self.dir, ignore_errors=True)",
        "        with signals_deferred():\n            import sys as _s\n"
        "            if not isinstance(_s.exc_info()[1], KeyboardInterrupt):\n"
        "                shutil.rmtree(self.dir, ignore_errors=True)",
        ("tests/test_interrupts.py::test_sigint_sigterm_and_sighup_unwind_and_remove_the_staged_run",),
        slow=True,
    ),
    Bug(
        "an INT8 run without validation reports passed",
        "levit_edge/flows/export.py",
        "    if gate is None and job.targets.int8:\n        return Status.UNVALIDATED",
        "    if gate is None and job.targets.int8:\n        return Status.PASSED",
        ("tests/test_int8_pipeline.py::test_int8_without_validation_is_unvalidated_not_passed",),
        slow=True,
    ),
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scratch", type=Path)
    parser.add_argument("--slow", action="store_true")
    args = parser.parse_args()
    root = args.scratch.resolve()
    env = {**os.environ, "PYTHONPATH": str(root)}
    survived = []
    for bug in BUGS:
        if bug.slow and not args.slow:
            continue
        path = root / bug.path
        original = path.read_text()
        if original.count(bug.old) != 1:
            print(f"SKIP  {bug.name}: anchor not found once in {bug.path} (code moved?)")
            survived.append(bug.name)
            continue
        path.write_text(original.replace(bug.old, bug.new))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *bug.tests],
                cwd=root, env=env, capture_output=True, text=True,
            )  # fmt: skip
        finally:
            path.write_text(original)
        caught = proc.returncode == 1
        failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
        print(f"{'CAUGHT' if caught else 'SURVIVED'}  {bug.name}: {failed[:2] or proc.stdout[-300:]}")
        if not caught:
            survived.append(bug.name)
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
