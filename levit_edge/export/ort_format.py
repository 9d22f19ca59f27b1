"""ONNX Runtime format (``.ort``) models and the operator configs of a reduced (minimal) ONNX Runtime build.

Conversion uses onnxruntime's own tools (``onnxruntime.tools.convert_onnx_models_to_ort``) with these
choices, recorded in the report:

* optimization style **Fixed**, level ``all``: every graph optimization of the CPU execution provider is
  applied once, at conversion, and saved. A minimal build runs no optimizers, so this is the style ONNX
  Runtime recommends for the CPU provider ("Runtime" style exists for compiling providers such as NNAPI
  and CoreML, and needs more operators: the un-fused graph's ones as well).
* no target platform: the converter then leaves out the x86-only NCHWc layout and keeps the generic QDQ
  handling, so the file runs on ARM and x86 alike (for the LeViT models here ``arm`` gives the same graph).
* type reduction **on**: ``required_operators_and_types.config`` records the input/output types each
  operator needs (build with ``--enable_reduced_operator_type_support``); ``required_operators.config``,
  the same operators without types, is written as well for builds without type reduction.

ONNX Runtime's flatbuffer writer does not order some tables deterministically, so two conversions of the
same model can differ in their bytes (same content, permuted); the configs are deterministic. Outputs are
what is checked: the ``.ort`` model must give its source model's logits.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from levit_edge.errors import UserError
from levit_edge.io import write_atomic, write_error

if TYPE_CHECKING:
    from levit_edge.backends.base import Runner
    from levit_edge.validate.compare import Evaluation

OPS_CONFIG = "required_operators.config"
TYPES_CONFIG = "required_operators_and_types.config"
OPTIMIZATION_STYLE = "Fixed"
OPTIMIZATION_LEVEL = "all"
TARGET_PLATFORM = "generic"  # the converter's default: no --target_platform
_ORT_LOGGER = "ort_format_model.utils"


@dataclass(frozen=True)
class Operator:
    """One operator a reduced build must include: domain, opset, name, the types it needs, and users."""

    domain: str
    opset: int
    op: str
    types: Mapping[str, Any] | None = None  # {"inputs": {"0": ["float"]}, "outputs": {...}} or None
    models: tuple[str, ...] = ()

    def types_text(self) -> str:
        """Types as short text, e.g. ``in0: uint8_t; out0: float``; empty when none are recorded."""
        if not self.types:
            return ""
        parts = []
        for kind, short in (("inputs", "in"), ("outputs", "out")):
            for index, names in sorted(dict(self.types.get(kind) or {}).items(), key=lambda kv: int(kv[0])):
                parts.append(f"{short}{index}: {', '.join(names)}")
        if "custom" in self.types:
            parts.append(f"custom: {json.dumps(self.types['custom'])}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "opset": self.opset,
            "op": self.op,
            "types": dict(self.types) if self.types else None,
            "models": list(self.models),
        }


@dataclass(frozen=True)
class OrtFormatModel:
    """One converted model: the ``.ort`` file, the ONNX file it came from, and a load-and-run check."""

    artifact: str  # the source's report key: "int8.ort" or "fp32"
    path: Path
    source: Path
    size: int
    source_size: int
    check: Mapping[str, Any] = field(default_factory=dict)  # parity on the check inputs, if any


@dataclass(frozen=True)
class OrtFormatResult:
    """What :func:`convert_to_ort` wrote: models, both operator configs and the parsed operator list."""

    models: tuple[OrtFormatModel, ...]
    ops_config: Path
    types_config: Path
    operators: tuple[Operator, ...]
    onnxruntime_version: str
    optimization_style: str = OPTIMIZATION_STYLE
    optimization_level: str = OPTIMIZATION_LEVEL
    target_platform: str = TARGET_PLATFORM

    @property
    def domains(self) -> dict[str, list[int]]:
        """Each operator domain with the opsets the build must support."""
        out: dict[str, set[int]] = {}
        for op in self.operators:
            out.setdefault(op.domain, set()).add(op.opset)
        return {d: sorted(v) for d, v in sorted(out.items())}

    def build_command(self) -> str:
        """The ONNX Runtime ``build.sh`` line for a minimal CPU build that runs exactly these models."""
        flags = [
            "./build.sh --config MinSizeRel --build_shared_lib --parallel --skip_tests",
            "--minimal_build",
            *(["--disable_ml_ops"] if "ai.onnx.ml" not in self.domains else []),
            "--disable_exceptions --disable_rtti",
            f"--include_ops_by_config {self.types_config.name} --enable_reduced_operator_type_support",
        ]
        return " \\\n    ".join(flags)

    def describe(self) -> dict[str, Any]:
        """The report's ``firmware`` section (without validation parity, which the pipeline adds)."""
        return {
            "format": "ONNX Runtime format (.ort, flatbuffer)",
            "converter": "onnxruntime.tools.convert_onnx_models_to_ort",
            "onnxruntime_version": self.onnxruntime_version,
            "optimization_style": self.optimization_style,
            "optimization_level": self.optimization_level,
            "target_platform": self.target_platform,
            "type_reduction": True,
            "models": {
                m.path.name: {
                    "artifact": m.artifact,
                    "source": m.source.name,
                    "size": m.size,
                    "source_size": m.source_size,
                    "check": dict(m.check),
                }
                for m in self.models
            },
            "configs": {
                self.ops_config.name: self.ops_config.stat().st_size,
                self.types_config.name: self.types_config.stat().st_size,
            },
            "domains": self.domains,
            "operator_count": len(self.operators),
            "operators": [op.to_dict() for op in self.operators],
            "build": self.build_command(),
            "runtime_version_note": (
                f"ORT-format models carry no compatibility guarantee across ONNX Runtime versions: build "
                f"the minimal runtime from the same release (v{self.onnxruntime_version}) or reconvert"
            ),
            "deterministic_bytes": False,
            "parity_note": (
                "on x86, ONNX Runtime applies its x86-only NCHWc layout to float convolutions when it loads "
                "a .onnx file; the portable .ort leaves it out, so against the .onnx run here logits can "
                "differ by rounding. 'check' compares with the .onnx run without NCHWc"
            ),
        }


