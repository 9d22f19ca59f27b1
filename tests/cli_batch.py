"""Run many ``levit-edge`` command lines fast: import the CLI once, then fork one child per command line.

Each CLI process spends about five seconds importing torch, timm and onnx before it looks at its
arguments; a catalogue of fifty failing commands would spend minutes on imports alone. This driver pays
that once: it imports ``levit_edge.cli.app`` (and every command module), then forks a child per job. The
child is a fresh process as far as the command can tell: its own working directory, environment,
resource limits and file descriptors 0/1/2 (``/dev/null``, a stdout file, a stderr file), and it runs the
console entry point ``main()`` exactly as the installed ``levit-edge`` script does, ending with the exit
code ``main`` chose, or with Python's traceback and exit 1 for an escaped exception.

Usage: ``python tests/cli_batch.py JOBS.json RESULTS.json``. JOBS.json: ``{"parallel": N, "timeout": S,
"jobs": [{"name", "args", "cwd", "env", "stdout", "stderr", "fsize"}]}``; RESULTS.json: ``{name: {"code",
"seconds", "timed_out"}}``.
No torch computation happens before the forks (only imports), so the children start with no threads.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from typing import Any


def _child(job: dict[str, Any]) -> None:
    code = 1
    try:
        os.chdir(job["cwd"])
        os.environ.update(job.get("env") or {})
        if job.get("fsize") is not None:
            # A full disk without root: writes beyond the limit fail with EFBIG (SIGXFSZ would kill).
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], job["fsize"]))
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        from levit_edge.cli.app import main

        sys.argv = ["levit-edge", *job["args"]]
        try:
            main(list(job["args"]))
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run(jobs: list[dict[str, Any]], parallel: int, timeout: float) -> dict[str, dict[str, Any]]:
    """Fork ``parallel`` children at a time; return each job's exit code and wall time. A child running
    longer than ``timeout`` seconds is killed (code -9, ``timed_out``)."""
    queue = list(jobs)
    running: dict[int, tuple[dict[str, Any], float]] = {}
    results: dict[str, dict[str, Any]] = {}
    timed_out: set[int] = set()
    while queue or running:
        while queue and len(running) < parallel:
            job = queue.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(job)
            running[pid] = (job, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for child, (_job, start) in running.items():
                if now - start > timeout and child not in timed_out:
                    os.kill(child, signal.SIGKILL)
                    timed_out.add(child)
            time.sleep(0.02)
            continue
        job, start = running.pop(pid)
        results[job["name"]] = {
            "code": os.waitstatus_to_exitcode(status),
            "seconds": round(time.monotonic() - start, 2),
            "timed_out": pid in timed_out,
        }
    return results


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    os.environ.setdefault("COLUMNS", "200")
    from levit_edge.cli import app

    app._register_commands()  # what main() does first: every command module and its imports
    for module in spec.get("preload", []):
        __import__(module)
    results = run(spec["jobs"], int(spec.get("parallel", 2)), float(spec.get("timeout", 300)))
    with open(sys.argv[2], "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
