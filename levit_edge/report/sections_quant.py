"""Section builders for quantization: the recipe, per-layer sensitivity and the accuracy-aware fallback."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from levit_edge.report.document import DASH, GOOD, Block, Bullets, Cell, Image, Para, Section, Sub, Text
from levit_edge.report.formatting import (
    by_artifact,
    columns_table,
    fixed,
    fmt,
    generic,
    kl_text,
    kv_table,
    limited,
    mb,
    short_list,
)
from levit_edge.report.views import artifact_keys, as_map, as_num, as_seq, gate_max_drop

TOP_SENSITIVE = 20


_RECIPE_KEYS = {"format", "activations", "weights", "ops", "float", "bias", "why"}
_RECIPE_KEYS |= {"quantized_nodes", "excluded_nodes", "qdq_pairs", "note"}


def quantization_section(report: Mapping[str, Any]) -> Section | None:
    quant = as_map(report.get("quantization"))
    if not quant:
        return None
    sec = Section("Quantization recipe")
    for key in artifact_keys(report, "quantization"):
        q = as_map(quant.get(key))
        excluded = as_seq(q.get("excluded_nodes"))
        pairs: list[tuple[str, Any]] = [
            ("format", q.get("format")),
            ("activations", q.get("activations")),
            ("weights", q.get("weights")),
            ("quantized ops", ", ".join(str(o) for o in as_seq(q.get("ops"))) or DASH),
            ("kept in float", ", ".join(str(o) for o in as_seq(q.get("float"))) or DASH),
            ("bias", q.get("bias")),
            ("quantized nodes", q.get("quantized_nodes")),
            ("excluded nodes", f"{len(excluded)}: {short_list(excluded)}" if excluded else "0"),
            ("Q/DQ pairs", q.get("qdq_pairs")),
        ]
        if q.get("note"):
            pairs.append(("note", q.get("note")))
        pairs += [(k, v) for k, v in q.items() if k not in _RECIPE_KEYS]
        sec.blocks += [Sub(key), kv_table(pairs)]
        why = [str(w) for w in as_seq(q.get("why"))]
        if why:
            sec.blocks += [Para("Why:"), Bullets(tuple(why))]
    return sec


def _db(x: Any) -> str:
    return fixed(x, 1)


def _yes(x: Any) -> Text:
    return Cell("yes", GOOD) if x is True else "no" if x is False else DASH


# report.json key -> (column heading with its unit, formatter) for the tables people read
_SENSITIVITY_COLUMNS: dict[str, tuple[str, Callable[[Any], Text]]] = {
    "rank": ("#", fmt),
    "node": ("layer", fmt),
    "op_type": ("op", fmt),
    "sqnr_db": ("output SQNR (dB)", _db),
    "input_sqnr_db": ("input SQNR (dB)", _db),
    "weight_sqnr_db": ("weight SQNR (dB)", _db),
    "agreement_delta": ("agreement gained in float (pts)", lambda x: fixed(x, 2, sign=True)),
    "kl": ("KL with the layer in float", kl_text),
    "kl_gain": ("KL removed", kl_text),
}
_FALLBACK_COLUMNS: dict[str, tuple[str, Callable[[Any], Text]]] = {
    "step": ("step", fmt),
    "action": ("action", fmt),
    "float_layers": ("layers in float", lambda x: str(len(as_seq(x)))),
    "top1": ("top-1 (%)", fixed),
    "drop": ("drop (pts)", lambda x: fixed(x, 2, sign=True)),
    "agreement": ("agreement (%)", fixed),
    "kl": ("KL", kl_text),
    "size": ("size (MB)", mb),
    "latency_ms": ("batch-1 latency (ms)", fixed),
    "range_overrides": ("tuned ranges", fmt),
    "meets_budget": ("within budget", _yes),
    "chosen": ("kept", _yes),
}
_SENSITIVITY_INFO: dict[str, tuple[str, Callable[[Any], Text]]] = {
    "artifact": ("model", fmt),
    "profile": ("profile", fmt),
    "layers": ("quantized layers", fmt),
    "calib_samples": ("calibration images", fmt),
    "rank_images": ("validation images", fmt),
    "base_agreement": ("all-INT8 agreement (%)", fixed),
    "base_kl": ("all-INT8 KL", kl_text),
    "seconds": ("time (s)", lambda x: fixed(x, 1)),
}


def sensitivity_section(report: Mapping[str, Any], plots: bool) -> Section | None:
    rows = report.get("sensitivity")
    if not rows:
        return None
    if not (isinstance(rows, list | tuple) and all(isinstance(r, Mapping) for r in rows)):
        return Section("Layer sensitivity", generic(rows, TOP_SENSITIVE))
    blocks: list[Block] = []
    ranked = any("rank" in r for r in rows)
    blocks.append(
        Para(
            "Per-layer quantization sensitivity: SQNR (dB) of each quantized node's output vs FP32 on "
            "calibration images, and the top-1 agreement gained and KL left when that node alone stays in "
            "float; ranked by the KL it removes (most harmful first)."
            if ranked
            else "Per-layer quantization sensitivity, lowest SQNR (most damaged) first."
        )
    )
    info = [i for i in as_seq(report.get("sensitivity_info")) if isinstance(i, Mapping)]
    if info:
        blocks.append(columns_table(info, _SENSITIVITY_INFO))
    for artifact, group in by_artifact(rows).items():
        group = sorted(
            group,
            key=lambda r: (
                (as_num(r.get("rank")) or 0.0, str(r.get("node")))
                if ranked
                else (as_num(r.get("sqnr_db")) or 0.0, str(r.get("node")))
            ),
        )
        if artifact:
            blocks.append(Sub(artifact))
        if plots:
            from levit_edge.report import plots as p

            png = p.sensitivity(group, TOP_SENSITIVE, artifact or None)
            if png is not None:
                blocks.append(Image(png, f"per-layer SQNR {artifact}".strip()))
        blocks.append(limited(columns_table(group, _SENSITIVITY_COLUMNS), TOP_SENSITIVE))
    return Section("Layer sensitivity", blocks)


def fallback_section(report: Mapping[str, Any], plots: bool) -> Section | None:
    steps = report.get("fallback")
    if not steps:
        return None
    blocks: list[Block] = [
        Para(
            "Accuracy-aware fallback: the most harmful layers return to float step by step until the top-1 "
            "drop fits the budget; only a step that fits replaces the INT8 model (chosen)."
        )
    ]
    budget = as_map(report.get("accuracy_budget"))
    for info in as_map(budget.get("artifacts")).values():
        if isinstance(info, Mapping):
            blocks.append(Para(f"{fmt(info.get('message'))}."))
    if not (isinstance(steps, list | tuple) and all(isinstance(s, Mapping) for s in steps)):
        return Section("Fallback", [*blocks, *generic(steps)])
    for artifact, group in by_artifact(steps).items():
        if artifact:
            blocks.append(Sub(artifact))
        if plots:
            from levit_edge.report import plots as p

            png = p.fallback_curve(group, gate_max_drop(report), artifact or None)
            if png is not None:
                blocks.append(Image(png, f"fallback {artifact}: drop vs layers kept in float".strip()))
        blocks.append(columns_table(group, _FALLBACK_COLUMNS))
        chosen = [s for s in group if s.get("chosen") and as_seq(s.get("float_layers"))]
        if chosen:
            blocks.append(
                Para("Layers kept in float: " + ", ".join(map(str, as_seq(chosen[0]["float_layers"]))))
            )
    return Section("Fallback", blocks)
