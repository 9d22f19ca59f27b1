#!/usr/bin/env python3
"""Issue 16, second pass: the ort profile's untried levers, then the targets, on the 16-core Xeon.

    python benchmarks/cpu_int8_levers.py levers --out levers.json   # export + every lever, ONNX Runtime only
    python benchmarks/cpu_int8_levers.py peers --out peers.json --levers levers.json  # same export; the peers
    python benchmarks/cpu_int8_levers.py fixture FIXTURE_DIR out.json  # top-1 of each graph lever (trained)

``levers``: ``levit-edge export --int8 --target all --no-engine`` of LeViT-128S at 224 (random weights), the
graph levers of ``ort_levers16.build_graph_levers`` from the run's calibration and the session levers on the
ort profile's file, all timed side by side (``levit_edge.bench.time_variants``, interleaved rounds) at
batch 1 with 1, 4 and 16 threads and batch 16 with 16; ONNX Runtime's per-op profile of the graph levers.
``peers`` (a fresh process, so no other runtime's threads are alive during ``levers``): the same run's
FP32, the ort INT8 file and the fastest levers next to PyTorch eager, ``torch.compile`` and OpenVINO.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from run_benchmarks import calibration_array, export_model, log, machine, profile_ops  # noqa: E402


def _points(threads: list[int]) -> list[tuple[int, int]]:
    return [(1, t) for t in threads] + [(16, threads[-1])]


def _time(
    factories: dict[str, Any],
    input_size: tuple[int, int, int],
    threads: list[int],
    budget: float,
    rows: list[dict[str, Any]],
    save: Any,
    baselines: tuple[str, ...],
) -> None:
    from levit_edge.bench import BenchSettings, time_variants

    for batch, t in _points(threads):
        log(f"time batch {batch} threads {t}: {len(factories)} variants")
        settings = BenchSettings(
            batches=(batch,),
            threads=(t,),
            warmup=3,
            rounds=5,
            per_round=20,
            input_size=input_size,
            budget_s=budget,
        )
        rows += [r.to_dict() for r in time_variants(factories, settings, baselines)]
        save()


def levers(args: argparse.Namespace) -> None:
    from ort_levers16 import SESSION_WHAT, build_graph_levers, session_factories

    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
    from levit_edge.bench import INTERLEAVED_SESSION_CONFIG
    from levit_edge.flows.bench import BenchVariants, variant_factories
    from levit_edge.quant.calibrate import CALIBRATION_FILE, Calibration
    from levit_edge.runs.finished import FinishedRun
    from levit_edge.runs.layout import ARTIFACT_FILES

    work, out_path = Path(args.work), Path(args.out)
    result: dict[str, Any] = {"command": args.command, "machine": machine(), "started": time.time()}

    def save() -> None:
        out_path.write_text(json.dumps(result, indent=1, default=str))

    calib = calibration_array(work, args.calib_size)
    log("export levit_128s")
    result["export"] = export_model("levit_128s", work, calib, args.calib_size)
    run_dir = Path(result["export"]["run_dir"])
    _, input_size = variant_factories(FinishedRun(run_dir), BenchVariants(torch=False, openvino=False))
    cal = Calibration.load(run_dir / CALIBRATION_FILE)
    log("build graph levers")
    graph = build_graph_levers(run_dir / ARTIFACT_FILES["fp32"], cal, run_dir)
    result["graph_levers"] = graph
    result["session_levers"] = SESSION_WHAT
    save()
    factories: dict[str, Any] = {
        "fp32": lambda t: OnnxRuntimeRunner(
            run_dir / ARTIFACT_FILES["fp32"], t, config=INTERLEAVED_SESSION_CONFIG
        )
    }
    for name, info in graph.items():
        factories[name] = lambda t, p=Path(info["path"]): OnnxRuntimeRunner(
            p, t, config=INTERLEAVED_SESSION_CONFIG
        )
    factories.update(session_factories(Path(graph["int8.ort"]["path"])))
    threads = [int(t) for t in args.threads.split(",")]
    rows: list[dict[str, Any]] = []
    result["results"] = rows
    _time(factories, input_size, threads, args.budget, rows, save, ("fp32", "int8.ort", "int8.ort-std"))
    prof: dict[str, Any] = {}
    for key in ("fp32", *graph):
        path = run_dir / ARTIFACT_FILES["fp32"] if key == "fp32" else Path(graph[key]["path"])
        for t in (1, threads[-1]):
            log(f"profile {key} threads {t}")
            prof[f"{key}@{t}"] = profile_ops(path, threads=t, batch=1, runs=40)
    result["profile"] = prof
    result["finished"] = time.time()
    save()
    log(f"wrote {out_path}")


def best_levers(levers_json: Path, most: int = 3) -> list[str]:
    """Up to ``most`` levers faster than the ort profile's file: geometric mean of the p50 ratios over the
    timed points at least 1.02 (noise in one point does not qualify a lever), best first."""
    import math

    rows = json.loads(levers_json.read_text())["results"]
    base = {(r["batch"], r["threads"]): r["p50_ms"] for r in rows if r["variant"] == "int8.ort"}
    ratios: dict[str, list[float]] = {}
    for r in rows:
        if r["variant"].startswith("int8.") and r["variant"] not in ("int8.ort", "int8.ort-std"):
            ratios.setdefault(r["variant"], []).append(base[(r["batch"], r["threads"])] / r["p50_ms"])
    gmean = {k: math.exp(sum(map(math.log, v)) / len(v)) for k, v in ratios.items()}
    return sorted((k for k, g in gmean.items() if g >= 1.02), key=lambda k: -gmean[k])[:most]


def peers(args: argparse.Namespace) -> None:
    from ort_levers16 import session_factories

    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
    from levit_edge.bench import INTERLEAVED_SESSION_CONFIG, skipped_variants
    from levit_edge.flows.bench import BenchVariants, variant_factories
    from levit_edge.runs.finished import FinishedRun

    lv = json.loads(Path(args.levers).read_text())
    run_dir = Path(lv["export"]["run_dir"])
    out_path = Path(args.out)
    result: dict[str, Any] = {"command": args.command, "machine": machine(), "started": time.time()}

    def save() -> None:
        out_path.write_text(json.dumps(result, indent=1, default=str))

    factories, input_size = variant_factories(FinishedRun(run_dir), BenchVariants())
    result["skipped"] = skipped_variants()
    extra = ["int8.ort-std", *best_levers(Path(args.levers))]  # before issue 16, and the best levers
    result["levers_added"] = extra
    graph = lv["graph_levers"]
    sessions = session_factories(Path(graph["int8.ort"]["path"]))
    for name in extra:
        if name in graph:
            factories[name] = lambda t, p=Path(graph[name]["path"]): OnnxRuntimeRunner(
                p, t, config=INTERLEAVED_SESSION_CONFIG
            )
        elif name in sessions:
            factories[name] = sessions[name]
    result["variants"] = list(factories)
    save()
    threads = [int(t) for t in args.threads.split(",")]
    rows: list[dict[str, Any]] = []
    result["results"] = rows
    _time(factories, input_size, threads, args.budget, rows, save, ("fp32", "int8.ort", "torch"))
    result["finished"] = time.time()
    save()
    log(f"wrote {out_path}")


def fixture_accuracy(fixture: Path, out: Path) -> dict[str, Any]:
    """Top-1 of FP32 and of every graph lever on the trained fixture's 500 validation images."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from ort_levers16 import build_graph_levers

    from levit_edge.data.open_source import open_source
    from levit_edge.data.preprocess import PreprocessConfig
    from levit_edge.data.sources import DataSpec
    from levit_edge.export.onnx import ExportSettings, export_onnx
    from levit_edge.model.fuse import fuse_levit
    from levit_edge.model.load import ModelSpec, load_model
    from levit_edge.quant.calibrate import calibrate
    from levit_edge.settings import QuantSettings

    meta = json.loads((fixture / "result.json").read_text())
    spec = ModelSpec(
        name=meta["model_name"],
        checkpoint=fixture / "checkpoint.pth",
        num_classes=len(meta["classes"]),
        img_size=meta["img_size"],
    )
    loaded = load_model(spec)
    pre = PreprocessConfig.from_model(loaded.model)
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "model.fp32.onnx"
    fp32.write_bytes(export_onnx(fuse_levit(loaded.model), pre.input_size, ExportSettings(), {}))
    calib = open_source(DataSpec(fixture / "data" / "calib", None, None, 0, False))
    cal = calibrate(fp32, calib, pre, QuantSettings(), 32)
    graph = build_graph_levers(fp32, cal, out)
    batches = list(open_source(DataSpec(fixture / "data" / "val", None, None, 0, False)).batches(pre, 64))
    x = np.concatenate([b.images for b in batches])
    y = np.concatenate([b.labels for b in batches if b.labels is not None])

    def predict(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0]).argmax(1)

    ref = predict(fp32)
    res: dict[str, Any] = {"val_images": len(y), "calib_images": len(calib), "top1": {}, "agreement_std": {}}
    res["top1"]["fp32"] = round(float((ref == y).mean() * 100), 2)
    std = predict(Path(graph["int8.ort-std"]["path"]))
    for name, info in graph.items():
        pred = predict(Path(info["path"]))
        res["top1"][name] = round(float((pred == y).mean() * 100), 2)
        res["agreement_std"][name] = round(float((pred == std).mean() * 100), 2)
    res["graph_levers"] = {k: {kk: v for kk, v in info.items() if kk != "path"} for k, info in graph.items()}
    return res


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "fixture":
        acc = fixture_accuracy(Path(sys.argv[2]), Path("/tmp/levit-levers16-fixture"))
        acc["command"] = "python benchmarks/cpu_int8_levers.py " + " ".join(sys.argv[1:])
        Path(sys.argv[3]).write_text(json.dumps(acc, indent=1))
        print(json.dumps({k: acc[k] for k in ("top1", "agreement_std")}, indent=1))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["levers", "peers"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/levit-levers16")
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--budget", type=float, default=5.0, help="seconds of timed calls per point")
    ap.add_argument("--levers", help="the levers phase's JSON (peers phase)")
    ap.add_argument("--command", default="python benchmarks/cpu_int8_levers.py " + " ".join(sys.argv[1:]))
    args = ap.parse_args()
    levers(args) if args.phase == "levers" else peers(args)


if __name__ == "__main__":
    main()
