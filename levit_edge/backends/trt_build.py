"""TensorRT engine builds: settings, the build itself and the equivalent trtexec command line.

Engines are built from strongly typed networks with explicit quantization (Q/DQ nodes in the ONNX
file): no precision builder flags and no INT8 calibrator, the one path that works from TensorRT
10.3 (JetPack 6) through 11.x, where weak typing and calibrators are removed. ``tensorrt`` is
imported only inside functions; Python 3.10 syntax and standard library only at module level.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from levit_edge.backends.trt_cuda import gpu_name
from levit_edge.backends.trt_env import dims, joined, make_logger, require_tensorrt, version_tuple
from levit_edge.errors import EngineUnavailable, UserError
from levit_edge.io import write_atomic

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "HARDWARE_COMPATIBILITY",
    "TRTEXEC_LEVEL_SINCE",
    "TRTEXEC_LOCATIONS",
    "EngineBuildResult",
    "EngineSettings",
    "build_engine",
    "onnx_input_shape",
    "trtexec_command",
]

#: ``hardware_compatibility`` values -> (``trt.HardwareCompatibilityLevel`` member, trtexec value).
HARDWARE_COMPATIBILITY: dict[str, tuple[str, str]] = {
    "none": ("NONE", "none"),
    "ampere_plus": ("AMPERE_PLUS", "ampere+"),
    "same_compute_capability": ("SAME_COMPUTE_CAPABILITY", "sameComputeCapability"),
}

_MAX_OPTIMIZATION_LEVEL = 5  # builder optimization levels are 0..5 (TensorRT default 3)


@dataclass(frozen=True)
class EngineSettings:
    """What ``build-engine`` builds: input, output, batch range and builder options."""

    onnx_path: Path
    plan_path: Path
    timing_cache_path: Path | None = None
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mb: int = 1024
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    builder_optimization_level: int | None = None
    input_name: str = "images"

    def __post_init__(self) -> None:
        for name in ("onnx_path", "plan_path", "timing_cache_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserError(
                f"batch sizes must satisfy min <= opt <= max, got min={self.min_batch} "
                f"opt={self.opt_batch} max={self.max_batch}"
            )
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            choices = ", ".join(HARDWARE_COMPATIBILITY)
            raise UserError(
                f"hardware_compatibility must be one of {choices}; got {self.hardware_compatibility!r}"
            )
        level = self.builder_optimization_level
        if level is not None and (
            isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= _MAX_OPTIMIZATION_LEVEL
        ):
            raise UserError(f"builder_optimization_level must be 0..{_MAX_OPTIMIZATION_LEVEL}, got {level!r}")
        if not isinstance(self.version_compatible, bool):
            raise UserError(f"version_compatible must be true or false, got {self.version_compatible!r}")
        if not self.input_name:
            raise UserError("input_name must not be empty")
        if self.onnx_path.resolve() == self.plan_path.resolve():
            raise UserError(f"the plan would overwrite the ONNX model: {self.plan_path}")


@dataclass(frozen=True)
class EngineBuildResult:
    """What :func:`build_engine` produced and on what."""

    plan_path: Path
    seconds: float
    tensorrt_version: str
    gpu_name: str
    batch_range: tuple[int, int, int]  # (min, opt, max); all equal for a fixed-batch model
    dynamic_batch: bool
    timing_cache_path: Path | None
    version_compatible: bool
    hardware_compatibility: str
    num_layers: int | None = None
    layer_info_json: str | None = None  # the engine inspector's JSON (detailed verbosity)
    warnings: tuple[str, ...] = field(default_factory=tuple)  # TensorRT's logged warnings


def _network_flags() -> int:
    """Strongly typed network: the creation flag on 10.x; always on (flag ignored) on 11.x."""
    import tensorrt as trt

    if version_tuple(trt.__version__)[:1] >= (11,):
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise EngineUnavailable(f"TensorRT {trt.__version__} cannot create strongly typed networks")
    return 1 << int(flag)


def _parser_error_text(parser: trt.OnnxParser) -> str:
    parts: list[str] = []
    for index in range(parser.num_errors):
        error: trt.ParserError = parser.get_error(index)  # the stubs leave the return type open
        where = ""
        node_name = str(error.node_name() or "")
        node_op = str(error.node_operator() or "")
        if node_name or node_op:
            where = f"node '{node_name}' ({node_op}): " if node_op else f"node '{node_name}': "
        elif int(error.node()) >= 0:
            where = f"node #{int(error.node())}: "
        parts.append(where + " ".join(str(error.desc()).split()))
    return "; ".join(parts) if parts else "no parser errors reported"


def _add_batch_profile(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    config: trt.IBuilderConfig,
    settings: EngineSettings,
) -> tuple[tuple[int, int, int], bool]:
    """Add an optimization profile over the batch range when dim 0 is dynamic."""
    import tensorrt as trt

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    names = [tensor.name for tensor in inputs]
    if settings.input_name not in names:
        raise UserError(
            f"{settings.onnx_path} has no input named '{settings.input_name}' (inputs: {', '.join(names)})"
        )
    profile = builder.create_optimization_profile()
    dynamic = False
    for tensor in inputs:
        shape = dims(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise UserError(f"input '{tensor.name}' has shape {shape}: only the batch dim may be dynamic")
        if shape and shape[0] < 0:
            dynamic = True
            rest = shape[1:]
            profile.set_shape(
                tensor.name,
                trt.Dims([settings.min_batch, *rest]),
                trt.Dims([settings.opt_batch, *rest]),
                trt.Dims([settings.max_batch, *rest]),
            )
    if dynamic and config.add_optimization_profile(profile) < 0:
        raise UserError(f"invalid optimization profile for batch {settings.min_batch}..{settings.max_batch}")
    main = dims(inputs[names.index(settings.input_name)].shape)
    if main and main[0] >= 0:
        return (main[0], main[0], main[0]), dynamic
    return (settings.min_batch, settings.opt_batch, settings.max_batch), dynamic


def _load_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> bool:
    """Use the timing cache at ``path`` (or a fresh one); False when TensorRT gave none to use."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)  # None for a cache it cannot read
    if cache is not None and config.set_timing_cache(cache, False):
        return True
    # A cache from another GPU or TensorRT version is rejected: start a fresh one.
    fresh = config.create_timing_cache(b"")
    return fresh is not None and bool(config.set_timing_cache(fresh, False))


