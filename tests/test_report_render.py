"""report.json / report.md / report.html rendering: content, escaping, Markdown tables, plots, determinism."""

from __future__ import annotations

import base64
import copy
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from levit_edge.report import plots
from levit_edge.report.markdown import md_escape
from levit_edge.report.write import write_reports

EVIL = "<script>alert(1)</script>"
AMP = "a&b"
PIPE = "left|right"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _classes(n: int) -> list[str]:
    names = [f"class_{i:03d}" for i in range(n)]
    names[1], names[2], names[3] = EVIL, AMP, PIPE
    return names


def full_report() -> dict[str, Any]:
    """A labelled run with ORT and TensorRT INT8 artifacts and a built engine, shaped like build_report's."""
    names = _classes(40)

    def per_class(deltas: list[float]) -> list[dict[str, Any]]:
        return [
            {"class": c, "n": 10, "fp32": 80.0, "int8": 80.0 + d, "delta": d}
            for c, d in zip(names, deltas, strict=True)
        ]

    return {
        "schema_version": 1,
        "levit_edge_version": "0.1.0",
        "status": "passed",
        "run": {"name": "levit_128s-run", "created": "2025-01-02T03:04:05+00:00"},
        "model": {
            "name": "levit_128s",
            "classes": 40,
            "class_names": names,
            "checkpoint": "/ckpt/levit <best>.pth",
            "checkpoint_sha256": "ab" * 32,
            "checkpoint_format": "state_dict",
        },
        "preprocess": {
            "input_size": [3, 224, 224],
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "crop_pct": 0.9,
            "interpolation": "bicubic",
            "crop_mode": "center",
        },
        "parity": {"torch_fused_vs_timm": 1.2e-06, "onnxruntime_vs_torch_fused": 3.4e-06},
        "artifacts": {
            "fp32": "model.fp32.onnx",
            "int8.ort": "model.int8.ort.onnx",
            "int8.trt": "model.int8.trt.onnx",
            "int8.plan": "model.int8.plan",
        },
        "sizes": {"fp32": 31_400_000, "int8.ort": 9_100_000, "int8.trt": 9_300_000, "int8.plan": 8_000_000},
        "thresholds": {"max_drop": 1.0},
        "stages": {"load": 1.5, "export": 4.25, "calibrate": 20.0, "quantize": 3.0, "validate": 11.25},
        "environment": {
            "versions": {"onnx": "1.17.0", "onnxruntime": "1.20.1", "torch": "2.9.0", "timm": "1.0.15"},
            "python": "3.11.9",
            "platform": "Linux-6.8-x86_64",
            "machine": "x86_64",
            "cpu": "Intel(R) Xeon(R) Platinum 8480+",
            "cpu_count": 16,
            "cpu_flags": ["avx2", "avx512f", "avx512_vnni", "amx_int8"],
        },
        "trtexec": "trtexec --onnx=/runs/x/model.int8.trt.onnx --saveEngine=/runs/x/model.int8.plan --int8 "
        "--minShapes=images:1x3x224x224 --optShapes=images:1x3x224x224 --maxShapes=images:8x3x224x224",
        "options": {
            "model": {"name": "levit_128s", "checkpoint": None},
            "targets": {"names": ["ort", "trt"], "int8": True},
            "calib": {"path": "/data/calib", "size": 512},
            "out": "/runs",
        },
        "calibration": {
            "method": "percentile",
            "percentile": 99.999,
            "count": 512,
            "data_hash": "c0ffee" * 4,
            "tensors": 211,
            "skipped": [],
        },
        "quantization": {
            "int8.ort": {
                "format": "QDQ",
                "activations": "uint8 asymmetric",
                "weights": "int8 symmetric per-channel, 7-bit (reduce_range)",
                "ops": ["Conv", "MatMul", "Gemm"],
                "float": ["Softmax", "HardSwish", "attention bias Add", "attention MatMuls"],
                "bias": "int32",
                "why": [
                    "U8S8 is the pair ONNX Runtime's integer kernels are fastest with",
                    "reduce_range avoids saturation",
                ],
                "quantized_nodes": 74,
                "excluded_nodes": ["/head/Gemm"],
                "qdq_pairs": 148,
            },
            "int8.trt": {
                "format": "QDQ",
                "activations": "int8 symmetric",
                "weights": "int8 symmetric per-channel",
                "ops": ["Conv", "MatMul", "Gemm", "Add (residual)"],
                "float": ["Softmax", "HardSwish"],
                "bias": "float",
                "why": ["TensorRT explicit quantization: symmetric signed INT8"],
                "quantized_nodes": 86,
                "excluded_nodes": [],
                "qdq_pairs": 172,
                "note": "TensorRT Q/DQ simulated on CPU by ONNX Runtime",
            },
        },
        "engine": {
            "reason": None,
            "built": True,
            "tensorrt_version": "10.7.0",
            "gpu": "NVIDIA H100",
            "batch_range": [1, 1, 8],
            "seconds": 42.5,
        },
        "validation": {
            "source": "/data/val|set",
            "kind": "labelled-folder",
            "n": 400,
            "labelled": True,
            "class_order": names,
            "data_hash": "feed" * 6,
            "excluded": 3,
            "skipped": [["broken.jpg", "cannot identify image file"], [EVIL + ".png", "truncated"]],
        },
        "accuracy": {
            "fp32": {"top1": 78.5, "top5": 94.25, "n": 400},
            "int8.ort": {"top1": 78.1, "top5": 94.0, "n": 400},
            "int8.trt": {"top1": 77.95, "top5": 93.75, "n": 400},
        },
        "drop": {"int8.ort": 0.4, "int8.trt": 0.55},
        "agreement": {"int8.ort": 98.75, "int8.trt": 98.25},
        "kl": {"int8.ort": 0.0123, "int8.trt": 0.00042},
        "cosine": {"int8.ort": 0.99871, "int8.trt": 0.99802},
        "per_class": {
            # ORT: 13 classes worse, 3 better; TensorRT: 6 worse
            "int8.ort": per_class([-10.0 if i % 3 == 1 else 10.0 if i % 11 == 0 else 0.0 for i in range(40)]),
            "int8.trt": per_class([-5.0 if i % 7 == 1 else 0.0 for i in range(40)]),
        },
        "confusion_changes": {
            "int8.ort": [[EVIL, AMP, 3], ["class_005", PIPE, 2], ["class_006", "class_007", 1]],
            "int8.trt": [],
        },
        "latency": {
            "fp32": {
                "p50_ms": 40.0,
                "p90_ms": 44.0,
                "p99_ms": 50.0,
                "batch": 32,
                "threads": None,
                "calls": 12,
                "source": "validation batches",
            },
            "int8.ort": {
                "p50_ms": 16.0,
                "p90_ms": 18.0,
                "p99_ms": 21.0,
                "batch": 32,
                "threads": 8,
                "calls": 12,
                "source": "validation batches",
            },
        },
        "gate": {"status": "passed", "max_drop": 1.0, "failures": []},
    }


