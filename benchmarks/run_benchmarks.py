#!/usr/bin/env python3
"""Benchmarks of levit-edge's artifacts on the machine at hand; writes BENCHMARKS.md's section for it.

Suites (``--suite``, comma-separated):

* ``cpu``: ``levit-edge export --int8 --target all`` of each model (512 calibration images, its own
  per-stage times), then PyTorch eager (timm and fused), ONNX Runtime FP32, ONNX Runtime INT8 and the
  TensorRT Q/DQ model on ONNX Runtime, timed side by side in one process (interleaved rounds), batch 1 and
  16, one thread and every core; ratios to ONNX Runtime FP32 and to PyTorch eager FP32; model sizes.
* ``profile``: ONNX Runtime's profiler, time by op type, FP32 vs INT8 (LeViT-128S, batch 1, one thread).
* ``kernels``: the CPU's GEMM ceiling in ONNX Runtime, FP32 vs U8S8, large and LeViT-sized products.
* ``levers``: every speed lever of issue 5 (graph shape, Q/DQ recipe, session options) timed side by side,
  with the top-1 drop of each recipe on the trained fixture when ``--fixture`` is given.
* ``gpu``: PyTorch eager and ``torch.compile`` on CUDA, FP32/FP16/BF16 (needs a GPU).

Results go to ``benchmarks/results/<tag>.json`` and to the ``<tag>`` section of BENCHMARKS.md (other
sections are kept). ``render`` re-makes sections from saved JSON files, e.g. fetched from another machine:

    python benchmarks/run_benchmarks.py --tag epyc-avx2 --suite cpu,profile,kernels,levers
    python benchmarks/run_benchmarks.py render benchmarks/results/*.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runs from a plain checkout (PYTHONPATH), installed or not
    sys.path.insert(0, str(REPO))
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402

SCHEMA = 1
MD_FILE = REPO / "BENCHMARKS.md"
RESULTS_DIR = REPO / "benchmarks" / "results"
MODELS = ("levit_128s", "levit_256", "levit_384")
VARIANT_NAMES = {
    "torch": "PyTorch eager FP32 (timm)",
    "torch.fused": "PyTorch eager FP32 (fused)",
    "fp32": "ONNX Runtime FP32",
    "int8.ort": "ONNX Runtime INT8 (`levit-edge export`, ort profile)",
    "int8.trt": "TensorRT Q/DQ model on ONNX Runtime",
    "int8.plan": "TensorRT engine",
    # Extra recipes of benchmarks/levers.py timed beside the artifacts (--extra-recipes).
    "lever.ort": "ONNX Runtime INT8, recipe before issue 5 (Q/DQ on conv inputs only)",
    "lever.ort-noconv": "ONNX Runtime INT8, stem convs in float (lever)",
    "lever.ort-convout-no1st": "ONNX Runtime INT8, QLinearConv stem (lever; = ort-vnni profile now)",
    "lever.tool-vnni": "ONNX Runtime INT8, --ort-profile ort-vnni",
    # Names used by the first Xeon run (benchmarks/results/xeon-vnni-amx.json), measured before the rename.
    "int8.ort-noconv": "ONNX Runtime INT8, stem convs in float (lever; = ort profile now)",
    "int8.ort-convout-no1st": "ONNX Runtime INT8, QLinearConv stem (lever; = ort-vnni profile now)",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the machine ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from levit_edge.report.build import environment

    env = environment()
    info: dict[str, Any] = {
        "cpu": env["cpu"],
        "cores": env["cpu_count"],
        "cpu_flags": env["cpu_flags"],
        "platform": env["platform"],
        "python": env["python"],
        "versions": env["versions"],
        "load_average": list(os.getloadavg()),
    }
    with contextlib.suppress(Exception):
        import torch

        info["versions"]["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    return info


def describe_machine(m: dict[str, Any]) -> str:
    flags = ", ".join(m.get("cpu_flags", [])) or "none detected"
    text = f"{m.get('cpu') or 'unknown CPU'}, {m.get('cores')} logical cores (SIMD: {flags})"
    if m.get("gpu"):
        text += f"; GPU {m['gpu']} (CUDA {m.get('cuda')})"
    return text


# ---- calibration images -----------------------------------------------------------------------------------


def calibration_array(work: Path, count: int, seed: int = 0) -> Path:
    """``count`` images of the fixture's procedural task as an (N, H, W, 3) uint8 .npy (made once)."""
    from levit_edge.fixture.images import PATTERNS, render_image, render_size

    path = work / f"calib-{count}-{seed}.npy"
    if path.is_file():
        return path
    classes = sorted(PATTERNS)[:10]
    size = render_size(64)
    images = np.stack(
        [
            render_image(classes[i % len(classes)], np.random.default_rng([seed, i]), size)
            for i in range(count)
        ]
    )
    work.mkdir(parents=True, exist_ok=True)
    np.save(path, images.astype(np.uint8))
    return path


