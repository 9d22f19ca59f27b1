"""The report's lower half as a person reads it: Benchmark, Layer sensitivity, Fallback and stage timings
are tables with human headings, units and rounding; a latency chart; a loaded machine is said so."""

from __future__ import annotations

import html
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from levit_edge.bench import BenchResult, BenchSettings
from levit_edge.report.write import write_reports

ENV = {"python": "3.11.9", "platform": "Linux", "machine": "x86_64", "cpu": "Test CPU", "cpu_count": 2}


def report(load: float) -> dict[str, Any]:
    results = [
        BenchResult(variant, batch, threads, p50, p50 * 1.1, p50 * 1.3, p50 * 1.05, 1000 * batch / p50, 50,
                    {"fp32": 3.2345678 / p50 if batch == 1 else 30.0 / p50})
        for variant, p50s in (("fp32", (3.2345678, 30.0)), ("int8.ort", (1.6123456, 12.987654)))
        for batch, p50 in zip((1, 16), p50s, strict=True)
        for threads in (1, None)
    ]  # fmt: skip
    settings = asdict(BenchSettings(batches=(1, 16), threads=(1, None), load_average=(load, load, load)))
    return {
        "schema_version": 1,
        "status": "passed",
        "run": {"name": "r1"},
        "environment": ENV,
        "stages": {"load": 1.0, "export": 2.0, "validate": 3.0, "revalidate": 50.0},
        "bench": {"settings": settings, "results": [r.to_dict() for r in results], "environment": ENV},
        "sensitivity": [
            {"artifact": "int8.ort", "rank": i + 1, "node": f"/stages.1/blocks.{i}/attn/proj/MatMul",
             "op_type": "MatMul", "sqnr_db": 21.23456 - i, "input_sqnr_db": 30.98765, "weight_sqnr_db": 40.5,
             "agreement_delta": 0.390625, "kl": 0.00123456, "kl_gain": 0.000456789}
            for i in range(3)
        ],
        "sensitivity_info": [
            {"artifact": "int8.ort", "profile": "ort", "layers": 47, "calib_samples": 32, "rank_images": 256,
             "base_agreement": 97.65625, "base_kl": 0.0123456, "seconds": 12.3456}
        ],
        "fallback": [
            {"artifact": "int8.ort", "step": i, "action": "float" if i else "all-quantized",
             "float_layers": [f"/stages.1/blocks.{j}/attn/proj/MatMul" for j in range(i)],
             "range_overrides": 0, "top1": 77.123456 + i, "drop": 1.4567 - i, "agreement": 95.5555,
             "kl": 0.0234567, "size": 9_123_456, "latency_ms": 16.98765, "meets_budget": i == 1,
             "chosen": i == 1}
            for i in range(2)
        ],
    }  # fmt: skip


def render(tmp_path: Path, load: float) -> tuple[str, str]:
    write_reports(tmp_path, report(load))
    return (tmp_path / "report.md").read_text(), html.unescape((tmp_path / "report.html").read_text())


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_tables_have_human_headings_units_and_rounding(tmp_path: Path) -> None:
    md, page = render(tmp_path, 0.1)
    for title in ("Benchmark", "Layer sensitivity", "Fallback", "Stage timings"):
        section = _section(md, title)
        headers = [line for line in section.splitlines() if line.startswith("| ")][:1]
        assert headers, title
        # no report.json key as a heading: no snake_case word anywhere in the table headings
        assert not re.search(r"\b[a-z0-9]+_[a-z0-9_]+\b", " ".join(headers)), (title, headers)
        # numbers rounded: at most 4 decimals (KL; 2 for ms, %, points, MB: checked below)
        assert not re.search(r"\b\d+\.\d{5,}\b", section), (title, section)
    bench = _section(md, "Benchmark")
    assert "median (ms)" in bench and "images/s" in bench and "ONNX Runtime INT8" in bench
    assert "| ONNX Runtime INT8 | 1 | 1 | 1.61 |" in bench  # variant name, batch, threads, rounded ms
    assert "all cores" in bench
    fallback = _section(md, "Fallback")
    assert "size (MB)" in fallback and "9.12" in fallback and "9123456" not in fallback
    assert "| 1 | float | 1 | 78.12 | +0.46 | 95.56 |" in fallback
    assert "output SQNR (dB)" in _section(md, "Layer sensitivity")
    assert "21.2" in _section(md, "Layer sensitivity")
    assert 'alt="median latency per image by variant, batch and threads"' in page
    raw = (tmp_path / "report.html").read_text()
    assert '<td class="word">MatMul</td>' in raw  # short tokens never break mid-word
    assert "/<wbr>stages.1/<wbr>blocks.0/<wbr>attn" in raw  # node names wrap after a slash only


def test_environment_is_not_repeated_and_stage_total_is_the_export_only(tmp_path: Path) -> None:
    md, _ = render(tmp_path, 0.1)
    assert "Benchmark machine" not in md  # same machine as the run: the Environment section says it all
    stages = _section(md, "Stage timings")
    assert "| export total | 6.00 |" in stages  # load + export + validate, not the later re-validation
    assert "| validate (later, on the finished run) | 50.00 |" in stages


def test_a_loaded_machine_is_said_so(tmp_path: Path) -> None:
    busy, _ = render(tmp_path / "busy", 3.5)
    idle, _ = render(tmp_path / "idle", 0.2)
    assert "Timed on a loaded machine (load average 3.50 over 2 cores" in _section(busy, "Benchmark")
    assert "loaded machine" not in idle and "Timed on an idle machine" in _section(idle, "Benchmark")
