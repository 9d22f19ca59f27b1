#!/usr/bin/env python3
"""Does accuracy-aware quantization earn its place? Every calibration method, all layers quantized, against
the ``--accuracy-budget`` result, for both INT8 targets, on the trained fixture; writes BENCHMARKS.md's
``accuracy-aware`` section (between its markers only) and ``benchmarks/results/accuracy-aware.json``.

Two calibration sets: the fixture's own (20 images per class) and a skewed one (the first two images of a
single class, what the head of a class-sorted listing gives). For each set and
method one ``levit-edge export --int8 --target all --no-engine --accuracy-budget B`` runs through the
library; the all-quantized model is its fallback step 0 (rebuilt byte for byte from the run's
calibration.json for timing), the accuracy-aware model is what the run kept. Latency: batch 1, the FP32,
all-quantized and accuracy-aware models timed side by side in interleaved rounds in one process.

    python benchmarks/accuracy_aware.py --cases fixture:0.25,skewed:0.5,skewed:0.25 --threads 1
    python benchmarks/accuracy_aware.py render   # re-make the section from the saved JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

MD_FILE = REPO / "BENCHMARKS.md"
RESULT = REPO / "benchmarks" / "results" / "accuracy-aware.json"
BEGIN, END = "<!-- accuracy-aware:begin -->", "<!-- accuracy-aware:end -->"
METHODS = ("minmax", "percentile", "entropy")
SKEW_CLASS = "gradient"
# What the measured table says (re-read after every run; `render` re-makes the section from the JSON).
NOTES_TEXT = """\
What this shows:

* **Good calibration data: the budget costs nothing.** Five of the six models fit at once (one validation
  pass, under a second). The sixth, the TensorRT profile with MinMax ranges (0.4 points over a 0.25 budget),
  was fixed by the cheap step alone: percentile ranges for 12 input tensors of its top-ranked layers, each
  chosen by its own quantization SQNR on the calibration samples; no layer in float, KL 0.0016 -> 0.0009,
  same size and speed.
* **Skewed calibration data: no calibration method helps, the fallback does.** Two images of one smooth
  class give ranges far too narrow for the textured classes whatever the estimator (percentile and entropy
  over two images land on the min/max): every method loses 1.2 points on the ONNX Runtime profile and
  3.4-3.6 on the TensorRT profile. With a 0.5 budget, 1 layer of 47 (ONNX Runtime) or 4 of 71 (TensorRT: an
  attention projection and three stem convolutions) in float bring every model to 0.4 points and cut the KL
  about 2x (ONNX Runtime) and 3x (TensorRT), for +0.39 MB (+5 %) / +0.66 MB (+9 %) of float weights and
  no batch-1 latency change beyond the noise (the ONNX Runtime model stays 2.4-3x faster than FP32 at one
  thread). The TensorRT curve falls
  steadily with each ranked layer (3.6, 2.6, 1.6, 0.8, 0.4), and the bisection stops at the smallest passing
  count.