def minimal_report() -> dict[str, Any]:
    """An FP32-only export: no calibration, quantization, validation or engine."""
    r = full_report()
    keep = {"schema_version", "status", "run", "model", "preprocess", "stages", "environment", "thresholds"}
    out = {k: v for k, v in r.items() if k in keep}
    out["artifacts"] = {"fp32": "model.fp32.onnx"}
    out["sizes"] = {"fp32": 31_400_000}
    out["model"]["class_names"] = None
    return out


def unlabelled_report() -> dict[str, Any]:
    """Validation without labels: agreement, KL and cosine only; drop is disagreement."""
    r = full_report()
    for key in ("accuracy", "per_class", "confusion_changes"):
        r[key] = {} if key != "per_class" else {"int8.ort": [], "int8.trt": []}
    r["validation"].update(labelled=False, class_order=None, kind="folder")
    r["drop"] = {"int8.ort": 1.25, "int8.trt": 1.75}  # 100 - agreement
    r["thresholds"] = {"max_drop": 2.0}
    r["gate"] = {"status": "passed", "max_drop": 2.0, "failures": []}
    return r


def failed_report() -> dict[str, Any]:
    """The gate failed for the TensorRT artifact; its engine could not be built here."""
    r = full_report()
    r["status"] = "failed-accuracy"
    r["accuracy"]["int8.trt"]["top1"] = 76.0
    r["drop"]["int8.trt"] = 2.5
    r["gate"] = {"status": "failed", "max_drop": 1.0, "failures": ["int8.trt: drop 2.50 points > 1"]}
    r["engine"] = {"reason": "TensorRT is not installed", "built": False}
    for row in r["per_class"]["int8.trt"]:
        row.update(int8=row["fp32"], delta=0.0)
    return r


