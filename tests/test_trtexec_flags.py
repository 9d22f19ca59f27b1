"""The trtexec line levit-edge hands out runs on TensorRT 10.3 (JetPack 6) and on 11.x.

Each flag of every line :func:`trtexec_command` can produce is held against the options trtexec's own
parser reads, transcribed from NVIDIA/TensorRT ``samples/common/sampleOptions.cpp`` (the names passed to
``getAndDelOption*`` and ``getShapesBuild`` in ``BuildOptions/InferenceOptions/...::parse``) at:

* v10.3.0  (commit c5b9de37f7ef9034e2efc621c664145c7c12436e), the TensorRT of JetPack 6.1/6.2;
* v11.0    (commit 771d8efdf7f9d7b1eeb0864eb05d4dd8a7755bb5);
* v11.1    (commit 82d1dca801c8318a5605399d5240780d0679e4e1).

Values are checked against what those parsers accept: ``--hardwareCompatibilityLevel`` takes
``none``/``ampere+`` on 10.3 (``sameComputeCapability`` from 10.9; 11.0 and 11.1 take all three,
compared lower-cased), ``--profilingVerbosity`` ``layer_names_only``/``detailed``/``none``, and
``--memPoolSize`` pools ``workspace``, ``dlaSRAM``, ``dlaLocalDRAM``, ``dlaGlobalDRAM``,
``tacticSharedMem`` with an optional unit suffix (``M`` = MiB). 11.x dropped the precision flags
(``--int8``, ``--fp16``, ``--best``, ``--calib``): the line must carry none of them.
"""

from __future__ import annotations

import itertools
import shlex
import warnings
from pathlib import Path

import pytest

from levit_edge.backends.trt_build import (
    HARDWARE_COMPATIBILITY,
    TRTEXEC_LEVEL_SINCE,
    EngineSettings,
    trtexec_command,
)


def _names(text: str) -> frozenset[str]:
    """Option names as transcribed: whitespace-separated, without the leading ``--``."""
    return frozenset(text.split())


TRTEXEC_OPTIONS: dict[str, frozenset[str]] = {
    "10.3": _names(
        """
    allocationStrategy allowGPUFallback allowWeightStreaming avgRuns avgTiming best buildDLAStandalone
    builderOptimizationLevel calib calibProfile consistency device directIO dumpLayerInfo
    dumpOptimizationProfile dumpOutput dumpProfile dumpRawBindingsToFile dumpRefit duration
    dynamicPlugins errorOnTimingCacheMiss excludeLeanRuntime exportLayerInfo exportOutput exportProfile
    exportTimes exposeDMA getPlanVersionOnly hardwareCompatibilityLevel help idleTime
    ignoreParsedPluginLibs infStreams iterations leanDLLPath loadEngine loadInputs maxAuxStreams
    maxShapes maxShapesCalib memPoolSize minShapes minShapesCalib noBuilderCache noCompilationCache
    noDataTransfers onnx optShapes optShapesCalib percentile persistentCacheRatio pi pluginInstanceNorm
    plugins precisionConstraints preview profilingVerbosity refit restricted runtimePlatform safe
    saveDebugTensors saveEngine separateProfileRun serialized setPluginsToSerialize skipInference
    sleepTime sparsity staticPlugins std streams stripAllWeights stripWeights stronglyTyped
    tacticSources tempdir threads timeDeserialize timeRefit timingCacheFile useCudaGraph useDLACore
    useManagedMemory useProfile useRuntime useSpinWait vc verbose versionCompatible warmUp
    weightStreamingBudget weightless
        """
    ),
    "11.0": _names(
        """
    adjustForDLA allocationStrategy allowGPUFallback allowWeightStreaming asyncFileReader avgRuns
    avgTiming buildDLAStandalone builderOptimizationLevel consistency cpuOnly device directIO
    distributiveIndependence dumpKernelText dumpLayerInfo dumpOptimizationProfile dumpOutput
    dumpProfile dumpRawBindingsToFile dumpRefit duration dynamicPlugins enablePluginOverride
    errorOnTimingCacheMiss excludeLeanRuntime exportLayerInfo exportOutput exportProfile exportTimes
    exposeDMA getPlanVersionOnly hardwareCompatibilityLevel help idleTime ignoreParsedPluginLibs
    includeDataTransfers infStreams iterations leanDLLPath loadEngine loadInputs
    markUnfusedTensorsAsDebugTensors maxAuxStreams maxShapes maxTactics memPoolSize minShapes
    monitorMemory noBuilderCache noCompilationCache noCudaGraph noDataTransfers noSpinWait onnx
    optShapes percentile persistentCacheRatio pi pluginInstanceNorm plugins preview profilingVerbosity
    refit refitFromOnnx remoteAutoTuningConfig reportCapabilityDLA runtimePlatform safe safetyPlugins
    saveAllDebugTensors saveDebugTensors saveEngine separateProfileRun serialized setPluginsToSerialize
    skipInference sleepTime sparsity staticPlugins std streams stripAllWeights stripWeights
    stronglyTyped tacticSources tempdir threads tilingOptimizationLevel timeDeserialize timeRefit
    timingCacheFile useCudaGraph useDLACore useManagedMemory useProfile useRuntime useSpinWait vc
    verbose versionCompatible warmUp weightStreamingBudget
        """
    ),
    "11.1": _names(
        """
    accuracyAlgorithm accuracyThreshold adjustForDLA allocationStrategy allowGPUFallback
    allowWeightStreaming asyncFileReader atol avgRuns avgTiming buildDLAStandalone
    builderOptimizationLevel consistency continue cpuOnly device directIO distributiveIndependence
    dryRun dumpKernelText dumpLayerInfo dumpOptimizationProfile dumpOutput dumpProfile
    dumpRawBindingsToFile dumpRefit duration dynamicPlugins enablePluginOverride errorOnTimingCacheMiss
    excludeLeanRuntime exportLayerInfo exportOutput exportProfile exportTimes exposeDMA
    getPlanVersionOnly hardwareCompatibilityLevel help helpBuildRoute idleTime ignoreParsedPluginLibs
    includeDataTransfers infStreams iterations leanDLLPath loadEngine loadInputs loadRefOutputs
    markUnfusedTensorsAsDebugTensors maxAuxStreams maxShapes maxTactics memPoolSize minShapes
    monitorMemory noBuilderCache noCompilationCache noCudaGraph noDataTransfers noSpinWait onnx
    optShapes percentile persistentCacheRatio pi pluginInstanceNorm plugins preview profilingVerbosity
    refPair refit refitFromOnnx remoteAutoTuningConfig reportCapabilityDLA rtol runtimePlatform safe
    safetyPlugins saveAllDebugTensors saveAllEngines saveDebugTensors saveEngine separateProfileRun
    serialized setBuildRoute setPluginsToSerialize skipInference sleepTime sparsity staticPlugins std
    streams stripAllWeights stripWeights stronglyTyped tacticSources tempdir threads
    tilingOptimizationLevel timeDeserialize timeRefit timingCacheFile tuneBuildRouteFile
    tuneBuildRoutes tuningCacheFile tuningResultFile tuningSearch tuningTimeOut useCudaGraph useDLACore
    useManagedMemory useProfile useRuntime useSpinWait vc verbose versionCompatible warmUp
    weightStreamingBudget
        """
    ),
}
HARDWARE_LEVELS = {
    "10.3": {"none", "ampere+"},
    "11.0": {"none", "ampere+", "samecomputecapability"},
    "11.1": {"none", "ampere+", "samecomputecapability"},
}
PROFILING_VERBOSITY = {"layer_names_only", "detailed", "none"}
MEMORY_POOLS = {"workspace", "dlaSRAM", "dlaLocalDRAM", "dlaGlobalDRAM", "tacticSharedMem"}
REMOVED_IN_11 = {"int8", "fp16", "best", "calib", "precisionConstraints"}


