"""Accuracy and agreement of model outputs: pure numpy over logits, returning result objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Accuracy:
    """Top-k accuracy in percent over ``n`` labelled samples."""

    top1: float
    top5: float
    n: int


@dataclass(frozen=True)
class ClassChange:
    """Per-class top-1 of the reference and the candidate, in percent."""

    name: str
    n: int
    reference: float
    candidate: float

    @property
    def delta(self) -> float:
        return self.candidate - self.reference


@dataclass(frozen=True)
class Comparison:
    """A candidate's outputs measured against the reference's on the same inputs."""

    artifact: str
    reference: str
    n: int
    accuracy: Accuracy | None
    reference_accuracy: Accuracy | None
    agreement: float  # percent of samples with the same top-1 class
    kl: float  # mean KL(reference || candidate) of the softmax distributions, nats
    cosine: float  # mean cosine similarity of the logit vectors
    per_class: tuple[ClassChange, ...] = ()
    confusion_changes: tuple[
        tuple[str, str, int], ...
    ] = ()  # (true, predicted-by-candidate, count) new errors

    @property
    def drop(self) -> float:
        """Top-1 points lost against the reference; without labels, disagreement in points."""
        if self.accuracy is not None and self.reference_accuracy is not None:
            return self.reference_accuracy.top1 - self.accuracy.top1
        return 100.0 - self.agreement

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "reference": self.reference,
            "n": self.n,
            "drop": self.drop,
            "agreement": self.agreement,
            "kl": self.kl,
            "cosine": self.cosine,
        }


def topk_accuracy(logits: np.ndarray, labels: np.ndarray) -> Accuracy:
    """Top-1 and top-5 (top-C when there are fewer than 5 classes) accuracy in percent."""
    if len(labels) == 0:
        return Accuracy(0.0, 0.0, 0)
    k = min(5, logits.shape[1])
    top = np.concatenate(
        [np.argsort(-logits[rows], axis=1, kind="stable")[:, :k] for rows in _chunks(len(logits))]
    )
    top1 = float(np.mean(top[:, 0] == labels) * 100.0)
    top5 = float(np.mean((top == labels[:, None]).any(axis=1)) * 100.0)
    return Accuracy(top1, top5, len(labels))


# Row-wise metrics run over chunks of rows: each row's value is computed exactly as over the whole array,
# but the float64 temporaries no longer grow with N x classes (50 000 x 1000 logits: 400 MB each).
_CHUNK_ROWS = 4096


def _chunks(n: int) -> list[slice]:
    return [slice(start, min(start + _CHUNK_ROWS, n)) for start in range(0, n, _CHUNK_ROWS)] or [slice(0, 0)]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def mean_kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean KL divergence KL(p_ref || p_cand) of the softmax distributions, in nats."""

    def rows_kl(rows: slice) -> np.ndarray:
        lp, lq = _log_softmax(reference[rows]), _log_softmax(candidate[rows])
        return np.asarray(np.sum(np.exp(lp) * (lp - lq), axis=1))

    return float(np.mean(np.concatenate([rows_kl(rows) for rows in _chunks(len(reference))])))


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean cosine similarity between corresponding logit vectors."""

    def rows_cosine(rows: slice) -> np.ndarray:
        a, b = reference[rows].astype(np.float64), candidate[rows].astype(np.float64)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return np.asarray(np.where(den > 0, np.sum(a * b, axis=1) / np.where(den > 0, den, 1.0), 1.0))

    return float(np.mean(np.concatenate([rows_cosine(rows) for rows in _chunks(len(reference))])))


def compare(
    artifact: str,
    reference_name: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray | None,
    class_names: tuple[str, ...] | None = None,
) -> Comparison:
    """Compare a candidate's logits with the reference's on the same samples (labels optional)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    ref_top, cand_top = reference.argmax(axis=1), candidate.argmax(axis=1)
    n = int(reference.shape[0])
    agreement = float(np.mean(ref_top == cand_top) * 100.0) if n else 0.0
    acc = ref_acc = None
    per_class: tuple[ClassChange, ...] = ()
    confusion: tuple[tuple[str, str, int], ...] = ()
    if labels is not None:
        acc, ref_acc = topk_accuracy(candidate, labels), topk_accuracy(reference, labels)
        names = class_names or tuple(str(i) for i in range(reference.shape[1]))
        per_class = tuple(
            ClassChange(
                names[c] if c < len(names) else str(c),
                int((labels == c).sum()),
                float(np.mean(ref_top[labels == c] == c) * 100.0),
                float(np.mean(cand_top[labels == c] == c) * 100.0),
            )
            for c in np.unique(labels)
        )
        new_errors = (ref_top == labels) & (cand_top != labels)
        pairs: dict[tuple[str, str], int] = {}
        for t, p in zip(labels[new_errors], cand_top[new_errors], strict=True):
            key = (_name(names, int(t)), _name(names, int(p)))
            pairs[key] = pairs.get(key, 0) + 1
        confusion = tuple(
            sorted(((t, p, c) for (t, p), c in pairs.items()), key=lambda x: (-x[2], x[0], x[1]))
        )
    return Comparison(
        artifact=artifact,
        reference=reference_name,
        n=n,
        accuracy=acc,
        reference_accuracy=ref_acc,
        agreement=agreement,
        kl=mean_kl(reference, candidate) if n else 0.0,
        cosine=mean_cosine(reference, candidate) if n else 1.0,
        per_class=per_class,
        confusion_changes=confusion,
    )


def _name(names: tuple[str, ...], i: int) -> str:
    return names[i] if i < len(names) else str(i)
