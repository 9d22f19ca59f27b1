"""The TensorRT extras resolve to one CUDA variant each, within bounds, and building needs no pycuda.

Read from pyproject.toml with tomllib and checked with ``packaging`` (pip's own requirement logic):
the bare ``tensorrt`` package is never required (from 11.x it pulls the CUDA 13 build, driver R580+),
each ``trt-cuNN`` extra pins TensorRT's CUDA-NN wheels below the next TensorRT major and a cuda-python
of the same CUDA major; ``trt`` is the CUDA 12 variant; pycuda is only in ``trt-pycuda``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]


def _requirements(extra: str, seen: frozenset[str] = frozenset()) -> list[Requirement]:
    """The extra's requirements with self-references (``levit-edge[x]``) expanded, as pip does."""
    out: list[Requirement] = []
    for text in EXTRAS[extra]:
        req = Requirement(text)
        if req.name == "levit-edge":
            assert not req.extras & seen, f"cyclic extra {extra}"
            for inner in sorted(req.extras):
                out += _requirements(inner, seen | {extra})
        else:
            out.append(req)
    return out


def test_one_extra_per_cuda_major_with_bounds() -> None:
    variants = {name: int(m.group(1)) for name in EXTRAS if (m := re.fullmatch(r"trt-cu(\d+)", name))}
    assert variants == {"trt-cu12": 12, "trt-cu13": 13}
    for extra, cuda in variants.items():
        reqs = {r.name: r for r in _requirements(extra)}
        assert set(reqs) == {f"tensorrt-cu{cuda}", "cuda-python"}, extra
        trt = reqs[f"tensorrt-cu{cuda}"].specifier
        assert Version("12.0") not in trt and Version("11.4.0.106") in trt  # bounded below 12, 11.x in
        binding = reqs["cuda-python"].specifier
        assert Version(f"{cuda}.9.0") in binding
        assert Version(f"{cuda + 1}.0.0") not in binding and Version(f"{cuda - 1}.9.0") not in binding
    # JetPack 6's TensorRT 10.3 is a CUDA 12 build: the CUDA 12 extra admits it.
    assert Version("10.3.0") in {r.name: r for r in _requirements("trt-cu12")}["tensorrt-cu12"].specifier


def test_trt_is_the_cuda12_variant_and_never_the_bare_package() -> None:
    assert [str(r) for r in _requirements("trt")] == [str(r) for r in _requirements("trt-cu12")]
    for extra in EXTRAS:
        assert all(r.name != "tensorrt" for r in _requirements(extra)), extra


def test_pycuda_only_where_asked_for() -> None:
    for extra in EXTRAS:
        names = {r.name for r in _requirements(extra)}
        assert ("pycuda" in names) == (extra == "trt-pycuda"), extra