# ---- export (the tool's own timing) ----------------------------------------------------------------------


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from levit_edge.cli.app import main; main()", *args]


def export_model(name: str, work: Path, calib: Path, calib_size: int) -> dict[str, Any]:
    """Run ``levit-edge export --int8 --target all --no-engine`` in a fresh process; its stages and sizes."""
    args = [
        "export",
        "--model",
        name,
        "--int8",
        "--target",
        "all",
        "--no-engine",
        "--calib",
        str(calib),
        "--calib-size",
        str(calib_size),
        "--out",
        str(work),
        "--name",
        name,
        "--force",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run(cli_command(*args), capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"export of {name} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    report = json.loads((work / name / "report.json").read_text())
    return {
        "command": "levit-edge " + shlex.join(args),
        "wall_s": round(wall, 2),
        "stages": report["stages"],
        "sizes": report["sizes"],
        "run_dir": str(work / name),
        "calibration_images": report.get("calibration", {}).get("count"),
    }


# ---- cpu suite ---------------------------------------------------------------------------------------------


def thread_points(spec: Sequence[str]) -> list[int | None]:
    return [None if t == "all" else int(t) for t in spec]


def cpu_suite(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from levit_edge.bench import BenchSettings, time_variants
    from levit_edge.flows.bench import BenchVariants, variant_factories
    from levit_edge.runs.finished import FinishedRun

    calib = calibration_array(work, args.calib_size)
    out: dict[str, Any] = {}
    for name in args.models:
        log(f"export {name}")
        exported = export_model(name, work, calib, args.calib_size)
        factories, input_size = variant_factories(FinishedRun(Path(exported["run_dir"])), BenchVariants())
        factories.update(_extra_recipes(Path(exported["run_dir"]), args.extra_recipes))
        rows = []
        for threads in thread_points(args.threads):
            for batch in args.batches:
                log(f"time {name} batch {batch} threads {threads or 'all'}")
                settings = BenchSettings(
                    batches=(batch,),
                    threads=(threads,),
                    warmup=args.warmup,
                    rounds=args.rounds,
                    per_round=args.repeat,
                    input_size=input_size,
                    budget_s=args.budget,
                )
                rows += [r.to_dict() for r in time_variants(factories, settings, ("fp32", "torch"))]
        out[name] = {"export": exported, "results": rows}
    return out


def ort_runner(
    path: Path, threads: int | None, level: str = "all", config: dict[str, str] | None = None
) -> Any:
    """An ONNX Runtime runner (a named function: lambdas in loops bind late)."""
    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, threads, level, config)


def _extra_recipes(run_dir: Path, recipes: Sequence[str]) -> dict[str, Callable[[int | None], Any]]:
    """Other Q/DQ recipes (benchmarks/levers.py) of the run's FP32 model, from its saved calibration, timed
    beside the tool's own artifacts as ``int8.<recipe>``."""
    from levers import RECIPES

    from levit_edge.bench import INTERLEAVED_SESSION_CONFIG
    from levit_edge.quant.calibrate import CALIBRATION_FILE, Calibration
    from levit_edge.quant.quantize import quantize
    from levit_edge.runs.layout import FP32_FILE

    cal = Calibration.load(run_dir / CALIBRATION_FILE)
    out: dict[str, Callable[[int | None], Any]] = {}
    for recipe in recipes:
        path = run_dir / f"model.lever.{recipe}.onnx"  # never the name of one of the tool's artifacts
        quantize(run_dir / FP32_FILE, cal, RECIPES[recipe][0], path)
        out[f"lever.{recipe}"] = functools.partial(ort_runner, path, config=INTERLEAVED_SESSION_CONFIG)
    return out


# ---- profile suite --------------------------------------------------------------------------------------


def profile_ops(model: Path, threads: int, batch: int, runs: int = 60) -> dict[str, Any]:
    """Time by op type from ONNX Runtime's profiler: each node's minimum over ``runs`` (robust to a busy
    machine: a node pre-empted in one run is not in another), summed by op type."""
    import onnxruntime as ort

    from levit_edge.backends.onnxruntime import session_options

    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((batch, *_input_size(sess))).astype(np.float32)
        name = sess.get_inputs()[0].name
        for _ in range(runs + 10):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = [e for e in events if e.get("name") == "model_run"][10:]
    start = model_runs[0]["ts"]
    per_node: dict[str, list[int]] = collections.defaultdict(list)
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            per_node[e["name"]].append(e["dur"])
            op_of[e["name"]] = e["args"]["op_name"]
    by_op: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.defaultdict(int)
    for node, durs in per_node.items():
        by_op[op_of[node]] += min(durs) / 1000.0
        count[op_of[node]] += 1
    return {
        "ops": {
            op: {"ms": round(ms, 4), "nodes": count[op]}
            for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])
        },
        "sum_ms": round(sum(by_op.values()), 4),
        "best_run_ms": round(min(r["dur"] for r in model_runs) / 1000.0, 4),
        "median_run_ms": round(float(np.median([r["dur"] for r in model_runs])) / 1000.0, 4),
    }