def build_engine(settings: EngineSettings) -> EngineBuildResult:
    """Build and save a TensorRT engine (plan) from a Q/DQ ONNX model; GPU hosts only.

    Raises EngineUnavailable where TensorRT or a GPU is missing, and UserError when TensorRT
    rejects the model (every parser error, with node names, in one line).
    """
    require_tensorrt(runner=False)
    import tensorrt as trt

    if not settings.onnx_path.is_file():
        raise UserError(f"ONNX model not found: {settings.onnx_path}")
    logger, errors, warnings = make_logger()
    try:
        builder = trt.Builder(logger)
    except TypeError:  # the bindings raise TypeError when the builder cannot be created (no usable GPU)
        raise EngineUnavailable(f"TensorRT could not create a builder: {joined(errors)}") from None
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(settings.onnx_path)):
        raise UserError(f"TensorRT cannot parse {settings.onnx_path}: {_parser_error_text(parser)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer info for the report
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if settings.hardware_compatibility != "none":
        member, _ = HARDWARE_COMPATIBILITY[settings.hardware_compatibility]
        level = getattr(trt.HardwareCompatibilityLevel, member, None)
        if level is None:
            raise UserError(
                f"hardware compatibility '{settings.hardware_compatibility}' is not available in "
                f"TensorRT {trt.__version__}"
            )
        config.hardware_compatibility_level = level
    if settings.builder_optimization_level is not None:
        config.builder_optimization_level = settings.builder_optimization_level
    batch_range, dynamic = _add_batch_profile(builder, network, config, settings)
    cached = _load_timing_cache(config, settings.timing_cache_path)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise UserError(f"TensorRT could not build an engine from {settings.onnx_path}: {joined(errors)}")
    write_atomic(settings.plan_path, bytes(memoryview(plan)))
    timing_cache = config.get_timing_cache() if cached else None
    if settings.timing_cache_path is not None and timing_cache is not None:
        write_atomic(settings.timing_cache_path, bytes(memoryview(timing_cache.serialize())))

    num_layers, layer_info = _inspect(bytes(memoryview(plan)), settings.version_compatible, logger)
    return EngineBuildResult(
        plan_path=settings.plan_path,
        seconds=seconds,
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu_name(),
        batch_range=batch_range,
        dynamic_batch=dynamic,
        timing_cache_path=settings.timing_cache_path if timing_cache is not None else None,
        version_compatible=settings.version_compatible,
        hardware_compatibility=settings.hardware_compatibility,
        num_layers=num_layers,
        layer_info_json=layer_info,
        warnings=tuple(warnings),
    )


def _inspect(plan: bytes, version_compatible: bool, logger: trt.ILogger) -> tuple[int, str]:
    """Layer count and the engine inspector's JSON for a freshly built plan."""
    import tensorrt as trt

    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True  # the plan embeds the lean runtime
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError("TensorRT built a plan it cannot load back")
    inspector = engine.create_engine_inspector()
    return int(engine.num_layers), str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def onnx_input_shape(onnx_path: Path, input_name: str = "images") -> list[int | None]:
    """The declared shape of an ONNX graph input; None for a dynamic (named or missing) dim."""
    import onnx

    if not onnx_path.is_file():
        raise UserError(f"ONNX model not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserError(f"{onnx_path} is not a readable ONNX model: {exc}") from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in initializers}
    if input_name not in inputs:
        raise UserError(f"{onnx_path} has no input named '{input_name}' (inputs: {', '.join(inputs)})")
    tensor_type = inputs[input_name].type.tensor_type
    if not tensor_type.HasField("shape"):
        raise UserError(f"input '{input_name}' of {onnx_path} has no declared shape")
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


#: Where trtexec is installed: JetPack (and NVIDIA's .deb packages) put it outside PATH; NGC TensorRT
#: containers have it on PATH; the pip wheels ship none.
TRTEXEC_LOCATIONS = (
    "/usr/src/tensorrt/bin/trtexec (JetPack / Jetson, TensorRT .deb packages)",
    "on PATH in NVIDIA's TensorRT containers (nvcr.io/nvidia/tensorrt, l4t-tensorrt)",
    "bin/trtexec of a TensorRT tar package; the pip wheels ship no trtexec",
)
#: hardware compatibility levels -> oldest trtexec that accepts them (samples/common/sampleOptions.cpp).
TRTEXEC_LEVEL_SINCE: dict[str, tuple[int, int]] = {
    "none": (10, 0),
    "ampere_plus": (10, 0),
    "same_compute_capability": (10, 9),
}


def _shown(path: Path, base: Path | None) -> str:
    """``path`` relative to ``base`` when inside it (a run folder that is copied elsewhere), else as is."""
    if base is not None:
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            pass
    return str(path)


def trtexec_command(settings: EngineSettings, base: Path | None = None, trtexec: str = "trtexec") -> str:
    """The trtexec command line that builds the same engine as :func:`build_engine`.

    Only flags that trtexec accepts on TensorRT 10.3 (JetPack 6) and 11.x alike, except
    ``same_compute_capability`` (10.9+, :data:`TRTEXEC_LEVEL_SINCE`). Files inside ``base`` are named
    relative to it: run the line from inside that folder. ``--skipInference``: build only, no benchmark.
    """
    shape = onnx_input_shape(settings.onnx_path, settings.input_name)
    if any(d is None for d in shape[1:]):
        raise UserError(f"input '{settings.input_name}' has shape {shape}: only the batch dim may be dynamic")
    args = [
        trtexec,
        f"--onnx={_shown(settings.onnx_path, base)}",
        f"--saveEngine={_shown(settings.plan_path, base)}",
        "--stronglyTyped",  # needed on 10.x; the default (and a no-op) on 11.x
    ]
    if shape and shape[0] is None:
        rest = "x".join(str(d) for d in shape[1:])
        for flag, batch in (
            ("--minShapes", settings.min_batch),
            ("--optShapes", settings.opt_batch),
            ("--maxShapes", settings.max_batch),
        ):
            args.append(f"{flag}={settings.input_name}:{batch}x{rest}")
    args.append(f"--memPoolSize=workspace:{settings.workspace_mb}M")
    if settings.timing_cache_path is not None:
        args.append(f"--timingCacheFile={_shown(settings.timing_cache_path, base)}")
    if settings.version_compatible:
        args.append("--versionCompatible")
    if settings.hardware_compatibility != "none":
        args.append(
            f"--hardwareCompatibilityLevel={HARDWARE_COMPATIBILITY[settings.hardware_compatibility][1]}"
        )
    if settings.builder_optimization_level is not None:
        args.append(f"--builderOptimizationLevel={settings.builder_optimization_level}")
    args += ["--profilingVerbosity=detailed", "--skipInference"]
    return shlex.join(args)
