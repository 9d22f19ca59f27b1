#!/usr/bin/env python3
# ruff: noqa: E501  (markdown table rows read better unsplit)
"""BENCHMARKS.md's issue-16 section, made from the raw JSON of ``benchmarks/cpu_int8.py`` (and the fixture
accuracy file it writes), nothing typed by hand:

    python benchmarks/render_int8_16.py benchmarks/results/xeon-int8-16.json \
        benchmarks/results/fixture-levers-16.json benchmarks/results/epyc-int8-16.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from run_benchmarks import describe_machine, update_markdown  # noqa: E402

TAG = "xeon-int8-16"
NAMES = {
    "torch": "PyTorch eager FP32 (timm)",
    "torch.fused": "PyTorch eager FP32 (fused)",
    "torch.compile": "torch.compile FP32 (timm, inductor)",
    "fp32": "ONNX Runtime FP32",
    "int8.ort": "ONNX Runtime INT8, ort profile with standard ops (before issue 16)",
    "int8.ort+mha": "ONNX Runtime INT8 + MultiHeadAttention (lever)",
    "int8.ort+mha+hm": "ONNX Runtime INT8 + MultiHeadAttention + head-major qkv (**the ort profile now**)",
    "fp32+mha+hm": "ONNX Runtime FP32 + MultiHeadAttention + head-major qkv (lever)",
    "int8.trt": "TensorRT Q/DQ model on ONNX Runtime",
    "openvino.fp32": "OpenVINO on model.fp32.onnx (default precision: bf16 on AMX)",
    "openvino.fp32-f32": "OpenVINO on model.fp32.onnx, f32",
    "openvino.int8.ort": "OpenVINO on model.int8.ort.onnx (standard ops)",
    "openvino.int8.trt": "OpenVINO on model.int8.trt.onnx",
}
NEW = "int8.ort+mha+hm"


def _table(res: dict[str, Any]) -> tuple[dict[tuple[int, int], dict[str, Any]], list[tuple[int, int]]]:
    pts: dict[tuple[int, int], dict[str, Any]] = {}
    for row in res["results"]:
        pts.setdefault((row["batch"], row["threads"]), {})[row["variant"]] = row
    return pts, list(pts)


def render(res: dict[str, Any], acc: dict[str, Any] | None, local: dict[str, Any] | None = None) -> str:
    pts, keys = _table(res)
    m = res["machine"]
    v = m.get("versions", {})
    lines = [
        f"<!-- section:{TAG} -->",
        "## Issue 16: ORT INT8 vs what users would pick instead (Intel Xeon, 16 cores, one process)",
        "",
        f"Machine: {describe_machine(m)}. Versions: "
        + ", ".join(
            f"{k} {v[k]}" for k in sorted(v) if k in ("onnxruntime", "torch", "onnx", "timm", "numpy")
        ),
        "OpenVINO 2026.4.1 (wheel carried to the machine).",
        f"Command: `{res['command']}` (raw: `benchmarks/results/{TAG}.json`; made into this section by "
        f"`python benchmarks/render_int8_16.py benchmarks/results/{TAG}.json "
        "benchmarks/results/fixture-levers-16.json benchmarks/results/epyc-int8-16.json`).",
        "LeViT-128S at 224, random weights, exported by `levit-edge export --int8 --target all --no-engine`; every "
        "variant timed side by side in interleaved rounds by `levit_edge.bench.time_variants` (the bench whose "
        "PyTorch thread restore is fixed); `threads used` is read back from each runtime after timing "
        "(PyTorch inside inference, ONNX Runtime's session options, OpenVINO's compiled model). p50 ms:",
        "",
        "| variant | " + " | ".join(f"batch {b}, {t} thr" for b, t in keys) + " | threads used |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    order = sorted(pts[keys[0]], key=lambda n: list(NAMES).index(n) if n in NAMES else 99)
    for name in order:
        cells = [f"{pts[k][name]['p50_ms']:.2f}" if name in pts[k] else "-" for k in keys]
        used = sorted({str(pts[k][name]["threads_used"]) for k in keys if name in pts[k]}, key=int)
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells) + f" | {'/'.join(used)} |")
    lines += ["", "### Targets (ratios within this one run; > 1 means ORT INT8 is faster)", ""]

    def r(a: str, b: str, k: tuple[int, int]) -> float:
        return float(pts[k][b]["p50_ms"] / pts[k][a]["p50_ms"])

    ov_best = {
        k: min(("openvino.fp32", "openvino.int8.trt", "openvino.int8.ort"), key=lambda n: pts[k][n]["p50_ms"])
        for k in keys
    }
    lines += ["| target | point | before (standard ops) | now (ort profile) | met |", "|---|---|---|---|---|"]
    for k in keys[:3]:
        before, now = r("int8.ort", ov_best[k], k), r(NEW, ov_best[k], k)
        lines.append(
            f"| ORT INT8 >= OpenVINO on the same CPU (fastest OpenVINO variant: `{ov_best[k]}`) | batch {k[0]}, {k[1]} thr "
            f"| {before:.2f}x | {now:.2f}x | {'**yes**' if now >= 1 else 'no'} |"
        )
    k4 = next(k for k in keys if k == (1, 4))
    lines.append(
        f"| ORT INT8 >= 1.5x ORT FP32 | batch 1, 4 thr | {r('int8.ort', 'fp32', k4):.2f}x | {r(NEW, 'fp32', k4):.2f}x "
        f"| {'**yes**' if r(NEW, 'fp32', k4) >= 1.5 else 'no'} |"
    )
    kb = keys[-1]
    lines.append(
        f"| batch 16 throughput >= torch.compile | batch {kb[0]}, {kb[1]} thr | {r('int8.ort', 'torch.compile', kb):.2f}x "
        f"| {r(NEW, 'torch.compile', kb):.2f}x | {'**yes**' if r(NEW, 'torch.compile', kb) >= 1 else 'no'} |"
    )
    lines.append(
        f"| (re-measured) ORT INT8 vs PyTorch eager, with the thread fix | batch {kb[0]}, {kb[1]} thr "
        f"| {r('int8.ort', 'torch', kb):.2f}x | {r(NEW, 'torch', kb):.2f}x | the earlier 4.95x (16 threads) "
        "came from PyTorch rows run on one thread |"
    )
    if local:
        t = local["timing"]
        cpu = {k: t[k]["cpu_p50_ms"] for k in t}
        lines += [
            "",
            f"On this project's 2-core machine ({describe_machine(local['machine'])}; shared with other jobs, so "
            f"by the calling thread's CPU time; `{local['command']}`), one thread, batch 1: FP32 {cpu['fp32']:.2f} ms, "
            f"INT8 standard ops {cpu['int8.ort']:.2f} ms ({cpu['fp32'] / cpu['int8.ort']:.2f}x), INT8 fused "
            f"(the ort profile now) {cpu['int8.ort+mha+hm']:.2f} ms ({cpu['fp32'] / cpu['int8.ort+mha+hm']:.2f}x): "
            f"target INT8 >= 1.5x FP32 at one thread **{'met' if cpu['fp32'] / cpu['int8.ort+mha+hm'] >= 1.5 else 'not met'}**"
            " (wall p50 on the loaded machine: "
            + ", ".join(f"{k} {t[k]['p50_ms']:.2f}" for k in t)
            + " ms). The fusion is within noise here at one thread (-1 %).",
        ]
    lines += ["", "### Levers (ort profile only; x = standard-ops INT8 p50 / lever p50)", ""]
    lines += [
        "| lever | nodes in the file | " + " | ".join(f"b{b}/{t} thr" for b, t in keys) + " | kept |",
        "|---|---|" + "---|" * (len(keys) + 1),
    ]
    for name, info in res["levers"].items():
        base = "fp32" if name.startswith("fp32") else "int8.ort"
        cells = [f"{r(name, base, k):.2f}x" for k in keys]
        kept = (
            "**yes: the ort profile**"
            if name == NEW
            else (
                "no: the head-major variant is faster"
                if name == "int8.ort+mha"
                else "no: the FP32 model keeps standard ops"
            )
        )
        lines.append(
            f"| {NAMES.get(name, name)} | {info['nodes_before']} -> {info['nodes_after']} | "
            + " | ".join(cells)
            + f" | {kept} |"
        )
    lines += [
        "",
        "Not built, with the reason: *HardSwish kept as one op*: the file already has one HardSwish node per "
        "activation (opset 17); ONNX Runtime 1.30 itself runs them as HardSigmoid + Mul (22 + 22 in the "
        "profile below, no HardSwish kernel timed), so a graph pass cannot keep them whole. *Activations kept "
        "quantized across Reshape/Transpose*: not tried; after the fusion one Transpose is left in the graph "
        "and the 45 QuantizeLinear feed QGemms directly.",
    ]
    if acc:
        lines += [
            "",
            f"Top-1 on the trained fixture ({acc['val_images']} validation images; `{acc['command']}`):",
            "",
        ]
        lines += ["| model | top-1 % | agreement with standard-ops INT8 % |", "|---|---|---|"]
        for key, val in acc.items():
            if key in ("val_images", "calib_images", "command") or key.endswith("%"):
                continue
            agree = acc.get(key + " agreement with standard ops %", "")
            lines.append(f"| {key} | {val} | {agree} |")
    lines += [
        "",
        "### Why the 4- and 16-thread targets are out of reach: ONNX Runtime's profile (batch 1)",
        "",
    ]
    prof = res["profile"]
    lines += [
        "ONNX Runtime's profiler, each node's minimum over 40 runs summed by op type (ms), with the node count:",
        "",
        "| op | " + " | ".join(prof) + " |",
        "|---|" + "---|" * len(prof),
    ]
    ops = sorted(
        {o for p in prof.values() for o in p["ops"]},
        key=lambda o: -max(p["ops"].get(o, {"ms": 0})["ms"] for p in prof.values()),
    )
    for o in ops[:12]:
        lines.append(
            f"| {o} | "
            + " | ".join(
                f"{p['ops'][o]['ms']:.3f} ({p['ops'][o]['nodes']})" if o in p["ops"] else "-"
                for p in prof.values()
            )
            + " |"
        )
    lines.append(
        "| **nodes run** | "
        + " | ".join(str(sum(x["nodes"] for x in p["ops"].values())) for p in prof.values())
        + " |"
    )
    lines.append(
        "| **sum of node times** | " + " | ".join(f"{p['sum_ms']:.2f}" for p in prof.values()) + " |"
    )
    lines.append(
        "| **best whole run** | " + " | ".join(f"{p['best_run_ms']:.2f}" for p in prof.values()) + " |"
    )
    q1, q16 = prof.get("int8.ort@1"), prof.get("int8.ort@16")
    if q1 and q16:
        lines += [
            "",
            f"With 16 threads the INT8 model's node times add up to more than with one ({q16['sum_ms']:.2f} vs "
            f"{q1['sum_ms']:.2f} ms); QGemm alone {q16['ops']['QGemm']['ms']:.2f} vs {q1['ops']['QGemm']['ms']:.2f} ms: "
            "LeViT-128S's products are too small (at most 196 tokens x 384 channels) to split across threads, so each "
            "node pays its thread-pool dispatch, and the gaps between nodes (best whole run minus the node sum: "
            f"{q16['best_run_ms'] - q16['sum_ms']:.2f} ms at 16 threads, {q1['best_run_ms'] - q1['sum_ms']:.2f} ms at "
            "one) are per-node overhead too. That is the floor more threads do not lower; fusing 8 attention nodes into one removes "
            "77 nodes and part of that overhead (table above), but ONNX Runtime still runs ~220 nodes where "
            "OpenVINO compiles the graph into fewer, fused kernels (and, by default, bf16 on AMX). Closing the rest "
            "needs fewer nodes than ONNX Runtime's fusions give (QGemm + HardSwish, the residual Add and the "
            "QuantizeLinear in one kernel), which its CPU provider has no op for.",
        ]
    lines += ["", f"<!-- /section:{TAG} -->", ""]
    return "\n".join(lines)


def main() -> None:
    res = json.loads(Path(sys.argv[1]).read_text())
    acc = (
        json.loads(Path(sys.argv[2]).read_text())
        if len(sys.argv) > 2 and Path(sys.argv[2]).is_file()
        else None
    )
    local = json.loads(Path(sys.argv[3]).read_text()) if len(sys.argv) > 3 else None
    only = json.loads(Path(sys.argv[4]).read_text()) if len(sys.argv) > 4 else None
    text = render(res, acc, local)
    if only:
        text = text.replace(f"<!-- /section:{TAG} -->", render_only_ort(only) + f"\n<!-- /section:{TAG} -->")
    update_markdown(REPO / "BENCHMARKS.md", {TAG: text})


def render_only_ort(res: dict[str, Any]) -> str:
    """The check run: ONNX Runtime alone in the process, the standard-ops INT8 model timed first and last."""
    pts, keys = _table(res)
    names = {
        "int8.ort-std": "INT8 standard ops (timed first)",
        "int8.ort-std#2": "INT8 standard ops again (timed last)",
        "int8.ort": "INT8, the ort profile's file (fused, head-major)",
        "int8.ort+mha": "INT8 + MultiHeadAttention (lever)",
        "int8.ort+mha+hm": "INT8 + MultiHeadAttention + head-major (lever = the profile's graph)",
        "fp32": "FP32",
        "fp32+mha+hm": "FP32 + MultiHeadAttention + head-major (lever)",
    }
    lines = [
        "### Check run: ONNX Runtime alone in the process",
        "",
        f"Command: `{res['command']}` (raw: `benchmarks/results/xeon-int8-16-ort.json`). Same machine kind, "
        "a fresh export; the standard-ops INT8 model is rebuilt from the run's own calibration and timed twice "
        "(first and last in each round) to show what position alone does. p50 ms:",
        "",
        "| variant | " + " | ".join(f"batch {b}, {t} thr" for b, t in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, label in names.items():
        if name in pts[keys[0]]:
            lines.append(f"| {label} | " + " | ".join(f"{pts[k][name]['p50_ms']:.2f}" for k in keys) + " |")
    lines += [
        "",
        "What this run changes in the reading of the tables above:",
        "",
        "* **The fusion's gain is small**: against the standard-ops model (mean of its two positions) the fused "
        "graph is about 3-7 % faster at batch 1 with 4 and 16 threads and within noise at one thread and at "
        "batch 16; the same file differs by up to 6 % between positions. The 1.27x at one thread in the full "
        "run is not the lever: there, with PyTorch and OpenVINO loaded in the same process, ONNX Runtime's "
        "one-thread INT8 ran at 5.5 ms where it runs at 3.5 ms alone (the other runtimes' thread pools share the "
        "cores). The fusion is kept (fewer nodes, never slower here), with that modest claim.",
        "* **Cross-runtime ratios at one thread in the full run understate ONNX Runtime** for that reason; at 4 "
        "and 16 threads ONNX Runtime's times agree between the two runs (3.3-4.4 ms), so the OpenVINO gap there "
        "(about 1.4x at 4 and 16 threads) stands.",
        "* **torch.compile rows**: inductor fixes a kernel's parallelism at compile time. In the full run batch 1 "
        "was compiled in the one-thread pass and reused at 4 and 16 threads (the bench now resets dynamo per "
        "runner, `levit_edge/backends/torch.py`), so those two torch.compile figures may be pessimistic; batch 16 "
        "was compiled at 16 threads (17.1 ms). A second run on a machine warm from a one-thread compile got "
        "51.7 ms at batch 16 (`xeon-int8-16-run2.json`): inductor's on-disk cache ignores the thread count too.",
        "* `levit-edge bench` itself on the same machine (fused ort profile, every variant, full names when not "
        "a terminal): `benchmarks/results/raw/xeon-bench-cli-16.txt`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
