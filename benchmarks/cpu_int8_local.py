#!/usr/bin/env python3
"""One-thread FP32 vs INT8 (the ort profile's file, and the same Q/DQ with standard ops) on a shared machine,
by the calling thread's CPU time (robust to other jobs), from a run directory written by
``benchmarks/cpu_int8_levers.py levers`` (which also writes ``model.lever.int8.ort-std.onnx``):

    python benchmarks/cpu_int8_local.py /tmp/levit-levers16/levit_128s benchmarks/results/epyc-int8-16b.json
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from run_benchmarks import STOP_SPIN, _interleaved_cpu, machine, ort_runner  # noqa: E402

FILES = {
    "fp32": "model.fp32.onnx",
    "int8.ort": "model.int8.ort.onnx",
    "int8.ort-std": "model.lever.int8.ort-std.onnx",
}

if __name__ == "__main__":
    run = Path(sys.argv[1])
    variants = {k: functools.partial(ort_runner, run / f, config=STOP_SPIN) for k, f in FILES.items()}
    res = {
        "command": "python benchmarks/cpu_int8_local.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "threads": 1,
        "timing": _interleaved_cpu(variants, 1, budget=20.0),
    }
    Path(sys.argv[2]).write_text(json.dumps(res, indent=1))
    print(json.dumps(res["timing"], indent=1))