* **Impossible budgets fail loudly.** With 0.25 on the skewed set the drop plateaus at 0.4 from 1 (ONNX
  Runtime) or 4 (TensorRT) float layers up to the limit of 8: exit 3, the all-quantized models kept byte for
  byte, every attempt in the report. The cure there is calibration data (a class-balanced list such as
  MLPerf's), not more float layers.
* Cost: the ranking dominates (about 0.3 s per quantized layer here); each step is one quantization (~3 s)
  and one validation pass. Latencies are p50 of interleaved rounds on a shared 2-core machine (load 3-4 from
  other jobs; the last rows ran busier): compare within a row. `int8.trt` is ONNX Runtime emulating the Q/DQ
  graph on the CPU, not an engine.
"""
NOTES = tuple(" ".join(p.split()) if p.strip() else "" for p in re.split(r"\n(?=\* |\n)", NOTES_TEXT.strip()))


def timed(
    models: dict[str, Path], input_size: tuple[int, ...], threads: int, rounds: int, calls: int
) -> dict[str, dict[str, float]]:
    """Batch-1 p50/p90 (ms) of each model, interleaved: every round times each model ``calls`` times."""
    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner

    image = np.random.default_rng(0).standard_normal((1, *input_size)).astype(np.float32)
    runners = {k: OnnxRuntimeRunner(p, threads) for k, p in models.items()}
    for r in runners.values():
        r.__enter__()
        for _ in range(5):
            r.infer(image)
        r.latencies_ms.clear()
    try:
        for _ in range(rounds):
            for r in runners.values():
                for _ in range(calls):
                    r.infer(image)
        return {
            k: {f"p{q}_ms": float(np.percentile(r.latencies_ms, q)) for q in (50, 90)}
            for k, r in runners.items()
        }
    finally:
        for r in runners.values():
            r.__exit__(None, None, None)


def run_case(
    fx: Any, calib: Path, method: str, budget: float, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """One export with the budget; both INT8 models' all-quantized vs accuracy-aware numbers."""
    import onnx

    from levit_edge.data.sources import DataSpec
    from levit_edge.errors import AccuracyGateFailed
    from levit_edge.export.metadata import preprocess_from_onnx
    from levit_edge.flows.export import run_export
    from levit_edge.flows.job import ExportJob
    from levit_edge.model.load import ModelSpec
    from levit_edge.quant.calibrate import Calibration
    from levit_edge.quant.profiles import PROFILES
    from levit_edge.quant.quantize import quantize
    from levit_edge.settings import FallbackSettings, GateSettings, QuantSettings, RuntimeSettings, Targets

    data, result, checkpoint = fx
    name = f"{calib.name}-{method}-{budget:g}"
    job = ExportJob(
        model=ModelSpec(result.model_name, checkpoint, len(result.classes), result.img_size),
        targets=Targets.parse("all", True, False),
        calib=DataSpec(calib, size=512),
        val=DataSpec(data.val),
        quant=QuantSettings(method=method),
        gate=GateSettings(budget),
        fallback=FallbackSettings(budget=budget, max_float_layers=args.max_float_layers),
        runtime=RuntimeSettings(threads=args.threads),
        out=out,
        name=name,
        force=True,
    )
    start = time.perf_counter()
    try:
        run_export(job)
        exit_code = 0
    except AccuracyGateFailed:
        exit_code = 3
    seconds = time.perf_counter() - start
    run = out / name
    rep = json.loads((run / "report.json").read_text())
    calibration = Calibration.load(run / "calibration.json")
    input_size = preprocess_from_onnx(run / "model.fp32.onnx")[0].input_size
    rows = []
    for key in ("int8.ort", "int8.trt"):
        final = run / f"model.{key}.onnx"
        meta = {p.key: p.value for p in onnx.load(str(final)).metadata_props}
        plain = run.parent / f"{name}.{key}.plain.onnx"
        quantize(run / "model.fp32.onnx", calibration, PROFILES[meta["levit_edge.quant_profile"]], plain)
        steps = [s for s in rep["fallback"] if s["artifact"] == key]
        info = rep["accuracy_budget"]["artifacts"][key]
        lat = timed(
            {"fp32": run / "model.fp32.onnx", "plain": plain, "aware": final},
            input_size,
            args.threads,
            args.rounds,
            args.calls,
        )
        kept = next((s for s in steps if s["chosen"]), steps[0])
        rows.append(
            {
                "calibration": calib.name,
                "images": calibration.count,
                "method": method,
                "budget": budget,
                "artifact": key,
                "fp32_top1": rep["accuracy"]["fp32"]["top1"],
                "plain_top1": steps[0]["top1"],
                "plain_drop": steps[0]["drop"],
                "plain_kl": steps[0]["kl"],
                "aware_top1": rep["accuracy"][key]["top1"],
                "aware_drop": rep["drop"][key],
                "aware_kl": kept["kl"],
                "met": info["met"],
                "float_layers": len(info["float_layers"] or []),
                "float_names": info["float_layers"] or [],
                "curve": sorted(
                    (len(s["float_layers"]), s["action"], round(s["drop"], 2), round(s["kl"], 5))
                    for s in steps
                ),
                "range_overrides": len(info["range_overrides"]),
                "steps": len(steps),
                "fallback_s": info["seconds"],
                "latency": lat,
                "size_plain": plain.stat().st_size,
                "size_aware": final.stat().st_size,
            }
        )
        plain.unlink()
    return {"name": name, "exit_code": exit_code, "seconds": seconds, "rows": rows}


def outcome(row: dict[str, Any]) -> str:
    """What the loop did, in words."""
    if not row["met"]:
        return "**not met**: exit 3, all-quantized kept"
    if row["steps"] == 1:
        return "met at once"
    parts = [f"{row['float_layers']} float"] if row["float_layers"] else []
    if row.get("range_overrides"):
        parts.append(f"{row['range_overrides']} tuned ranges")
    return "met: " + " + ".join(parts)


def render(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md section."""
    intro = " ".join(
        [
            f"Trained fixture (LeViT-128S at 64 px, 10 classes, {doc['val_images']} validation images,",
            f"FP32 top-1 {doc['fp32_top1']:.1f} %); budget in top-1 points per row, at most",
            f"{doc['max_float_layers']} layers in float per model. *All-quantized* is the plain INT8",
            "model of each profile; *accuracy-aware* is what `export --accuracy-budget` kept: the same",
            "model when it already fits, else the smallest prefix of the sensitivity ranking kept in float",
            "that fits (or, when none does, the all-quantized model and exit 3). Latency: batch 1, p50,",
            f"{doc['threads']} thread(s), FP32 / all-quantized / accuracy-aware timed side by side in one",
            f"process ({doc['rounds']} interleaved rounds of {doc['calls']} calls); `int8.trt` is the",
            "TensorRT Q/DQ model run by ONNX Runtime on the CPU (a correctness stand-in: its latency here",
            "says nothing about an engine).",
        ]
    )
    lines = [
        BEGIN,
        "## Accuracy-aware INT8 (issue 6): every calibration method vs `--accuracy-budget`",
        "",
        intro,
        "",
        f"Machine: {doc['machine']}; load average at start {doc['load']}. Command: `{doc['command']}` "
        f"({doc['date']}, {doc['total_s']:.0f} s in all).",
        "",
        "| calibration | method | model | budget | FP32 ms | all-quantized top-1 (drop), KL | ms "
        "| accuracy-aware top-1 (drop), KL | ms | layers in float | steps | fallback s | result |",
        "|---|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for case in doc["cases"]:
        for r in case["rows"]:
            lat = r["latency"]
            lines.append(
                f"| {r['calibration']} ({r['images']} img) | {r['method']} | {r['artifact']} "
                f"| {r['budget']:g} | {lat['fp32']['p50_ms']:.2f} "
                f"| {r['plain_top1']:.1f} ({r['plain_drop']:+.1f}), {r['plain_kl']:.4f} "
                f"| {lat['plain']['p50_ms']:.2f} "
                f"| {r['aware_top1']:.1f} ({r['aware_drop']:+.1f}), {r['aware_kl']:.4f} "
                f"| {lat['aware']['p50_ms']:.2f} "
                f"| {r['float_layers']} | {r['steps']} | {r['fallback_s']:.0f} | {outcome(r)} |"
            )
    worked = []
    for case in doc["cases"]:
        for r in case["rows"]:
            if r["steps"] == 1:
                continue
            curve = ", ".join(
                f"{n}{' (ranges)' if action == 'ranges' else ''}: {drop:.1f}"
                for n, action, drop, _kl in r.get("curve", [])
            )
            kept = ", ".join(f"`{n}`" for n in r["float_names"]) or "none"
            kept = kept if r["met"] else "none (not met)"
            worked.append(
                f"* {r['calibration']} / {r['method']} / {r['artifact']}, budget {r['budget']:g}: "
                f"drop by layers in float {{{curve}}}; kept in float: {kept}"
            )
    if worked:
        lines += [
            "",
            "Every fallback step (layers in float: top-1 drop) and the layers kept in float:",
            "",
            *worked,
        ]
    lines += ["", *NOTES, END]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace only this script's section of BENCHMARKS.md (other sections belong to other scripts)."""
    current = MD_FILE.read_text() if MD_FILE.exists() else "# Benchmarks\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = current.rstrip("\n") + "\n\n" + text
    tmp = MD_FILE.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, MD_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=("run", "render"))
    parser.add_argument(
        "--cases",
        default="fixture:0.25,skewed:0.5,skewed:0.25",
        help="calibration set:budget (top-1 points) pairs, each run with every method",
    )
    parser.add_argument("--max-float-layers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--fixture", type=Path, default=REPO / ".cache" / "fixture")
    args = parser.parse_args()
    if args.mode == "render":
        write_section(render(json.loads(RESULT.read_text())))
        return

    from levit_edge.fixture.cache import ensure_fixture

    fx = ensure_fixture(args.fixture)
    data = fx[0]
    start = time.perf_counter()
    load = os.getloadavg()[0]
    cases = []
    with tempfile.TemporaryDirectory(prefix="levit-edge-aa-") as tmp:
        sets = {"fixture": data.calib}
        skew = Path(tmp) / f"skewed-{SKEW_CLASS}"
        skew.mkdir()
        for image in sorted((data.calib / SKEW_CLASS).glob("*.png"))[:2]:
            shutil.copy(image, skew / image.name)
        sets["skewed"] = skew
        for item in args.cases.split(","):
            set_name, budget_text = item.split(":")
            budget = float(budget_text)
            for method in args.methods.split(","):
                print(f"{set_name} {method} {budget:g} ...", file=sys.stderr, flush=True)
                case = run_case(fx, sets[set_name], method, budget, args, Path(tmp) / "runs")
                for r in case["rows"]:
                    r["calibration"] = set_name
                cases.append(case)
                print(json.dumps([{k: v for k, v in r.items() if k != "float_names"} for r in case["rows"]]),
                      file=sys.stderr, flush=True)  # fmt: skip
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), platform.processor())
    first = cases[0]["rows"][0]
    doc = {
        "case_spec": args.cases,
        "max_float_layers": args.max_float_layers,
        "threads": args.threads,
        "rounds": args.rounds,
        "calls": args.calls,
        "fp32_top1": first["fp32_top1"],
        "val_images": sum(1 for _ in data.val.rglob("*.png")),
        "machine": f"{cpu}, {os.cpu_count()} cores",
        "load": f"{load:.1f}",
        "command": "python benchmarks/accuracy_aware.py " + shlex.join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "total_s": time.perf_counter() - start,
        "cases": cases,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    write_section(render(doc))


if __name__ == "__main__":
    main()
