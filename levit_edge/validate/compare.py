"""Run several backends over the same preprocessed batches and compare each with the reference."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from levit_edge.backends.base import Runner
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import ImageSource
from levit_edge.errors import UserError
from levit_edge.validate.metrics import Comparison, compare

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Evaluation:
    """Every runner's logits on the same samples, in the same order."""

    logits: dict[str, np.ndarray]
    labels: np.ndarray | None
    names: tuple[str, ...]
    class_names: tuple[str, ...] | None
    latencies_ms: dict[str, list[float]]
    batch_size: int
    skipped: tuple[tuple[str, str], ...] = ()
    # runners that ride along on the same batches without being artifacts (the .ort parity checks)
    companion_logits: dict[str, np.ndarray] = field(default_factory=dict)
    companion_latencies_ms: dict[str, list[float]] = field(default_factory=dict)

    def comparisons(self, reference: str) -> dict[str, Comparison]:
        """Each non-reference artifact compared with ``reference``."""
        ref = self.logits[reference]
        return {
            name: compare(name, reference, ref, out, self.labels, self.class_names)
            for name, out in self.logits.items()
            if name != reference
        }


def evaluate(
    runners: Mapping[str, Runner],
    source: ImageSource,
    preprocess: PreprocessConfig,
    batch_size: int = 32,
    progress: Progress | None = None,
    companions: Mapping[str, Runner] | None = None,
) -> Evaluation:
    """Decode and preprocess each batch once, then run it through every runner (and every companion:
    a runner checked against an artifact rather than compared with FP32, kept apart in the result).

    Images stream (about three batches alive at a time); each runner's logits go straight into one array
    of ``len(source)`` rows, allocated at the first batch, so the whole set's logits exist once (no list of
    chunks concatenated into a second copy at the end).
    """
    outputs: dict[str, np.ndarray] = {}
    labels: list[np.ndarray] = []
    names: list[str] = []
    total, done = len(source), 0
    companions = dict(companions or {})
    if set(companions) & set(runners):
        raise ValueError(f"companion names collide with artifacts: {sorted(set(companions) & set(runners))}")
    with contextlib.ExitStack() as stack:
        active = {name: stack.enter_context(r) for name, r in {**runners, **companions}.items()}
        for batch in source.batches(preprocess, batch_size):
            n = len(batch.names)
            for name, runner in active.items():
                out = runner.infer(batch.images)
                if name not in outputs:
                    outputs[name] = np.empty((total, *out.shape[1:]), dtype=out.dtype)
                outputs[name][done : done + n] = out
            if batch.labels is not None:
                labels.append(batch.labels)
            names.extend(batch.names)
            done += n
            if progress:
                progress(done, total)
    if done == 0:
        raise UserError("the validation set yielded no readable images")
    # unreadable images skipped with skip_bad leave rows unused at the end: keep only the filled ones
    logits = {name: out[:done] for name, out in outputs.items()}
    return Evaluation(
        logits={k: v for k, v in logits.items() if k in runners},
        labels=np.concatenate(labels) if source.labelled and labels else None,
        names=tuple(names),
        class_names=source.class_names,
        latencies_ms={name: list(r.latencies_ms) for name, r in runners.items()},
        batch_size=batch_size,
        skipped=tuple(source.skipped),
        companion_logits={k: v for k, v in logits.items() if k in companions},
        companion_latencies_ms={name: list(r.latencies_ms) for name, r in companions.items()},
    )
