"""Report plots as PNG bytes: headless (Agg), deterministic, never shown.

Figures are built with the object-oriented API on an Agg canvas (no pyplot): no global figure state,
no display needed, and the same data gives the same bytes (PNG metadata without a software version,
matplotlib's default style rather than the user's matplotlibrc).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

# Colours shared with the HTML report's CSS.
GOOD = "#1a7f37"
BAD = "#cf222e"
NEUTRAL = "#57606a"
ACCENT = "#0969da"

_LABEL_CHARS = 36


def label(text: Any, limit: int = _LABEL_CHARS) -> str:
    """A tick label: truncated, with ``$`` escaped so matplotlib never parses it as mathtext."""
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _finite(values: Sequence[Any]) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        out.append(f if math.isfinite(f) else 0.0)
    return out


def _render(draw: Any, size: tuple[float, float]) -> bytes:
    """Create a figure of ``size`` inches, let ``draw(fig)`` fill it, return it as PNG bytes."""
    from matplotlib import rc_context, style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with (
        style.context("default"),
        rc_context(
            {
                "font.size": 9,
                "axes.titlesize": 10,
                "axes.spines.top": False,
                "axes.spines.right": False,
                "axes.grid": True,
                "grid.alpha": 0.3,
                "figure.dpi": 100,
                "savefig.dpi": 100,
            }
        ),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # missing glyphs (e.g. CJK class names) only warn
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def bar_chart(
    labels: Sequence[Any],
    values: Sequence[Any],
    *,
    title: str,
    xlabel: str,
    signed: bool = False,
    reference: float | None = None,
    reference_label: str | None = None,
) -> bytes:
    """Horizontal bars, first item on top; ``signed`` colours negatives red and positives green.

    ``reference`` draws a dashed vertical line (a threshold) labelled ``reference_label``.
    """
    names = [label(x) for x in labels]
    vals = _finite(values)
    height = max(1.6, 0.6 + 0.24 * len(names))

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ys = list(range(len(names)))
        colours = [(BAD if v < 0 else GOOD if v > 0 else NEUTRAL) if signed else ACCENT for v in vals]
        ax.barh(ys, vals, color=colours, height=0.7)
        ax.set_yticks(ys, names)
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        if signed:
            ax.axvline(0.0, color="#24292f", linewidth=0.8)
            lim = max((abs(v) for v in vals), default=0.0) or 1.0
            ax.set_xlim(-lim * 1.1, lim * 1.1)
        if reference is not None and math.isfinite(reference):
            ax.axvline(reference, color=BAD, linestyle="--", linewidth=1.0, label=reference_label)
            if reference_label:
                ax.legend(loc="lower right", frameon=False)
        ax.set_xlabel(xlabel.replace("$", r"\$"))
        ax.set_title(title.replace("$", r"\$"), loc="left")

    return _render(draw, (7.5, height))


def line_chart(
    xs: Sequence[Any],
    ys: Sequence[Any],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    reference: float | None = None,
    reference_label: str | None = None,
    point_labels: Sequence[Any] | None = None,
) -> bytes:
    """A marked line ``ys`` over ``xs`` with an optional dashed horizontal threshold."""
    x, y = _finite(xs), _finite(ys)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.plot(x, y, marker="o", color=ACCENT, linewidth=1.5)
        for xi, yi, text in zip(x, y, point_labels or [], strict=False):
            ax.annotate(label(text, 24), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if reference is not None and math.isfinite(reference):
            ax.axhline(reference, color=BAD, linestyle="--", linewidth=1.0, label=reference_label)
            if reference_label:
                ax.legend(loc="upper right", frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(xlabel.replace("$", r"\$"))
        ax.set_ylabel(ylabel.replace("$", r"\$"))
        ax.set_title(title.replace("$", r"\$"), loc="left")

    return _render(draw, (7.5, 3.2))


def per_class_delta(rows: Sequence[Mapping[str, Any]], artifact: str, top: int = 25) -> bytes | None:
    """Per-class top-1 change (INT8 - FP32, points) of the ``top`` changed classes; None when none changed."""
    changed = [(str(r.get("class")), d) for r in rows for d in _finite([r.get("delta")]) if d != 0]
    if not changed:
        return None
    ranked = sorted(changed, key=lambda x: (-abs(x[1]), x[0]))[:top]
    ranked.sort(key=lambda x: (x[1], x[0]))
    shown = (
        f"{len(ranked)} largest of {len(changed)}" if len(changed) > len(ranked) else f"all {len(changed)}"
    )
    return bar_chart(
        [name for name, _ in ranked],
        [d for _, d in ranked],
        title=f"{artifact}: per-class top-1 change vs FP32 ({shown} changed classes of {len(rows)})",
        xlabel="top-1 change (points)",
        signed=True,
    )


def _tail(name: Any) -> str:
    """Node names differ at their end (``.../blocks.1/attn/qkv/Gemm``): keep the tail when shortening."""
    s = str(name)
    return s if len(s) <= _LABEL_CHARS else "…" + s[-(_LABEL_CHARS - 1) :]


def sensitivity(
    rows: Sequence[Mapping[str, Any]], top: int = 20, artifact: str | None = None
) -> bytes | None:
    """SQNR of the ``top`` first layers of ``rows`` (ranked rows keep their order; else lowest SQNR first)."""
    if not rows:
        return None
    if any("rank" in r for r in rows):
        ranked = sorted(rows, key=lambda r: (_finite([r.get("rank")])[0], str(r.get("node"))))[:top]
        what = "most harmful"
    else:
        ranked = sorted(rows, key=lambda r: (_finite([r.get("sqnr_db")])[0], str(r.get("node"))))[:top]
        what = "lowest"
    prefix = f"{artifact}: " if artifact else ""
    return bar_chart(
        [_tail(r.get("node")) for r in ranked],
        [r.get("sqnr_db") for r in ranked],
        title=f"{prefix}output SQNR vs FP32 (dB), {len(ranked)} {what} of {len(rows)} layers",
        xlabel="SQNR (dB)",
    )


def fallback_curve(
    steps: Sequence[Mapping[str, Any]], max_drop: float | None = None, artifact: str | None = None
) -> bytes | None:
    """Top-1 drop against the number of layers kept in float, one point per fallback step (by layer count)."""
    if not steps:
        return None
    ordered = sorted(steps, key=lambda s: (len(s.get("float_layers") or []), _finite([s.get("step")])[0]))
    xs = [len(s.get("float_layers") or []) for s in ordered]
    labels = [
        "ranges" if s.get("action") == "ranges" else ("chosen" if s.get("chosen") else "") for s in ordered
    ]
    prefix = f"{artifact}: " if artifact else ""
    return line_chart(
        xs,
        [s.get("drop") for s in ordered],
        title=f"{prefix}accuracy-aware fallback, drop vs layers kept in float",
        xlabel="layers kept in float",
        ylabel="top-1 drop (points)",
        reference=max_drop,
        reference_label=f"max drop {max_drop:g}" if max_drop is not None else None,
        point_labels=labels,
    )


__all__ = ["bar_chart", "fallback_curve", "label", "line_chart", "per_class_delta", "sensitivity"]


def latency_chart(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> bytes | None:
    """Median latency per image (ms) of every variant, one panel per batch size, bars grouped by threads."""
    batches = sorted({int(r["batch"]) for r in rows if isinstance(r.get("batch"), int)})
    variants = list(dict.fromkeys(str(r.get("variant")) for r in rows))
    threads = list(dict.fromkeys(r.get("threads") for r in rows))
    if not batches or not variants:
        return None
    value = {
        (str(r.get("variant")), r.get("batch"), r.get("threads")): _finite([r.get("p50_ms")])[0]
        / max(int(r.get("batch") or 1), 1)
        for r in rows
    }
    colours = [ACCENT, GOOD, BAD, NEUTRAL, "#8250df", "#bf8700"]

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(batches), squeeze=False)[0]
        width = 0.8 / len(variants)
        for ax, batch in zip(axes, batches, strict=True):
            for i, variant in enumerate(variants):
                xs = [j + i * width for j in range(len(threads))]
                ys = [value.get((variant, batch, t), 0.0) for t in threads]
                ax.bar(
                    xs, ys, width, color=colours[i % len(colours)], label=label(names.get(variant, variant))
                )
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(threads))])
            ax.set_xticklabels([f"{t} thread{'s' * (t != 1)}" if t else "all cores" for t in threads])
            ax.set_title(f"batch {batch}", loc="left")
            ax.set_ylabel("median ms per image")
        # below the panels: inside one, the legend would cover its bars
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(variants), 3), frameon=False)

    return _render(draw, (max(4.0, 3.6 * len(batches)), 3.6))