VALIDATION_KEYS = ("validation", "accuracy", "drop", "agreement", "kl", "cosine", "per_class")
VALIDATION_KEYS += ("confusion_changes", "latency", "gate")


def unvalidated_report() -> dict[str, Any]:
    """INT8 artifacts built without validation data; TensorRT missing on the build machine."""
    r = full_report()
    for key in VALIDATION_KEYS:
        del r[key]
    r["status"] = "unvalidated"
    r["engine"] = {"reason": "no CUDA GPU", "built": False}
    return r


def no_engine_report() -> dict[str, Any]:
    """Validated and within the gate, but the engine could not be built here."""
    r = unlabelled_report()
    r["status"] = "no-engine"
    r["engine"] = {"reason": "TensorRT is not installed", "built": False}
    return r


ALL = {
    "full": full_report,
    "minimal": minimal_report,
    "unlabelled": unlabelled_report,
    "failed": failed_report,
    "unvalidated": unvalidated_report,
    "no-engine": no_engine_report,
}


@dataclass(frozen=True)
class Rendered:
    report: dict[str, Any]
    run_dir: Path
    html: str  # as written
    text: str  # html with entities unescaped, for content checks
    md: str


def _render(run_dir: Path, report: dict[str, Any]) -> Rendered:
    write_reports(run_dir, report)
    page = (run_dir / "report.html").read_text()
    return Rendered(report, run_dir, page, html.unescape(page), (run_dir / "report.md").read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """Each example report rendered once (plots take a moment)."""
    root = tmp_path_factory.mktemp("reports")
    return {kind: _render(root / kind, make()) for kind, make in ALL.items()}


def _md_tables(md: str) -> list[list[str]]:
    """The Markdown tables, each as its lines."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def _cells(row: str) -> int:
    return len(re.split(r"(?<!\\)\|", row.strip())) - 2  # "| a | b |" splits into ["", a, b, ""]


def _assert_rectangular(md: str) -> None:
    tables = _md_tables(md)
    assert tables
    for rows in tables:
        assert len({_cells(r) for r in rows}) == 1, rows
        assert re.fullmatch(r"\|(-{3}:?\|)+", rows[1]), rows[1]


@pytest.mark.parametrize("kind", sorted(ALL))
def test_files_written_and_json_round_trips(rendered: dict[str, Rendered], kind: str) -> None:
    r = rendered[kind]
    assert sorted(p.name for p in r.run_dir.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads((r.run_dir / "report.json").read_text()) == r.report
    assert r.html.startswith("<!DOCTYPE html>") and r.html.rstrip().endswith("</html>")
    assert f'<span class="badge">{r.report["status"]}</span>' in r.html
    assert f"**Status: {r.report['status'].upper()}**" in r.md


@pytest.mark.parametrize("kind", sorted(ALL))
def test_markdown_tables_are_rectangular(rendered: dict[str, Rendered], kind: str) -> None:
    _assert_rectangular(rendered[kind].md)


def test_full_report_content(rendered: dict[str, Rendered]) -> None:
    r = rendered["full"]
    for text in (r.text, r.md):
        # accuracy table: size MB, top-1, top-5, drop, agreement, KL, cosine
        for number in (
            "31.40",
            "9.10",
            "78.50",
            "78.10",
            "77.95",
            "94.25",
            "0.40",
            "0.55",
            "98.75",
            "0.0123",
            "4.20e-04",
            "0.99871",
        ):
            assert number in text, number
        assert "int8.ort: drop 0.40 points ≤ max 1.0" in text
        assert "int8.ort: top-1 78.10% (-0.40), 9.10 MB (3.5x smaller), p50 16.00 ms (batch 32)" in text
        assert "reduce_range avoids saturation" in text  # the recipe's why lines
        assert "TensorRT Q/DQ simulated on CPU by ONNX Runtime" in text
        assert "40 classes, index order:" in text
        assert (
            "40 classes: 13 worse, 3 better, 24 unchanged. The 15 largest drops of the 16 changed classes:"
            in text
        )
        assert "40 classes: 6 worse, 0 better, 34 unchanged. The changed classes, worst first:" in text
        assert "6 new errors in 3 pairs" in text
        assert "No new errors." in text  # int8.trt
        assert "Xeon" in text and "avx512_vnni" in text and "1.20.1" in text
        assert "10.7.0" in text and "NVIDIA H100" in text
        assert "p50 ms/image" in text and "0.500" in text and "all cores" in text
    assert "<pre><code>trtexec --onnx=/runs/x/model.int8.trt.onnx --saveEngine=" in r.html
    assert "\n```\ntrtexec --onnx=/runs/x/model.int8.trt.onnx --saveEngine=" in r.md
    assert 'class="headline t-good"' in r.html
    assert '<td class="num good">0.40</td>' in r.html


def test_unlabelled_report_reports_agreement(rendered: dict[str, Rendered]) -> None:
    r = rendered["unlabelled"]
    for text in (r.text, r.md):
        assert "int8.ort: disagreement with FP32 1.25 points ≤ max 2.0" in text
        assert "int8.ort: agrees with FP32 on 98.75%" in text
        assert "400 unlabelled images" in text
        assert "none given (class indices as the model outputs them)" in text
        assert "Per-class accuracy change" not in text and "top-1 78" not in text
    assert "data:image/png;base64," not in r.html


def test_failed_gate_and_missing_engine(rendered: dict[str, Rendered]) -> None:
    r = rendered["failed"]
    assert 'class="headline t-bad"' in r.html
    assert '<li class="bad">Gate: int8.trt: drop 2.50 points &gt; max 1.0</li>' in r.html
    assert '<li class="good">Gate: int8.ort: drop 0.40 points ≤ max 1.0</li>' in r.html
    assert '<td class="num bad">2.50</td>' in r.html
    assert '<td class="warn">not built: TensorRT is not installed</td>' in r.html
    assert "- Gate: int8.trt: drop 2.50 points > max 1.0" in r.md
    assert "**Status: FAILED-ACCURACY** — an INT8 artifact lost more accuracy than the gate allows" in r.md


def test_minimal_report_renders_without_optional_sections(rendered: dict[str, Rendered]) -> None:
    r = rendered["minimal"]
    for text in (r.text, r.md):
        assert "Gate: not applied: no INT8 artifact (max drop 1.0 points)" in text
        assert "fp32: 31.40 MB" in text
        for absent in (
            "Latency",
            "Quantization recipe",
            "Data",
            "TensorRT engine",
            "Per-class",
            "New errors",
        ):
            assert f"{absent}</h2>" not in text and f"## {absent}" not in text
    assert "data:image/png;base64," not in r.html


def test_unvalidated_and_no_engine_statuses(rendered: dict[str, Rendered]) -> None:
    r = rendered["unvalidated"]
    assert 'class="headline t-warn"' in r.html
    assert "INT8 artifacts were built but not validated (no validation data)" in r.md
    assert "- Gate: not applied: no validation data (max drop 1.0 points)" in r.md
    assert "Quantization recipe" in r.md and "## Data" in r.md and "### Validation" not in r.md
    r = rendered["no-engine"]
    assert 'class="headline t-warn"' in r.html
    assert (
        "**Status: NO-ENGINE** — everything was built except the TensorRT engine: TensorRT is not installed"
        in r.md
    )
    assert "| status | not built: TensorRT is not installed |" in r.md


def test_untrusted_strings_are_escaped(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    report = full_report()
    report["run"]["name"] = EVIL
    report["model"]["name"] = "levit<&>"
    report["engine"]["reason"] = EVIL
    report["options"]["out"] = AMP
    r = _render(tmp_path, report)
    assert "<script" not in r.html
    assert (
        r.html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
    )  # title, classes, confusions, skipped...
    assert "a&amp;b" in r.html and "levit&lt;&amp;&gt;" in r.html
    body = r.html.split("</style>", 1)[1]
    assert re.search(r"&(?!amp;|lt;|gt;|quot;|#x27;)", body) is None  # every & is an entity
    # Markdown: no raw tag, pipes escaped so tables keep their shape
    assert re.search(r"(?<!\\)<script", r.md) is None and "\\<script>alert(1)\\</script>" in r.md
    assert "| left\\|right |" in r.md and "| a&b |" in r.md and "/data/val\\|set" in r.md
    _assert_rectangular(r.md)


def test_md_escape() -> None:
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("a\\|b") == "a\\\\\\|b"  # a literal backslash must not un-escape the pipe
    assert md_escape("x\ny") == "x y"
    assert md_escape("&amp;") == "\\&amp;" and md_escape("a&b") == "a&b"
    assert md_escape("`code` *b*") == "\\`code\\` \\*b\\*"


def test_plots_embedded_when_per_class_exists(rendered: dict[str, Rendered]) -> None:
    r = rendered["full"]
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', r.html)
    assert [alt for alt, _ in images] == [
        "int8.ort: per-class top-1 change vs FP32",
        "int8.trt: per-class top-1 change vs FP32",
    ]
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for _, data in images)
    assert "data:image" not in r.md
    for kind in ("minimal", "unlabelled"):
        assert "<img" not in rendered[kind].html
    # no plot for an artifact whose classes all kept their accuracy
    failed = rendered["failed"]
    assert failed.html.count("<img") == 1 and "No class changed its top-1 accuracy." in failed.md


def test_output_is_deterministic(tmp_path: Path) -> None:
    report = full_report()
    report["sensitivity"] = [
        {"node": f"/blocks.{i}/MatMul", "sqnr_db": 30.0 - i, "agreement_delta": -0.1 * i, "kl": 0.01}
        for i in range(25)
    ]
    report["fallback"] = [
        {"step": i, "float_layers": [f"n{j}" for j in range(i)], "top1": 77.0 + i / 2, "drop": 1.5 - i / 2,
         "size": 9e6, "latency_ms": 16.0}
        for i in range(4)
    ]  # fmt: skip
    a = _render(tmp_path / "a", report)
    b = _render(tmp_path / "b", copy.deepcopy(report))
    for name in ("report.json", "report.md", "report.html"):
        assert (a.run_dir / name).read_bytes() == (b.run_dir / name).read_bytes(), name
    assert a.html.count("data:image/png;base64,") == 4  # 2 per-class + sensitivity + fallback
    assert "Layer sensitivity" in a.md and "Fallback" in a.md
    _assert_rectangular(a.md)


def test_future_sections_render_generically(tmp_path: Path) -> None:
    report = minimal_report()
    report["bench"] = {
        "reference": "fp32",
        "rows": [
            {"backend": "ort-fp32", "batch": 1, "p50_ms": 3.2, "ratio": 1.0},
            {"backend": "ort-int8", "batch": 1, "p50_ms": 1.6, "ratio": 2.0},
            {"backend": "ort-int8", "batch": 32, "p50_ms": 16.0, "ratio": 2.5},
        ],
    }
    report["sensitivity"] = [
        {"node": f"/blocks.{i}/MatMul|x", "sqnr_db": 10.0 + i, "agreement_delta": -0.5, "kl": 0.02}
        for i in range(30)
    ]
    report["something_new"] = {"answer": 42, "nested": {"x": {"y": 1}}}
    r = _render(tmp_path, report)
    for text in (r.text, r.md):
        assert "Benchmark" in text and "ort-int8" in text and "2.5" in text
        assert "Layer sensitivity" in text and "10 more rows in report.json" in text
        assert "something_new" in text and "answer" in text and "42" in text
    assert r.html.count("data:image/png;base64,") == 1  # the SQNR chart; no per-class data here
    _assert_rectangular(r.md)


def test_plot_functions_return_png_or_none() -> None:
    assert plots.per_class_delta([], "int8.ort") is None
    assert plots.sensitivity([]) is None and plots.fallback_curve([]) is None
    png = plots.bar_chart(
        ["a$b", "<c>", "x" * 80], [1.0, float("nan"), -2.0], title="t $x$", xlabel="v", signed=True
    )
    assert png.startswith(PNG_MAGIC)
    assert png == plots.bar_chart(
        ["a$b", "<c>", "x" * 80], [1.0, float("nan"), -2.0], title="t $x$", xlabel="v", signed=True
    )
    assert plots.label("a$b") == "a\\$b" and len(plots.label("y" * 100)) == 36


def test_odd_values_do_not_break_rendering(tmp_path: Path) -> None:
    report = minimal_report()
    report["status"] = "weird"
    report["parity"] = {"torch_fused_vs_timm": float("nan"), "onnxruntime_vs_torch_fused": None}
    report["sizes"]["fp32"] = None
    report["stages"] = {}
    report["drop"] = {"int8.ort": float("inf")}
    report["bench"] = {"empty": {}, "deep": [[1, 2], [3]], "rows": []}
    report["per_class"] = {"int8.ort": [{"class": None, "delta": "n/a"}]}
    r = _render(tmp_path, report)
    assert 'class="headline t-none"' in r.html and "status not recognised" in r.md
    assert "[\n    1,\n    2\n  ]" in r.md  # nested lists fall back to JSON in a code block
    assert "<img" not in r.html  # no class changed (non-numeric delta)
    _assert_rectangular(r.md)
