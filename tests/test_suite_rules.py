"""Rules the test suite keeps so that it passes on every CPU, idle or loaded, checked by reading its source.

* No timing bound: no assertion compares a duration (``seconds``, ``elapsed``, ``*_ms``, ``perf_counter``,
  ``monotonic``) with a number. Speed lives in benchmarks/ and BENCHMARKS.md.
* No tolerance taken from one machine: every literal float tolerance (``atol``/``rtol``/``abs``/``rel``
  keywords, ``*TOL*`` constants, an assertion bounding a difference by a small literal) is listed in
  :data:`TOLERANCES` with the reason it holds on any CPU: float32 rounding relative to a scale the test
  derives, or an identity. A new one fails here until it is justified. Bounds on accuracy figures are
  derived from the fixture's own figures (chance level, its FP32 top-1), not written down.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# (file, value) -> why it holds on any CPU.
TOLERANCES: dict[tuple[str, float], str] = {
    ("test_fuse.py", 1e-4): "float32 rounding of a ~20-layer net relative to the logit range (eps 1.2e-7 x"
    " depth x accumulation, measured ~2e-7 on AVX2 and AVX-512): a 500x margin, not a fitted value",
    ("test_fuse.py", 1e-5): "head averaging is two float32 adds relative to the logit range",
    ("test_fuse.py", 1e-6): "rtol of an average of two float32 weights: one rounding",
    ("test_fuse.py", 1e-7): "atol of an average of two float32 weights of magnitude <= 1: one rounding",
    ("test_export.py", 1e-4): "same bound as test_fuse.py: ONNX Runtime vs torch float32, relative to range",
    ("test_model_load.py", 1e-5): "loading the same tensors: float32 identity up to kernel reassociation",
    ("test_accuracy_aware.py", 1e-9): "the same float64 figure reached by two code paths (identity)",
    ("test_int8_pipeline.py", 1e-6): "KL recomputed in float64 from the same logits (identity up to order)",
    ("test_metrics_gate.py", 1e-12): "KL of a distribution with itself, float64 (identity)",
    ("test_fuse.py", 0.03): "bfloat16/float16 storage (8-bit mantissa, 2**-8 relative) through the net,"
    " relative to the logit range: about eight roundings' worth",
    (
        "test_cli_export.py",
        1e-4,
    ): "the export's parity figures are relative float32 deviations: as test_fuse.py",
    ("test_fixture.py", 1e-9): "the same top-1 fraction counted twice (identity)",
    ("test_platform_aarch64.py", 1e-9): "the drop recomputed from the same two top-1 figures (identity)",
    ("test_calibrate.py", 1e-6): "a 3-term float32 convolution against float64 numpy: one rounding or two",
    ("test_batching.py", 1e-5): "rtol: a two-op float32 ONNX graph against numpy: a few roundings",
    ("test_batching.py", 1e-4): "atol of the same comparison, for outputs near zero",
    ("test_board.py", 1e-5): "the same Pillow resize, then float32 normalization in two orders: one rounding",
    ("test_bench_threads.py", 1e-5): "rtol: OpenVINO's float32 channel mean against numpy's (one reduction)",
    ("test_bench_threads.py", 1e-6): "atol of the same reduction, for means near zero",
    ("test_fuse.py", 1e-9): "the fold checked in float64 (eps 2e-16): exact up to float64 rounding",
    ("test_results_trust.py", 1e-4): "ORT vs torch float32 relative to the logit range, as test_fuse.py",
    ("test_trt_fp16.py", 0.02): "FP16 storage rounding (2**-11 relative) through the net, relative to range",
    ("test_tensorrt_backend.py", 0.1): "INT8 vs FP32 on a GPU, relative to range (runs only with TensorRT)",
}

DURATION_WORDS = ("seconds", "elapsed", "_ms", "perf_counter", "monotonic", "duration")


def _sources() -> list[tuple[str, ast.Module, str]]:
    out = []
    for path in sorted(TESTS.glob("*.py")):
        text = path.read_text()
        out.append((path.name, ast.parse(text), text))
    return out


def _small_float(node: ast.AST) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, float) and 0 < node.value <= 0.1:
        return float(node.value)
    return None


def _literal_tolerances(tree: ast.Module) -> list[tuple[int, float]]:
    found: list[tuple[int, float]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ("atol", "rtol", "abs", "rel"):
            value = _small_float(node.value)
            if value is not None:
                found.append((node.value.lineno, value))  # type: ignore[attr-defined]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and "TOL" in t.id for t in node.targets
        ):
            value = _small_float(node.value)
            if value is not None:
                found.append((node.lineno, value))
        elif isinstance(node, ast.Assert):
            for cmp in ast.walk(node.test):
                if isinstance(cmp, ast.Compare) and any(isinstance(op, ast.Lt | ast.LtE) for op in cmp.ops):
                    for side in cmp.comparators:
                        value = _small_float(side)
                        if value is not None:
                            found.append((cmp.lineno, value))
    return found


def _bounds_a_duration(cmp: ast.Compare, text: str) -> bool:
    """An ordering comparison of a duration with a non-zero number (``x > 0`` says only "it ran")."""
    if not any(isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) for op in cmp.ops):
        return False
    sides = [cmp.left, *cmp.comparators]
    numeric = any(
        isinstance(s, ast.Constant) and isinstance(s.value, int | float) and s.value != 0 for s in sides
    )
    source = (ast.get_source_segment(text, cmp) or "").lower()
    return numeric and "len(" not in source and any(word in source for word in DURATION_WORDS)


def test_no_test_bounds_a_duration() -> None:
    offenders = []
    for name, tree, text in _sources():
        if name == Path(__file__).name:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Assert):
                continue
            for cmp in ast.walk(node.test):
                if not isinstance(cmp, ast.Compare):
                    continue
                if _bounds_a_duration(cmp, text):
                    offenders.append(f"{name}:{cmp.lineno}: {ast.get_source_segment(text, cmp)}")
    assert offenders == [], "timing bounds in tests (move them to a benchmark):\n" + "\n".join(offenders)


def test_every_literal_tolerance_is_justified() -> None:
    unjustified = [
        f"{name}:{line}: {value:g}"
        for name, tree, _ in _sources()
        if name != Path(__file__).name
        for line, value in _literal_tolerances(tree)
        if (name, value) not in TOLERANCES
    ]
    assert unjustified == [], (
        "float tolerances without a reason that holds on any CPU (add one to TOLERANCES, or derive the "
        "bound from the test's own figures):\n" + "\n".join(unjustified)
    )


def test_the_rules_see_what_they_forbid(tmp_path: Path) -> None:
    """The scanners themselves can fail: a planted timing bound and an unlisted tolerance are found."""
    planted = ast.parse(
        "def test_x():\n"
        "    assert result_seconds < 20\n"
        "    assert np.allclose(a, b, atol=0.0248)\n"
        "    assert diff < 0.03\n"
    )
    assert sorted(v for _, v in _literal_tolerances(planted)) == [0.0248, 0.03]
    text = ast.unparse(planted)
    compares = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Compare)]
    assert [_bounds_a_duration(n, text) for n in compares] == [True, False]
