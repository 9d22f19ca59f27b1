"""``levit-edge debug RUN``: rank every quantized layer of a finished run's INT8 models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from levit_edge.data.open_source import open_source
from levit_edge.data.sources import DataSpec
from levit_edge.errors import UserError
from levit_edge.quant.profiles import PROFILES
from levit_edge.quant.sensitivity import (
    RANK_IMAGES,
    SQNR_SAMPLES,
    Progress,
    Sensitivity,
    load_images,
    measure,
    run_logits,
)
from levit_edge.report import build
from levit_edge.report.write import write_reports
from levit_edge.runs.finished import FinishedRun


def debug_run(
    run_dir: Path,
    val: Path | None = None,
    calib: Path | None = None,
    samples: int = SQNR_SAMPLES,
    rank_images: int = RANK_IMAGES,
    threads: int | None = None,
    progress: Callable[[str], Progress | None] | None = None,
    *,
    save: bool = False,
) -> list[Sensitivity]:
    """Sensitivity of every INT8 model of a run; validation and calibration images default to the ones
    recorded in its manifest. With ``save`` the ranking goes into report.json (``sensitivity``,
    ``sensitivity_info``) as one all-or-nothing rewrite, after checking the run against its manifest."""
    if samples < 0 or rank_images < 1:
        raise UserError("--samples must be >= 0 and --rank-images >= 1")
    run = FinishedRun.open(run_dir, "save the ranking into" if save else None, hint="; pass --no-save")
    artifacts = run.onnx_models(int8_only=True)
    if not artifacts:
        raise UserError(f"{run_dir} has no INT8 ONNX model to analyse (export with --int8)")
    options = run.options()

    def spec(given: Path | None, key: str, size: int) -> DataSpec:
        recorded = options.get(key) or {}
        path = given or (Path(recorded["path"]) if recorded.get("path") else None)
        if path is None or not path.exists():
            raise UserError(
                f"no {key} images: the run recorded {recorded.get('path') or 'none'}; "
                f"pass --{key} DIR|LIST|NPY"
            )
        root = recorded.get("data_root") if given is None else None
        return DataSpec(path, Path(root) if root else None, size, int(recorded.get("seed") or 0))

    preprocess = run.preprocess()  # the manifest's, every model agreeing
    val_source = open_source(spec(val, "val", rank_images))
    rank = load_images(val_source.batches(preprocess, 32))
    rank_batches = [rank[i : i + 32] for i in range(0, len(rank), 32)]
    calib_images = (
        load_images(open_source(spec(calib, "calib", samples)).batches(preprocess, 32), samples)
        if samples > 0
        else np.zeros((0, *preprocess.input_size), np.float32)
    )
    fp32_logits = run_logits(run.fp32, rank_batches, threads)
    results = []
    for key, path in artifacts.items():
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        profile = PROFILES.get(meta.get("levit_edge.quant_profile", ""))
        if profile is None:
            raise UserError(
                f"{path.name}: no levit_edge.quant_profile metadata (not a levit-edge INT8 model)"
            )
        results.append(
            measure(
                key,
                profile,
                run.fp32,
                path,
                calib_images,
                rank_batches,
                fp32_logits,
                threads,
                progress(f"sensitivity {key}") if progress else None,
            )
        )
    if save:
        report = run.report()
        build.merge(
            report,
            build.sections(
                {
                    "sensitivity": [row for r in results for row in r.rows()],
                    "sensitivity_info": [r.summary() for r in results],
                }
            ),
        )
        run.rewrite(lambda folder: write_reports(folder, report))
    return results
