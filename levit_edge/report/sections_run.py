"""Section builders for timing, data and provenance: latency, benchmark, data, stages, model, environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from levit_edge.report.document import DASH, WARN, Block, Cell, Image, Para, Section, Sub, Table, Text
from levit_edge.report.formatting import (
    columns_table,
    count_of,
    fixed,
    flatten,
    fmt,
    generic,
    kv_table,
    limited,
    short_list,
)
from levit_edge.report.views import artifact_keys, as_map, as_num, as_seq

ARTIFACT_NAMES = {
    "fp32": "ONNX Runtime FP32",
    "int8.ort": "ONNX Runtime INT8",
    "int8.trt": "TensorRT Q/DQ model (on ONNX Runtime CPU)",
    "int8.plan": "TensorRT engine",
    "torch": "PyTorch eager (timm)",
    "torch.fused": "PyTorch eager (fused)",
}


def latency_section(report: Mapping[str, Any]) -> Section | None:
    lat = as_map(report.get("latency"))
    if not lat:
        return None
    rows = []
    for key in artifact_keys(report, "latency"):
        x = as_map(lat.get(key))
        batch, p50 = as_num(x.get("batch")), as_num(x.get("p50_ms"))
        per_image = fixed(p50 / batch, 3) if p50 is not None and batch else DASH
        threads = "all cores" if x.get("threads") is None else fmt(x.get("threads"))
        rows.append(
            (
                key,
                fixed(x.get("p50_ms")),
                fixed(x.get("p90_ms")),
                fixed(x.get("p99_ms")),
                fmt(x.get("batch")),
                per_image,
                threads,
                fmt(x.get("calls")),
                fmt(x.get("source")),
            )
        )
    headers = (
        "artifact",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "batch",
        "p50 ms/image",
        "threads",
        "calls",
        "source",
    )
    return Section(
        "Latency", [Table(headers, tuple(rows)), Para("Per batch; the first (warm-up) call is dropped.")]
    )


# a machine busier than this (1-minute load average per core, just before timing) is called loaded
LOADED_PER_CORE = 0.5


def _load_note(settings: Mapping[str, Any], env: Mapping[str, Any]) -> Para | None:
    load, cores = as_seq(settings.get("load_average")), as_num(env.get("cpu_count"))
    first = as_num(load[0]) if load else None
    if first is None or not cores:
        return None
    text = f"load average {first:.2f} over {cores:.0f} cores just before timing"
    if first > LOADED_PER_CORE * cores:
        return Para(
            Cell(
                f"Timed on a loaded machine ({text}): other work shared the cores, so these latencies are "
                "higher and noisier than on an idle machine; compare variants with each other, not with "
                "other runs.",
                WARN,
            )
        )
    return Para(f"Timed on an idle machine ({text}).")


_BENCH_COLUMNS: dict[str, tuple[str, Callable[[Any], Text]]] = {
    "variant": ("variant", lambda x: ARTIFACT_NAMES.get(str(x), fmt(x))),
    "batch": ("batch", fmt),
    "threads": ("threads", lambda x: fmt(x) if x else "all cores"),
    "p50_ms": ("median (ms)", fixed),
    "p90_ms": ("p90 (ms)", fixed),
    "p99_ms": ("p99 (ms)", fixed),
    "throughput": ("images/s", lambda x: fixed(x, 1)),
    "calls": ("timed calls", fmt),
}


def bench_section(report: Mapping[str, Any], plots: bool = True) -> Section | None:
    bench = report.get("bench")
    if not bench:
        return None
    rows = [r for r in as_seq(as_map(bench).get("results")) if isinstance(r, Mapping)]
    if not rows:
        return Section("Benchmark", generic(bench))
    settings, env = as_map(bench.get("settings")), as_map(bench.get("environment"))
    size = as_seq(settings.get("input_size"))
    blocks: list[Block] = [
        Para(
            f"Every variant timed in one process, interleaved over {fmt(settings.get('rounds'))} rounds of "
            f"{fmt(settings.get('per_round'))} calls after {fmt(settings.get('warmup'))} warm-up calls, "
            f"on random {'x'.join(map(str, size[1:])) or '?'} inputs; latency per call (the whole batch)."
        )
    ]
    note = _load_note(settings, env)
    if note is not None:
        blocks.append(note)
    if plots:
        from levit_edge.report import plots as p

        png = p.latency_chart(rows, ARTIFACT_NAMES)
        if png is not None:
            blocks.append(Image(png, "median latency per image by variant, batch and threads"))
    baselines = sorted({k for r in rows for k in as_map(r.get("ratios"))})
    table = columns_table(rows, _BENCH_COLUMNS)
    ratios = [f"speed-up vs {ARTIFACT_NAMES.get(b, b)} (times)" for b in baselines]
    cells = [
        (*row, *(fixed(as_map(r.get("ratios")).get(b)) for b in baselines))
        for row, r in zip(table.rows, rows, strict=True)
    ]
    blocks.append(Table((*table.headers, *ratios), tuple(cells)))
    # the run's environment is its own section: only what differs at benchmark time is listed here
    run_env = as_map(report.get("environment"))
    names = {"cpu": "CPU", "cpu_count": "cores", "cpu_flags": "INT8 CPU features"}
    differs = [(names.get(k, k), v) for k, v in env.items() if k != "versions" and run_env.get(k) != v]
    if differs:
        blocks += [Sub("Benchmark machine (where it differs from the run's)"), kv_table(differs)]
    return Section("Benchmark", blocks)


def data_section(report: Mapping[str, Any]) -> Section | None:
    cal, val = as_map(report.get("calibration")), as_map(report.get("validation"))
    if not cal and not val:
        return None
    sec = Section("Data")
    if cal:
        method = fmt(cal.get("method"))
        if cal.get("method") == "percentile":
            method += f" ({fmt(cal.get('percentile'))})"
        sec.blocks += [
            Sub("Calibration"),
            kv_table(
                [
                    ("method", method),
                    ("images", cal.get("count")),
                    ("tensors calibrated", cal.get("tensors")),
                    ("skipped images", count_of(cal.get("skipped"))),
                    ("data hash", cal.get("data_hash")),
                ]
            ),
        ]
    if val:
        order = as_seq(val.get("class_order"))
        order_text = (
            f"{len(order)} classes, index order: {short_list(order, 10)}"
            if order
            else "none given (class indices as the model outputs them)"
        )
        skipped = [s for s in as_seq(val.get("skipped")) if isinstance(s, list | tuple)]
        sec.blocks += [
            Sub("Validation"),
            kv_table(
                [
                    ("source", val.get("source")),
                    ("kind", val.get("kind")),
                    ("images", val.get("n")),
                    ("labelled", val.get("labelled")),
                    ("class order", order_text),
                    ("excluded (exclude list)", count_of(val.get("excluded"))),
                    ("skipped (unreadable)", count_of(val.get("skipped"))),
                    ("data hash", val.get("data_hash")),
                ]
            ),
        ]
        if skipped:
            rows = tuple((fmt(s[0]), fmt(s[1]) if len(s) > 1 else DASH) for s in skipped)
            sec.blocks += [Para("Skipped images:"), limited(Table(("image", "reason"), rows), 10)]
    return sec


LATER_STAGES = {"revalidate": "validate (later, on the finished run)"}


def stages_section(report: Mapping[str, Any]) -> Section | None:
    stages = as_map(report.get("stages"))
    if not stages:
        return None
    export = {k: v for k, v in stages.items() if k not in LATER_STAGES}
    total = sum(as_num(v) or 0.0 for v in export.values())
    rows = [
        (str(k), fixed(v), f"{100 * (as_num(v) or 0.0) / total:.0f}%" if total > 0 else DASH)
        for k, v in export.items()
    ]
    rows.append(("export total", fixed(total), "100%" if total > 0 else DASH))
    rows += [(LATER_STAGES[k], fixed(v), DASH) for k, v in stages.items() if k in LATER_STAGES]
    return Section("Stage timings", [Table(("stage", "seconds", "share of export"), tuple(rows))])


def model_section(report: Mapping[str, Any]) -> Section:
    model, pre = as_map(report.get("model")), as_map(report.get("preprocess"))
    names = as_seq(model.get("class_names"))
    pairs: list[tuple[str, Any]] = [
        ("name", model.get("name")),
        ("classes", model.get("classes")),
        ("class names", f"{len(names)}: {short_list(names, 10)}" if names else None),
        ("checkpoint", model.get("checkpoint") or "timm pretrained weights"),
        ("checkpoint format", model.get("checkpoint_format")),
        ("checkpoint sha256", model.get("checkpoint_sha256")),
    ]
    return Section("Model and preprocessing", [kv_table(pairs), Sub("Preprocessing"), *generic(dict(pre))])


def environment_section(report: Mapping[str, Any]) -> Section | None:
    env = as_map(report.get("environment"))
    if not env:
        return None
    pairs = [(k, env.get(k)) for k in ("python", "platform", "machine", "cpu", "cpu_count") if k in env]
    flags = as_seq(env.get("cpu_flags"))
    pairs.append(
        ("INT8 CPU features", ", ".join(str(f) for f in flags) if flags else "none of AVX2/VNNI/AMX/NEON-dot")
    )
    pairs += [
        (k, v)
        for k, v in env.items()
        if k not in {"python", "platform", "machine", "cpu", "cpu_count", "cpu_flags", "versions"}
    ]
    blocks: list[Block] = [kv_table(pairs)]
    versions = as_map(env.get("versions"))
    if versions:
        blocks += [Sub("Package versions"), kv_table(sorted(versions.items()), ("package", "version"))]
    return Section("Environment", blocks)


def options_section(report: Mapping[str, Any]) -> Section | None:
    options = as_map(report.get("options"))
    return Section("Options", [kv_table(list(flatten(options).items()))]) if options else None