def ort_file_name(onnx_name: str) -> str:
    """``model.int8.ort.onnx`` -> ``model.int8.ort``; ``model.fp32.onnx`` -> ``model.fp32.ort``."""
    stem = onnx_name.removesuffix(".onnx")
    return stem if stem.endswith(".ort") else f"{stem}.ort"


def parse_config(text: str) -> list[Operator]:
    """Operators of a reduced-build config (``domain;opset[,opset];Op{types},Op,...`` lines)."""
    decoder = json.JSONDecoder()
    out: list[Operator] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        domain, opsets, entries = line.split(";", 2)
        i = 0
        while i < len(entries):
            j = i
            while j < len(entries) and entries[j] not in "{,":
                j += 1
            name, types = entries[i:j].strip(), None
            if j < len(entries) and entries[j] == "{":
                types, j = decoder.raw_decode(entries, j)
            i = j + 1  # past the comma
            if name:
                out.extend(Operator(domain, int(v), name, types) for v in opsets.split(","))
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converter: it prints progress and logs at INFO through its own logger."""
    logger = logging.getLogger(_ORT_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _fit_batch(images: np.ndarray, dim: Any) -> np.ndarray:
    """``images`` resized to a fixed batch dimension (tiled or cut); unchanged for a dynamic one."""
    if not isinstance(dim, int) or dim < 1:
        return images
    reps = -(-dim // len(images))
    return np.concatenate([images] * reps)[:dim]


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """How closely ``candidate`` logits follow ``reference``: max difference, argmax agreement."""
    ref, cand = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
    return {
        "n": len(ref),
        "max_abs_diff": float(np.max(np.abs(ref - cand))) if ref.size else 0.0,
        "argmax_agreement": float(100.0 * np.mean(ref.argmax(-1) == cand.argmax(-1))) if ref.size else 100.0,
        "identical": bool(np.array_equal(ref, cand)),
    }


def _check(ort_path: Path, source: Path, images: np.ndarray, threads: int | None) -> dict[str, Any]:
    """Run the ``.ort`` model (no load-time optimization, as in a minimal build) and its source ONNX model
    with the same graph optimizations minus the x86-only NCHWc layout the conversion leaves out."""
    import onnxruntime as ort

    from levit_edge.backends.onnxruntime import session_options

    outputs = []
    for path, level, disabled in ((source, "all", ["NchwcTransformer"]), (ort_path, "disable", None)):
        session = ort.InferenceSession(
            str(path),
            sess_options=session_options(threads, level),
            providers=["CPUExecutionProvider"],
            disabled_optimizers=disabled,
        )
        inp = session.get_inputs()[0]
        outputs.append(session.run(None, {inp.name: _fit_batch(images, inp.shape[0])})[0])
    return {
        **compare_outputs(outputs[0], outputs[1]),
        "inputs": "parity images (seeded random)",
        "against": f"{source.name} without NCHWc",
    }


def _plain_header(text: str) -> str:
    """The generated header lists the models by their temporary paths: keep only the file names."""
    prefix = "# - "
    return "".join(
        f"{prefix}{Path(line[len(prefix) :].strip()).name}\n" if line.startswith(prefix) else line
        for line in text.splitlines(keepends=True)
    )


def _unwritten(name: str, out_dir: Path, what: str) -> UserError:
    """The one line for an ``.ort`` file ONNX Runtime could not write whole (it writes it from C++, with no
    errno to report): named as the run's file, as every other write failure is."""
    return write_error(out_dir / name, OSError(0, f"{what}; is the disk full or a file-size limit set?"))