def _input_size(sess: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in sess.get_inputs()[0].shape[1:])


def profile_suite(args: argparse.Namespace, work: Path, cpu: dict[str, Any]) -> dict[str, Any]:
    from levit_edge.runs.layout import ARTIFACT_FILES

    name = args.models[0]
    run_dir = Path(cpu[name]["export"]["run_dir"]) if name in cpu else None
    if run_dir is None:
        calib = calibration_array(work, args.calib_size)
        run_dir = Path(export_model(name, work, calib, args.calib_size)["run_dir"])
    out: dict[str, Any] = {"model": name, "batch": 1, "threads": 1, "variants": {}}
    for key in ("fp32", "int8.ort", "int8.trt"):
        log(f"profile {name} {key}")
        out["variants"][key] = profile_ops(run_dir / ARTIFACT_FILES[key], threads=1, batch=1)
    return out


# ---- kernels suite ----------------------------------------------------------------------------------------

GEMMS = ((1024, 1024, 1024), (196, 128, 256), (196, 256, 128), (49, 384, 768), (16, 384, 768))


def _gemm_model(m: int, k: int, n: int, quantized: bool) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if quantized:  # what the QDQ quantizer writes; ORT fuses it into MatMulIntegerToFloat (U8S8)
        inits = [
            numpy_helper.from_array(rng.integers(-64, 64, (k, n)).astype(np.int8), "wq"),
            numpy_helper.from_array(np.full(n, 0.01, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(n, np.int8), "wz"),
            numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
            numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
            helper.make_node("MatMul", ["xd", "wd"], ["y"]),
        ]
    else:
        inits = [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")]
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _best_seconds(fn: Callable[[], object], min_time: float = 0.2, repeats: int = 7) -> float:
    """Best per-call time over ``repeats`` batches of calls (thread CPU time: this is one-thread work)."""
    fn()
    start = time.perf_counter()
    fn()
    reps = max(1, int(min_time / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        c = time.thread_time()
        for _ in range(reps):
            fn()
        best = min(best, (time.thread_time() - c) / reps)
    return best


def kernels_suite(args: argparse.Namespace) -> dict[str, Any]:
    from levit_edge.backends.onnxruntime import load_session

    rows = []
    for m, k, n in GEMMS:
        x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
        times = {}
        for q in (False, True):
            sess = load_session(_gemm_model(m, k, n, q), threads=1)
            times[q] = _best_seconds(functools.partial(sess.run, None, {"x": x}))
        macs = m * k * n
        rows.append(
            {
                "m": m,
                "k": k,
                "n": n,
                "fp32_ms": round(times[False] * 1e3, 4),
                "u8s8_ms": round(times[True] * 1e3, 4),
                "fp32_gmacs": round(macs / times[False] / 1e9, 1),
                "u8s8_gmacs": round(macs / times[True] / 1e9, 1),
                "ratio": round(times[False] / times[True], 2),
            }
        )
        log(f"gemm {m}x{k}x{n}: {rows[-1]}")
    return {"threads": 1, "rows": rows}


# ---- levers suite ------------------------------------------------------------------------------------


def _export_graph(
    name: str, graph: str, img_size: int | None, num_classes: int | None, checkpoint: Path | None
) -> tuple[bytes, Any, Any]:
    """FP32 ONNX bytes of ``name`` in one lever graph shape, plus its preprocessing and loaded model."""
    import torch
    from levers import graph_3d

    from levit_edge.data.preprocess import PreprocessConfig
    from levit_edge.export.onnx import ExportSettings, export_onnx
    from levit_edge.model.fuse import check_parity, fuse_levit
    from levit_edge.model.load import ModelSpec, load_model

    model_name = name.replace("levit_", "levit_conv_") if graph == "conv" else name
    torch.manual_seed(0)
    if graph == "conv" and checkpoint is not None:
        loaded = _load_as_conv(model_name, checkpoint, img_size, num_classes)
    else:
        loaded = load_model(
            ModelSpec(name=model_name, checkpoint=checkpoint, num_classes=num_classes, img_size=img_size)
        )
    pre = PreprocessConfig.from_model(loaded.model)
    with graph_3d() if graph == "3d" else contextlib.nullcontext():
        fused = fuse_levit(loaded.model)
        check_parity(loaded.model, fused, torch.randn(2, *pre.input_size))
        data = export_onnx(fused, pre.input_size, ExportSettings(), {})
    return data, pre, loaded


def _load_as_conv(name: str, checkpoint: Path, img_size: int | None, num_classes: int | None) -> Any:
    """A levit_conv_* model with a levit_* checkpoint's weights (linear weights become 1x1 kernels)."""
    from levit_edge.model.load import ModelSpec, create_levit, read_checkpoint

    state, _ = read_checkpoint(checkpoint)
    model = create_levit(name, num_classes or 1000, img_size)
    target = model.state_dict()
    model.load_state_dict({k: v.reshape(target[k].shape) if k in target else v for k, v in state.items()})
    return SimpleNamespace(
        model=model.eval(), spec=ModelSpec(name=name, num_classes=num_classes, img_size=img_size)
    )


def _lever_artifacts(
    work: Path, name: str, calib: Path, calib_size: int | None, graphs: dict[str, list[str]], **model: Any
) -> dict[str, Path]:
    """Every (graph, recipe) model as an ONNX file; the FP32 one as (graph, 'fp32')."""
    from levers import RECIPES

    from levit_edge.data.open_source import open_source
    from levit_edge.data.sources import DataSpec
    from levit_edge.quant.calibrate import calibrate
    from levit_edge.quant.quantize import quantize
    from levit_edge.settings import QuantSettings

    files: dict[str, Path] = {}
    for graph, recipes in graphs.items():
        data, pre, _ = _export_graph(name, graph, **model)
        fp32 = work / f"{graph}-fp32.onnx"
        fp32.write_bytes(data)
        files[f"{graph}/fp32"] = fp32
        log(f"levers: calibrate {graph}")
        cal = calibrate(
            fp32,
            open_source(DataSpec(calib, None, calib_size, 0, False)),
            pre,
            QuantSettings(calib_size=calib_size),
        )
        for recipe in recipes:
            out = work / f"{graph}-{recipe}.onnx"
            quantize(fp32, cal, RECIPES[recipe][0], out)
            files[f"{graph}/{recipe}"] = out
    return files


STOP_SPIN = {"session.force_spinning_stop": "1"}  # see levit_edge.bench.INTERLEAVED_SESSION_CONFIG

LEVER_GRAPHS = {
    "2d": [
        "ort",
        "ort-noconv",
        "ort-convout",
        "ort-convout-no1st",
        "tool",
        "tool-vnni",
        "ort-attn",
        "ort-fullrange",
        "u8u8",
        "s8s8",
        "trt",
    ],
    "3d": ["ort", "ort-noconv"],
    "conv": ["ort", "ort-convout", "ort-convout-no1st"],
}


def levers_suite(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Time every lever side by side (LeViT-128S at 224, batch 1); recipe accuracy on the fixture."""
    from levers import SESSIONS

    from levit_edge.backends.onnxruntime import session_options

    lever_dir = work / "levers"
    lever_dir.mkdir(parents=True, exist_ok=True)
    calib = calibration_array(work, args.calib_size)
    files = _lever_artifacts(
        lever_dir,
        args.models[0],
        calib,
        min(args.calib_size, 256),
        LEVER_GRAPHS,
        img_size=None,
        num_classes=None,
        checkpoint=None,
    )
    # Session-option levers on the tool's INT8 model (and its FP32 model for the ratio).
    variants: dict[str, Callable[[int | None], Any]] = {}
    for key, path in files.items():
        variants[key] = functools.partial(ort_runner, path, config=STOP_SPIN)
    for sess_name, (config, level, _) in SESSIONS.items():
        if sess_name == "all":
            continue
        for base in ("2d/fp32", "2d/ort"):
            variants[f"{base}@{sess_name}"] = functools.partial(
                ort_runner, files[base], level=level, config={**STOP_SPIN, **config}
            )
    # A saved optimized model: what a deployment can ship to skip graph optimization at load.
    saved = lever_dir / "2d-ort.optimized.onnx"
    load_s = {}
    import onnxruntime as ort

    for label, path, level in (
        ("2d/ort", files["2d/ort"], "all"),
        ("2d/ort@saved-optimized", saved, "disable"),
    ):
        opts = session_options(1, level, optimized_path=saved if label == "2d/ort" else None)
        start = time.perf_counter()
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        load_s[label] = round(time.perf_counter() - start, 3)
    variants["2d/ort@saved-optimized"] = functools.partial(
        ort_runner, saved, level="disable", config=STOP_SPIN
    )
    timing = {}
    for threads in thread_points(args.threads):
        log(f"levers: time {len(variants)} variants, threads {threads or 'all'}")
        timing[str(threads or "all")] = _interleaved_cpu(variants, threads, budget=args.levers_budget)
    out: dict[str, Any] = {"model": args.models[0], "batch": 1, "timing": timing, "load_s": load_s}
    if args.fixture:
        out["accuracy"] = lever_accuracy(Path(args.fixture), work / "levers-fixture")
    return out


def _interleaved_cpu(
    variants: dict[str, Callable[[int | None], Any]], threads: int | None, budget: float, batch: int = 1
) -> dict[str, Any]:
    """Interleaved rounds; wall p50 and, for one thread, the calling thread's CPU time (ORT and torch run
    one-thread work on the caller), which other jobs on a shared machine barely disturb."""
    runners = {k: make(threads) for k, make in variants.items()}
    with contextlib.ExitStack() as stack:
        active = {k: stack.enter_context(r) for k, r in runners.items()}
        x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        one = {}
        for k, r in active.items():
            for _ in range(3):
                start = time.perf_counter()
                r.infer(x)
            one[k] = time.perf_counter() - start
        rounds = 8
        per = max(2, int(budget / rounds / sum(one.values())))
        wall: dict[str, list[float]] = {k: [] for k in active}
        cpu: dict[str, list[float]] = {k: [] for k in active}
        for _ in range(rounds):
            for k, r in active.items():
                for _ in range(per):
                    c, start = time.thread_time(), time.perf_counter()
                    r.infer(x)
                    wall[k].append((time.perf_counter() - start) * 1e3)
                    cpu[k].append((time.thread_time() - c) * 1e3)
    return {
        k: {
            "p50_ms": round(float(np.median(wall[k])), 4),
            "min_ms": round(float(np.min(wall[k])), 4),
            "cpu_p50_ms": round(float(np.median(cpu[k])), 4) if threads == 1 else None,
            "calls": len(wall[k]),
        }
        for k in active
    }


def lever_accuracy(fixture: Path, work: Path) -> dict[str, Any]:
    """Top-1 of FP32 and every (graph, recipe) INT8 model of the trained fixture on its validation split."""
    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
    from levit_edge.data.open_source import open_source
    from levit_edge.data.preprocess import PreprocessConfig
    from levit_edge.data.sources import DataSpec
    from levit_edge.validate.compare import evaluate

    meta = json.loads((fixture / "result.json").read_text())
    checkpoint = fixture / "checkpoint.pth"
    data = fixture / "data"
    work.mkdir(parents=True, exist_ok=True)
    graphs = {g: r for g, r in LEVER_GRAPHS.items()}
    files = _lever_artifacts(
        work,
        meta.get("model_name", "levit_128s"),
        data / "calib",
        None,
        graphs,
        img_size=meta.get("img_size", 64),
        num_classes=len(meta.get("classes", range(10))),
        checkpoint=checkpoint,
    )
    _, pre, _ = _export_graph(
        meta.get("model_name", "levit_128s"),
        "2d",
        meta.get("img_size", 64),
        len(meta.get("classes", range(10))),
        checkpoint,
    )
    source = open_source(DataSpec(data / "val", None, None, 0, False))
    out: dict[str, Any] = {
        "val_images": len(source),
        "calib_images": len(open_source(DataSpec(data / "calib", None, None, 0, False))),
    }
    for graph in graphs:
        runners = {
            k.split("/")[1]: OnnxRuntimeRunner(p) for k, p in files.items() if k.startswith(graph + "/")
        }
        ev = evaluate(runners, source, PreprocessConfig.from_dict(pre.to_dict()), 50)
        comps = ev.comparisons("fp32")
        ref = next(iter(comps.values())).reference_accuracy if comps else None
        out[graph] = {
            "fp32_top1": ref.top1 if ref else None,
            **{
                k: {"top1": c.accuracy.top1 if c.accuracy else None, "drop": c.drop} for k, c in comps.items()
            },
        }
        log(f"levers accuracy {graph}: {out[graph]}")
    return out


# ---- gpu suite ---------------------------------------------------------------------------------------


def gpu_suite(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from levit_edge.model.fuse import fuse_levit
    from levit_edge.model.load import create_levit

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    rows = []
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for name in args.models:
        for dname, dtype in dtypes.items():
            torch.manual_seed(0)
            timm_model = create_levit(name, 1000, None).eval()
            fused = fuse_levit(timm_model)
            # No forward before the move: timm's attention-bias cache would keep the first dtype.
            timm_model = timm_model.to(dev, dtype)
            fused = fused.to(dev, dtype)
            modes: dict[str, Any] = {"eager (timm)": timm_model, "eager (fused)": fused}
            if dname in args.compile_dtypes:
                # One code object (FusedLevit.forward) for every model and dtype: without a reset, dynamo's
                # recompile limit (8) silently falls back to eager.
                torch._dynamo.reset()
                modes["compile (fused, reduce-overhead)"] = torch.compile(
                    fused, mode="reduce-overhead", dynamic=False
                )
            for mode, module in modes.items():
                for batch in args.gpu_batches:
                    if mode.startswith("compile") and batch not in args.compile_batches:
                        continue
                    x = torch.randn(batch, 3, 224, 224, device=dev, dtype=dtype)
                    start = time.perf_counter()
                    with torch.inference_mode():
                        for _ in range(3):
                            module(x)
                    torch.cuda.synchronize()
                    first_s = time.perf_counter() - start
                    ms = _cuda_median_ms(module, x)
                    rows.append(
                        {
                            "model": name,
                            "dtype": dname,
                            "mode": mode,
                            "batch": batch,
                            "p50_ms": round(ms, 4),
                            "img_per_s": round(batch * 1000.0 / ms, 1),
                            "warmup_s": round(first_s, 2),
                        }
                    )
                    log(f"gpu {rows[-1]}")
                    if args.partial:  # a run cut off by a time limit still leaves its rows
                        with open(args.partial, "a") as fh:
                            fh.write(json.dumps(rows[-1]) + "\n")
            del modes, timm_model, fused
            torch.cuda.empty_cache()
    return {"rows": rows, "tf32": torch.backends.cuda.matmul.allow_tf32}


def _cuda_median_ms(module: Any, x: Any, reps: int = 50) -> float:
    import torch

    times = []
    with torch.inference_mode():
        for _ in range(5):
            module(x)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return float(np.median(times))


# ---- markdown ---------------------------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render_section(res: dict[str, Any]) -> str:
    """The BENCHMARKS.md section of one results file."""
    tag, m = res["tag"], res["machine"]
    lines = [f"<!-- section:{tag} -->", f"## {res.get('title') or tag}", ""]
    lines += [
        f"- Machine: {describe_machine(m)}.",
        f"- Software: {', '.join(f'{k} {v}' for k, v in sorted(m['versions'].items()))}.",
        f"- Load average when started: {', '.join(f'{x:.2f}' for x in m.get('load_average', []))}.",
        f"- Measured {res['date']}; command: `{res['command']}`; "
        f"raw numbers: `benchmarks/results/{tag}.json`.",
    ]
    if res.get("note"):
        lines.append(f"- Note: {res['note']}")
    lines.append("")
    cpu = res.get("suites", {}).get("cpu")
    if cpu:
        lines += _render_cpu(cpu)
    if res.get("suites", {}).get("profile"):
        lines += _render_profile(res["suites"]["profile"])
    if res.get("suites", {}).get("kernels"):
        lines += _render_kernels(res["suites"]["kernels"])
    if res.get("suites", {}).get("levers"):
        lines += _render_levers(res["suites"]["levers"])
    if res.get("suites", {}).get("gpu"):
        lines += _render_gpu(res["suites"]["gpu"])
    lines += [f"<!-- /section:{tag} -->", ""]
    return "\n".join(lines)


def _render_cpu(cpu: dict[str, Any]) -> list[str]:
    lines = ["### Latency, side by side (p50 of interleaved rounds; ratios within the same run)", ""]
    for name, data in cpu.items():
        exp = data["export"]
        lines += [f"**{name}** at 224x224, random weights (speed does not depend on them).", ""]
        lines += [
            "| variant | batch | threads | p50 ms | p90 ms | img/s | x vs ORT FP32 | x vs PyTorch eager |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in data["results"]:
            lines.append(
                f"| {VARIANT_NAMES.get(r['variant'], r['variant'])} | {r['batch']} | "
                f"{r['threads'] or 'all'} | "
                f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['throughput']:.1f} | "
                f"{_fmt(r['ratios'].get('fp32'))} | {_fmt(r['ratios'].get('torch'))} |"
            )
        sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in exp["sizes"].items())
        stages = ", ".join(f"{k} {v:.1f}" for k, v in exp["stages"].items())
        lines += [
            "",
            f"Model sizes: {sizes}.",
            "",
            f"Export (`{exp['command']}`, {exp['calibration_images']} calibration images): "
            f"{exp['wall_s']:.1f} s wall for the whole process; stages in seconds: {stages}.",
            "",
        ]
    return lines


def _render_profile(prof: dict[str, Any]) -> list[str]:
    variants = prof["variants"]
    keys = list(variants)
    ops = sorted(
        {op for v in variants.values() for op in v["ops"]},
        key=lambda op: -max(v["ops"].get(op, {"ms": 0})["ms"] for v in variants.values()),
    )
    lines = [
        f"### Where the time goes: ONNX Runtime profiler, {prof['model']}, batch {prof['batch']}, "
        f"{prof['threads']} thread",
        "",
        "Each node's minimum over 60 runs, summed by op type (ms).",
        "",
        "| op type | " + " | ".join(VARIANT_NAMES.get(k, k) for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for op in ops:
        cells = []
        for k in keys:
            o = variants[k]["ops"].get(op)
            cells.append(f"{o['ms']:.3f} ({o['nodes']})" if o else "")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append(
        "| **sum of nodes** | " + " | ".join(f"**{variants[k]['sum_ms']:.3f}**" for k in keys) + " |"
    )
    lines.append("| best whole run | " + " | ".join(f"{variants[k]['best_run_ms']:.3f}" for k in keys) + " |")
    return [*lines, ""]


def _render_kernels(k: dict[str, Any]) -> list[str]:
    lines = [
        "### The CPU's INT8 ceiling: one GEMM in ONNX Runtime, one thread",
        "",
        "FP32 MatMul vs the Q/DQ MatMul that ONNX Runtime runs as MatMulIntegerToFloat "
        "(U8S8; includes quantizing the input).",
        "",
        "| M x K x N | FP32 ms | FP32 GMAC/s | U8S8 ms | U8S8 GMAC/s | FP32 / U8S8 |",
        "|---|---|---|---|---|---|",
    ]
    for r in k["rows"]:
        lines.append(
            f"| {r['m']} x {r['k']} x {r['n']} | {r['fp32_ms']:.3f} | {r['fp32_gmacs']:.1f} | "
            f"{r['u8s8_ms']:.3f} | "
            f"{r['u8s8_gmacs']:.1f} | {r['ratio']:.2f} |"
        )
    return [*lines, ""]


def _render_levers(lv: dict[str, Any]) -> list[str]:
    from levers import GRAPHS, RECIPES, SESSIONS, VERDICTS

    acc = lv.get("accuracy", {})
    threads = list(lv["timing"])
    lines = [
        f"### Levers, {lv['model']} at 224, batch {lv['batch']}, all timed side by side in one process",
        "",
        "x = FP32 of the same graph (2d for session options) / variant, by p50 wall time"
        + (
            "; one-thread ratios also by the thread's CPU time (robust on a shared machine)"
            if "1" in threads
            else ""
        )
        + ". Drop = top-1 points lost vs FP32 on the trained fixture "
        "(LeViT-128S, 64 px, 10 classes, 500 val images).",
        "",
        "| lever | what changed | "
        + " | ".join(f"p50 ms ({t} thr) | x ({t} thr)" for t in threads)
        + " | drop | verdict |",
        "|---|---|" + "---|---|" * len(threads) + "---|---|",
    ]
    keys = list(next(iter(lv["timing"].values())))
    for key in keys:
        graph, rest = key.split("/", 1)
        recipe, _, sess = rest.partition("@")
        base = f"{graph}/fp32" + (f"@{sess}" if sess and recipe == "fp32" else "")
        base = f"{graph}/fp32"
        what = GRAPHS[graph] if recipe == "fp32" else RECIPES[recipe][1] if recipe in RECIPES else recipe
        if sess:
            what += "; " + (
                SESSIONS[sess][2]
                if sess in SESSIONS
                else "saved optimized model, loaded with optimizations off"
            )
        cells = []
        for t in threads:
            row, ref = lv["timing"][t][key], lv["timing"][t][base]
            ratio = ref["p50_ms"] / row["p50_ms"]
            cell = f"{ratio:.2f}"
            if row.get("cpu_p50_ms"):
                cell += f" (cpu {ref['cpu_p50_ms'] / row['cpu_p50_ms']:.2f})"
            cells += [f"{row['p50_ms']:.2f}", cell]
        drop = acc.get(graph, {}).get(recipe, {}).get("drop") if not sess else None
        lines.append(
            f"| `{key}` | {what} | " + " | ".join(cells) + f" | {_fmt(drop)} | {VERDICTS.get(key, '')} |"
        )
    if lv.get("load_s"):
        lines += [
            "",
            "Session creation, one thread: "
            + ", ".join(f"`{k}` {v:.2f} s" for k, v in lv["load_s"].items())
            + ".",
        ]
    if acc:
        fp = {g: acc[g].get("fp32_top1") for g in acc if isinstance(acc[g], dict)}
        lines += [
            "",
            "Fixture FP32 top-1 by graph: "
            + ", ".join(f"{g} {v:.1f}" for g, v in fp.items() if v is not None)
            + ".",
        ]
    return [*lines, ""]


def _render_gpu(gpu: dict[str, Any]) -> list[str]:
    if "rows" not in gpu:
        return [f"GPU: {gpu.get('skipped')}", ""]
    lines = [
        "### GPU baseline: PyTorch eager and torch.compile",
        "",
        "CUDA events, median of 50 calls after warm-up; "
        f"TF32 matmul {'on' if gpu.get('tf32') else 'off'} for FP32.",
        "",
        "| model | dtype | mode | batch | p50 ms | img/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in gpu["rows"]:
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['mode']} | {r['batch']} | {r['p50_ms']:.3f} | "
            f"{r['img_per_s']:.0f} |"
        )
    return [*lines, ""]


def update_markdown(md: Path, sections: dict[str, str]) -> None:
    """Replace (or append) each tagged section of ``md``, keeping everything else."""
    text = md.read_text() if md.is_file() else "# Benchmarks\n\n"
    for tag, body in sections.items():
        start, end = f"<!-- section:{tag} -->", f"<!-- /section:{tag} -->"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            _, after = rest.split(end, 1)
            text = before + body.rstrip("\n") + after
        else:
            text = text.rstrip("\n") + "\n\n" + body
    md.write_text(text)


# ---- main ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    work = Path(args.work or tempfile.mkdtemp(prefix="levit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "schema": SCHEMA,
        "tag": args.tag,
        "title": args.title,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": args.command or "python benchmarks/run_benchmarks.py " + shlex.join(sys.argv[1:]),
        "machine": machine(),
        "suites": {},
    }
    out_json = Path(args.results_dir) / f"{args.tag}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out_json.write_text(json.dumps(res, indent=1) + "\n")

    for suite in suites:
        start = time.perf_counter()
        if suite == "cpu":
            res["suites"]["cpu"] = cpu_suite(args, work)
        elif suite == "profile":
            res["suites"]["profile"] = profile_suite(args, work, res["suites"].get("cpu", {}))
        elif suite == "kernels":
            res["suites"]["kernels"] = kernels_suite(args)
        elif suite == "levers":
            res["suites"]["levers"] = levers_suite(args, work)
        elif suite == "gpu":
            res["suites"]["gpu"] = gpu_suite(args)
        else:
            raise SystemExit(f"unknown suite {suite!r}")
        res.setdefault("suite_seconds", {})[suite] = round(time.perf_counter() - start, 1)
        save()
        log(f"suite {suite} done in {res['suite_seconds'][suite]} s")
    if args.markdown:
        update_markdown(Path(args.markdown), {args.tag: render_section(res)})
    return res


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "render":
        parser = argparse.ArgumentParser(prog="run_benchmarks.py render")
        parser.add_argument("results", nargs="+", type=Path)
        parser.add_argument("--markdown", default=str(MD_FILE))
        a = parser.parse_args(argv[1:])
        update_markdown(
            Path(a.markdown),
            {json.loads(p.read_text())["tag"]: render_section(json.loads(p.read_text())) for p in a.results},
        )
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tag", default=platform.node() or "this-machine", help="Section and results-file name.")
    p.add_argument("--title", default=None, help="Section heading (default: the tag).")
    p.add_argument("--suite", default="cpu,profile,kernels,levers")
    p.add_argument("--models", default=",".join(MODELS), type=lambda s: [m for m in s.split(",") if m])
    p.add_argument("--batches", default="1,16", type=lambda s: [int(b) for b in s.split(",")])
    p.add_argument("--threads", default="1,all", type=lambda s: s.split(","))
    p.add_argument("--calib-size", type=int, default=512)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=20, help="Most timed calls per variant per round.")
    p.add_argument(
        "--budget", type=float, default=4.0, help="Seconds of timed calls per (batch, threads) point."
    )
    p.add_argument(
        "--levers-budget", type=float, default=8.0, help="Seconds of timed calls per lever thread count."
    )
    p.add_argument(
        "--extra-recipes",
        default="",
        type=lambda s: [r for r in s.split(",") if r],
        help="cpu suite: also time these recipes of benchmarks/levers.py (as lever.<recipe>).",
    )
    p.add_argument(
        "--fixture", default=None, help="Trained fixture folder (result.json, checkpoint.pth, data/)."
    )
    p.add_argument("--gpu-batches", default="1,16,256", type=lambda s: [int(b) for b in s.split(",")])
    p.add_argument("--compile-batches", default="1,16", type=lambda s: [int(b) for b in s.split(",")])
    p.add_argument("--compile-dtypes", default="fp32,fp16", type=lambda s: s.split(","))
    p.add_argument("--partial", default=None, help="Append each GPU row to this JSON-lines file as it comes.")
    p.add_argument("--work", default=None, help="Scratch folder (default: a new temporary one).")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument(
        "--markdown", default=str(MD_FILE), help="File whose <tag> section is rewritten ('' = none)."
    )
    p.add_argument("--command", default=None, help="The command line to record (default: this one).")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
