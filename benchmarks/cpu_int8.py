#!/usr/bin/env python3
"""Issue 16: ORT INT8 vs what users would pick instead, and the attention-fusion levers, in ONE process.

Exports LeViT-128S at 224 (``levit-edge export --int8 --target all --no-engine``), then times side by side
(``levit_edge.bench.time_variants``: interleaved rounds, each runner at the thread count its row reports):
PyTorch eager (timm, fused), ``torch.compile``, ONNX Runtime FP32 / INT8 (ort profile) / TensorRT Q/DQ model,
OpenVINO on the same ONNX files (when importable), and the ort-profile levers of
``levit_edge.export.ort_levers`` (fused MultiHeadAttention, with and without head-major qkv weights), at
batch 1 with 1, 4 and 16 threads (``--threads``) and batch 16 at the last thread count. Then ONNX Runtime's
profile (time by op type, node counts) of the INT8 model and its levers. Writes one JSON file.

    python benchmarks/cpu_int8.py --out benchmarks/results/xeon-int8-16.json --threads 1,4,16
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

import onnx  # noqa: E402
from run_benchmarks import calibration_array, export_model, log, machine, profile_ops  # noqa: E402

LEVERS = {
    "int8.ort+mha": ("int8.ort", False, "ort INT8 + com.microsoft MultiHeadAttention (attention_bias)"),
    "int8.ort+mha+hm": ("int8.ort", True, "ort INT8 + MultiHeadAttention + head-major qkv weights"),
    "fp32+mha+hm": ("fp32", True, "FP32 + MultiHeadAttention + head-major qkv weights"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/levit-int8-16")
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--budget", type=float, default=6.0, help="seconds of timed calls per point")
    ap.add_argument("--batch16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--command", default=" ".join(sys.argv))
    ap.add_argument("--reuse", action="store_true", help="reuse an earlier export in --work (smoke runs)")
    ap.add_argument(
        "--only-ort",
        action="store_true",
        help="ONNX Runtime variants only: standard-ops INT8 rebuilt from the run's calibration, the ort "
        "profile's file and the levers, with the standard-ops model timed twice (first and last) to expose "
        "any effect of position in the interleaved round",
    )
    args = ap.parse_args()

    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
    from levit_edge.bench import (
        INTERLEAVED_SESSION_CONFIG,
        BenchSettings,
        skipped_variants,
        time_variants,
    )
    from levit_edge.export.ort_levers import fuse_attention
    from levit_edge.flows.bench import BenchVariants, variant_factories
    from levit_edge.runs.finished import FinishedRun
    from levit_edge.runs.layout import ARTIFACT_FILES

    work = Path(args.work)
    out_path = Path(args.out)
    result: dict[str, Any] = {"command": args.command, "machine": machine(), "started": time.time()}

    def save() -> None:
        out_path.write_text(json.dumps(result, indent=1, default=str))

    calib = calibration_array(work, args.calib_size)
    log("export levit_128s")
    if args.reuse and (work / "levit_128s" / "report.json").is_file():
        exported = {"run_dir": str(work / "levit_128s"), "reused": True}
    else:
        exported = export_model("levit_128s", work, calib, args.calib_size)
    result["export"] = exported
    run_dir = Path(exported["run_dir"])
    factories, input_size = variant_factories(FinishedRun(run_dir), BenchVariants())
    result["skipped"] = skipped_variants()
    if args.only_ort:
        import dataclasses

        from levit_edge.quant.calibrate import CALIBRATION_FILE, Calibration
        from levit_edge.quant.profiles import ORT_PROFILE
        from levit_edge.quant.quantize import quantize

        std = run_dir / "model.lever.int8.ort-std.onnx"
        cal = Calibration.load(run_dir / CALIBRATION_FILE)
        quantize(
            run_dir / ARTIFACT_FILES["fp32"],
            cal,
            dataclasses.replace(ORT_PROFILE, fuse_attention=False, head_major=False),
            std,
        )
        keep = {k: factories[k] for k in ("fp32", "int8.ort")}
        factories = {
            "int8.ort-std": lambda t, p=std: OnnxRuntimeRunner(p, t, config=INTERLEAVED_SESSION_CONFIG)
        }
        factories.update(keep)
        ARTIFACT_FILES = {**ARTIFACT_FILES, "int8.ort": std.name}  # levers start from standard ops
    levers: dict[str, Any] = {}

    for name, (base, head_major, what) in LEVERS.items():
        model = onnx.load(str(run_dir / ARTIFACT_FILES[base]))
        fused = fuse_attention(model, head_major=head_major)
        path = run_dir / f"model.lever.{name}.onnx"
        onnx.save(model, str(path))
        levers[name] = {"what": what, **fused.__dict__}
        factories[name] = lambda t, p=path: OnnxRuntimeRunner(p, t, config=INTERLEAVED_SESSION_CONFIG)
    result["levers"] = levers
    if args.only_ort:
        factories["int8.ort-std#2"] = factories["int8.ort-std"]
    save()
    threads = [int(t) for t in args.threads.split(",")]
    rows: list[dict[str, Any]] = []
    result["results"] = rows
    points = [(1, t) for t in threads] + ([(16, threads[-1])] if args.batch16 else [])
    for batch, t in points:
        log(f"time batch {batch} threads {t}: {len(factories)} variants")
        settings = BenchSettings(
            batches=(batch,),
            threads=(t,),
            warmup=3,
            rounds=5,
            per_round=20,
            input_size=input_size,
            budget_s=args.budget,
        )
        rows += [r.to_dict() for r in time_variants(factories, settings, ("fp32", "int8.ort", "torch"))]
        save()
    prof: dict[str, Any] = {}
    for key in ("fp32", "int8.ort", "int8.ort+mha", "int8.ort+mha+hm"):
        path = run_dir / ARTIFACT_FILES.get(key, f"model.lever.{key}.onnx")
        for t in (1, threads[-1]):
            log(f"profile {key} threads {t}")
            prof[f"{key}@{t}"] = profile_ops(path, threads=t, batch=1, runs=40)
            save()
    result["profile"] = prof
    result["finished"] = time.time()
    save()
    log(f"wrote {out_path}")


def fixture_accuracy(fixture: Path, out: Path) -> dict[str, Any]:
    """Top-1 on the trained fixture's validation split: FP32, the ort INT8 model with standard ops, and
    with each attention lever (same calibration, same Q/DQ)."""
    import dataclasses

    import numpy as np
    import onnxruntime as ort
    import torch

    from levit_edge.data.open_source import open_source
    from levit_edge.data.preprocess import PreprocessConfig
    from levit_edge.data.sources import DataSpec
    from levit_edge.export.onnx import ExportSettings, export_onnx
    from levit_edge.export.ort_levers import fuse_attention
    from levit_edge.model.fuse import fuse_levit
    from levit_edge.model.load import ModelSpec, load_model
    from levit_edge.quant.calibrate import calibrate
    from levit_edge.quant.profiles import ORT_PROFILE
    from levit_edge.quant.quantize import quantize
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
    plain = out / "model.int8.ort.onnx"
    quantize(fp32, cal, dataclasses.replace(ORT_PROFILE, fuse_attention=False, head_major=False), plain)
    batches = list(open_source(DataSpec(fixture / "data" / "val", None, None, 0, False)).batches(pre, 64))
    x = np.concatenate([b.images for b in batches])
    y = np.concatenate([b.labels for b in batches if b.labels is not None])

    def top1(model: onnx.ModelProto | Path) -> tuple[float, np.ndarray]:
        data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        pred = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0]).argmax(1)
        return round(float((pred == y).mean() * 100), 2), pred

    res: dict[str, Any] = {"val_images": len(y), "calib_images": len(calib)}
    res["fp32"], _ = top1(fp32)
    res["int8.ort (standard ops)"], base = top1(plain)
    for name, head_major in (("int8.ort+mha", False), ("int8.ort+mha+hm (the ort profile now)", True)):
        model = onnx.load(str(plain))
        fuse_attention(model, head_major=head_major)
        res[name], pred = top1(model)
        res[name + " agreement with standard ops %"] = round(float((pred == base).mean() * 100), 2)
    return res


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "fixture":  # cpu_int8.py fixture <fixture dir> <out.json>
        acc = fixture_accuracy(Path(sys.argv[2]), Path("/tmp/levit-int8-16-fixture"))
        acc["command"] = "python benchmarks/cpu_int8.py " + " ".join(sys.argv[1:])
        Path(sys.argv[3]).write_text(json.dumps(acc, indent=1))
        print(json.dumps(acc, indent=1))
    else:
        main()