def _require_loadable(path: Path, name: str, out_dir: Path) -> None:
    """ORT's converter writes the ``.ort`` file itself and may not notice a short write: reload it, so a
    torn file is a clear error here rather than a deliverable that does not load on the device."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception:  # ORT raises its own Fail/InvalidGraph types
        size = path.stat().st_size
        raise _unwritten(name, out_dir, f"ONNX Runtime cannot load the {size}-byte file it wrote") from None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


def convert_to_ort(
    sources: Mapping[str, Path],
    out_dir: Path,
    check_images: np.ndarray | None = None,
    threads: int | None = None,
) -> OrtFormatResult:
    """Convert ONNX models (``{artifact key: path}``) to ``.ort`` files plus both operator configs.

    Everything is produced in a temporary folder and written into ``out_dir`` atomically; the configs cover
    all the given models (one reduced build runs every one of them). With ``check_images``, each ``.ort``
    model is loaded and run against its source model.
    """
    import onnxruntime
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    if not sources:
        raise ValueError("convert_to_ort needs at least one model")
    with tempfile.TemporaryDirectory(prefix="levit-edge-ort-") as tmp:
        work = Path(tmp)
        converted: list[tuple[str, Path, Path, str]] = []  # artifact, source, produced .ort, final name
        per_model_ops: dict[str, set[tuple[str, int, str]]] = {}
        for artifact, source in sources.items():
            name = ort_file_name(source.name)
            stem = name.removesuffix(".ort")
            folder = work / stem
            folder.mkdir()
            _link_or_copy(source, folder / f"{stem}.onnx")
            produced = folder / "out" / name
            try:
                with _quiet():
                    convert_onnx_models_to_ort(
                        folder / f"{stem}.onnx",
                        output_dir=folder / "out",
                        optimization_styles=[OptimizationStyle[OPTIMIZATION_STYLE]],
                        target_platform=None,
                        enable_type_reduction=True,
                    )
            except Exception as exc:  # ORT's own Fail type; its C++ writer gives no errno
                if "Failed to save" not in str(exc):
                    raise
                raise _unwritten(name, out_dir, "ONNX Runtime failed to save it") from None
            if not produced.is_file():
                raise RuntimeError(f"onnxruntime's converter wrote no {name} for {source.name}")
            _require_loadable(produced, name, out_dir)
            own = parse_config((folder / "out" / f"{stem}.{TYPES_CONFIG}").read_text())
            per_model_ops[name] = {(o.domain, o.opset, o.op) for o in own}
            converted.append((artifact, source, produced, name))

        ort_files = [c[2] for c in converted]
        configs = {OPS_CONFIG: False, TYPES_CONFIG: True}
        texts: dict[str, str] = {}
        for config_name, typed in configs.items():
            with _quiet():
                create_config_from_models(ort_files, work / config_name, typed)
            texts[config_name] = _plain_header((work / config_name).read_text())

        models = []
        for artifact, source, produced, name in converted:
            write_atomic(out_dir / name, produced.read_bytes())
            check = _check(out_dir / name, source, check_images, threads) if check_images is not None else {}
            models.append(
                OrtFormatModel(
                    artifact=artifact,
                    path=out_dir / name,
                    source=source,
                    size=(out_dir / name).stat().st_size,
                    source_size=source.stat().st_size,
                    check=check,
                )
            )
    for config_name, text in texts.items():
        write_atomic(out_dir / config_name, text)
    operators = tuple(
        Operator(
            o.domain,
            o.opset,
            o.op,
            o.types,
            tuple(sorted(n for n, ops in per_model_ops.items() if (o.domain, o.opset, o.op) in ops)),
        )
        for o in parse_config(texts[TYPES_CONFIG])
    )
    return OrtFormatResult(
        models=tuple(models),
        ops_config=out_dir / OPS_CONFIG,
        types_config=out_dir / TYPES_CONFIG,
        operators=operators,
        onnxruntime_version=onnxruntime.__version__,
    )


def is_firmware_file(name: str) -> bool:
    """A firmware deliverable of a run: an ``.ort`` model or a reduced-build operator config."""
    return name.endswith(".ort") or (name.startswith("required_operators") and name.endswith(".config"))


def operators_of(models: Sequence[Path]) -> tuple[Operator, ...]:
    """The operators (with types) that ``.ort`` models need, read by onnxruntime's own config writer."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    with tempfile.TemporaryDirectory(prefix="levit-edge-ops-") as tmp:
        config = Path(tmp) / TYPES_CONFIG
        with _quiet():
            create_config_from_models(list(models), config, True)
        return tuple(parse_config(config.read_text()))


def ort_format_runners(result: OrtFormatResult, threads: int | None) -> dict[str, Runner]:
    """Runners for the ``.ort`` models, keyed by file name, as a minimal build runs them (no graph
    optimization at load: everything was applied at conversion). They ride along the validation pass as
    companions (levit_edge.validate.compare.evaluate), not as artifacts."""
    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner

    return {m.path.name: OnnxRuntimeRunner(m.path, threads, optimization="disable") for m in result.models}


def validation_parity(evaluation: Evaluation, result: OrtFormatResult) -> dict[str, Any]:
    """``{ort file name: parity}``: each ``.ort`` model's outputs on the validation images compared with
    its source model's."""
    parity: dict[str, Any] = {}
    for m in result.models:
        ort_logits = evaluation.companion_logits.get(m.path.name)
        if ort_logits is None or m.artifact not in evaluation.logits:
            continue
        parity[m.path.name] = {
            **compare_outputs(evaluation.logits[m.artifact], ort_logits),
            "against": m.source.name,
            "inputs": "validation images",
        }
        latencies = evaluation.companion_latencies_ms.get(m.path.name) or []
        if len(latencies) > 1:
            parity[m.path.name]["p50_ms"] = float(np.percentile(latencies[1:], 50))
    return parity