def _version(key: str) -> tuple[int, int]:
    major, minor = key.split(".")
    return int(major), int(minor)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("trtexec")
    out = {}
    for kind, axes in (("dynamic", {"images": {0: "batch"}, "logits": {0: "batch"}}), ("fixed", None)):
        path = root / f"{kind}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                torch.nn.Conv2d(3, 4, 3),
                (torch.zeros(2, 3, 8, 8),),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes=axes,
            )
        out[kind] = path
    return out


def _lines(models: dict[str, Path], run: Path) -> list[tuple[EngineSettings, list[str]]]:
    out = []
    for kind, vc, level, opt, cache in itertools.product(
        models, (False, True), HARDWARE_COMPATIBILITY, (None, 0, 5), (None, run / "timing.cache")
    ):
        settings = EngineSettings(
            onnx_path=models[kind],
            plan_path=run / "model.int8.plan",
            timing_cache_path=cache,
            max_batch=8,
            version_compatible=vc,
            hardware_compatibility=level,
            builder_optimization_level=opt,
        )
        out.append((settings, shlex.split(trtexec_command(settings, base=run))))
    return out


def _flags(args: list[str]) -> dict[str, str]:
    assert args[0] == "trtexec"
    flags = {}
    for arg in args[1:]:
        assert arg.startswith("--"), arg
        name, _, value = arg[2:].partition("=")
        assert name not in flags, f"{name} given twice"
        flags[name] = value
    return flags


@pytest.mark.parametrize("version", sorted(TRTEXEC_OPTIONS))
def test_every_flag_is_one_trtexec_reads(models: dict[str, Path], tmp_path: Path, version: str) -> None:
    for settings, args in _lines(models, tmp_path):
        flags = _flags(args)
        unknown = set(flags) - TRTEXEC_OPTIONS[version]
        assert not unknown, f"trtexec {version} rejects {sorted(unknown)}: {args}"
        assert not set(flags) & REMOVED_IN_11
        level = flags.get("hardwareCompatibilityLevel")
        if level is not None:
            since = TRTEXEC_LEVEL_SINCE[settings.hardware_compatibility]
            accepted = level.lower() in HARDWARE_LEVELS[version]
            assert accepted == (_version(version) >= since), (version, level, since)
        assert flags["profilingVerbosity"] in PROFILING_VERBOSITY
        pool, _, size = flags["memPoolSize"].partition(":")
        assert pool in MEMORY_POOLS and size[:-1].isdigit() and size[-1] == "M"
        assert "stronglyTyped" in flags and "skipInference" in flags
        assert (settings.hardware_compatibility == "none") == (level is None)


def test_default_line_runs_on_every_version(models: dict[str, Path], tmp_path: Path) -> None:
    """What export hands out by default (no hardware level, dynamic batch) needs nothing newer than 10.3."""
    settings = EngineSettings(onnx_path=models["dynamic"], plan_path=tmp_path / "model.int8.plan")
    flags = _flags(shlex.split(trtexec_command(settings, base=tmp_path)))
    for version, options in TRTEXEC_OPTIONS.items():
        assert set(flags) <= options, version
    assert flags["minShapes"] == "images:1x3x8x8" and flags["maxShapes"] == "images:8x3x8x8"


def test_levels_since_match_the_transcribed_parsers() -> None:
    for level, since in TRTEXEC_LEVEL_SINCE.items():
        value = HARDWARE_COMPATIBILITY[level][1].lower()
        for version, accepted in HARDWARE_LEVELS.items():
            assert (value in accepted) == (_version(version) >= since), (level, version)
