"""Unit tests of the accuracy metrics and the gate, on logits whose answers are known by construction.

Every expected figure here is derived by hand from how the inputs were built (ranks placed on purpose,
distributions with a closed-form KL), never read back from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from levit_edge.artifacts import Status
from levit_edge.errors import UserError
from levit_edge.settings import GateSettings
from levit_edge.validate.gate import apply_gate
from levit_edge.validate.metrics import Accuracy, Comparison, compare, mean_cosine, mean_kl, topk_accuracy

PASSED, FAILED = Status.PASSED, Status.FAILED


def ranked_logits(ranks: list[int], labels: list[int], classes: int) -> np.ndarray:
    """Logits where sample i's true class ``labels[i]`` has rank ``ranks[i]`` (0 = the argmax)."""
    out = np.zeros((len(ranks), classes), dtype=np.float32)
    for i, (rank, label) in enumerate(zip(ranks, labels, strict=True)):
        others = [c for c in range(classes) if c != label]
        order = [*others[:rank], label, *others[rank:]]  # classes by decreasing score
        for position, c in enumerate(order):
            out[i, c] = classes - position
    return out


def test_top1_and_top5_count_the_rank_of_the_true_class() -> None:
    ranks = [0, 0, 1, 4, 5, 9, 0, 3]  # top-1 hits: 3 of 8; top-5 hits (rank < 5): 6 of 8
    labels = [0, 3, 5, 7, 2, 9, 1, 4]
    acc = topk_accuracy(ranked_logits(ranks, labels, 10), np.array(labels))
    assert acc == Accuracy(top1=100 * 3 / 8, top5=100 * 6 / 8, n=8)


def test_top5_with_fewer_than_five_classes_is_top_all() -> None:
    labels = [0, 1, 2, 1]
    acc = topk_accuracy(ranked_logits([2, 1, 0, 2], labels, 3), np.array(labels))
    assert acc.top1 == 25.0 and acc.top5 == 100.0


def test_kl_and_cosine_have_their_closed_forms() -> None:
    p = np.array([[0.0, 0.0]])  # softmax (1/2, 1/2)
    q = np.array([[math.log(3.0), 0.0]])  # softmax (3/4, 1/4)
    assert mean_kl(p, q) == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert mean_kl(q, q) == pytest.approx(0.0, abs=1e-12)
    # KL is asymmetric: KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2)
    assert mean_kl(q, p) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    a = np.array([[1.0, 0.0], [1.0, 2.0], [3.0, 4.0]])
    b = np.array([[0.0, 5.0], [-1.0, -2.0], [6.0, 8.0]])
    assert mean_cosine(a, b) == pytest.approx((0.0 - 1.0 + 1.0) / 3)


def test_per_class_rows_carry_their_own_class_names_and_figures() -> None:
    # class "cat" (0): FP32 right on both, INT8 right on one; class "dog" (1): both wrong on its one image
    labels = np.array([0, 0, 1])
    ref = ranked_logits([0, 0, 1], [0, 0, 1], 3)
    cand = ranked_logits([0, 1, 1], [0, 0, 1], 3)
    c = compare("int8", "fp32", ref, cand, labels, ("cat", "dog", "eel"))
    rows = {row.name: (row.n, row.reference, row.candidate) for row in c.per_class}
    assert rows == {"cat": (2, 100.0, 50.0), "dog": (1, 0.0, 0.0)}
    assert c.accuracy is not None and c.reference_accuracy is not None
    assert (c.accuracy.top1, c.accuracy.top5, c.accuracy.n) == (pytest.approx(100 / 3), 100.0, 3)
    assert c.reference_accuracy.top1 == pytest.approx(200 / 3)
    assert c.drop == pytest.approx(100 / 3)
    assert c.agreement == pytest.approx(200 / 3)
    # the one new error: a "cat" that INT8 calls what ranked_logits put first among the others ("dog")
    assert c.confusion_changes == (("cat", "dog", 1),)


def test_drop_without_labels_is_disagreement() -> None:
    ref = ranked_logits([0, 0, 0, 0], [0, 1, 2, 0], 3)
    cand = ranked_logits([0, 0, 1, 1], [0, 1, 2, 0], 3)
    c = compare("int8", "fp32", ref, cand, None)
    assert c.accuracy is None and c.agreement == 50.0 and c.drop == 50.0


def comparison(drop: float, labelled: bool = True) -> Comparison:
    ref = Accuracy(90.0, 99.0, 100)
    return Comparison(
        artifact="int8.ort",
        reference="fp32",
        n=100,
        accuracy=Accuracy(90.0 - drop, 99.0, 100) if labelled else None,
        reference_accuracy=ref if labelled else None,
        agreement=100.0 - drop,
        kl=0.0,
        cosine=1.0,
    )


@pytest.mark.parametrize(
    ("drop", "max_drop", "status"),
    [
        (0.0, 0.0, PASSED),
        (0.5, 0.5, PASSED),  # exactly the allowed maximum passes
        (0.5000001, 0.5, FAILED),
        (0.6, 0.5, FAILED),
        (-1.0, 0.0, PASSED),  # INT8 better than FP32
        (100.0, 100.0, PASSED),
        (1.0, 0.0, FAILED),
    ],
)
def test_gate_boundary(drop: float, max_drop: float, status: str) -> None:
    result = apply_gate({"int8.ort": comparison(drop)}, GateSettings(max_drop=max_drop))
    assert result.status == status and result.passed == (status == PASSED)
    assert result.max_drop == max_drop
    assert bool(result.failures) == (status == FAILED)


def test_gate_boundary_survives_float_subtraction() -> None:
    # 97.2 - 96.8 is 0.4000000000000057 in binary floating point: a 0.4-point budget still holds
    c = Comparison("int8.ort", "fp32", 500, Accuracy(96.8, 99, 500), Accuracy(97.2, 99, 500), 99.0, 0.0, 1.0)
    assert c.drop > 0.4
    assert apply_gate({"int8.ort": c}, GateSettings(max_drop=0.4)).passed


def test_gate_fails_if_any_artifact_fails_and_names_it() -> None:
    result = apply_gate(
        {"int8.ort": comparison(0.2), "int8.trt": comparison(1.4), "int8.plan": comparison(0.9)},
        GateSettings(max_drop=1.0),
    )
    assert result.status == FAILED
    assert len(result.failures) == 1 and result.failures[0].startswith("int8.trt: drop 1.40")


def test_gate_without_labels_says_so() -> None:
    result = apply_gate({"int8.ort": comparison(3.0, labelled=False)}, GateSettings(max_drop=1.0))
    assert result.status == FAILED and "no labels" in result.failures[0]


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
def test_gate_settings_refuse_impossible_budgets(bad: float) -> None:
    with pytest.raises(UserError, match="--max-drop"):
        GateSettings(max_drop=bad)


def test_no_labels_no_samples_and_unnamed_classes() -> None:
    assert topk_accuracy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64)) == Accuracy(0.0, 0.0, 0)
    empty = compare("int8", "fp32", np.zeros((0, 4)), np.zeros((0, 4)), None)
    assert (empty.n, empty.agreement, empty.kl, empty.cosine) == (0, 0.0, 0.0, 1.0)
    ref = ranked_logits([0, 0, 1, 0, 0], [0, 1, 2, 3, 1], 4)  # 5 samples, 4 classes: n is the sample count
    c = compare("int8.trt", "fp32", ref, ref.copy(), None)
    assert (c.artifact, c.reference, c.n, c.agreement, c.cosine) == ("int8.trt", "fp32", 5, 100.0, 1.0)
    assert c.per_class == () and c.confusion_changes == () and c.accuracy is None
    # labels but no class names: rows are named by index; a label beyond the names list by its index too
    labels = np.array([0, 1, 2, 3, 1])
    unnamed = compare("int8", "fp32", ref, ref.copy(), labels)
    assert [r.name for r in unnamed.per_class] == ["0", "1", "2", "3"]
    short = compare("int8", "fp32", ref, ref.copy(), labels, ("a", "b", "c"))
    assert [r.name for r in short.per_class] == ["a", "b", "c", "3"]


def test_per_class_rows_on_unbalanced_classes() -> None:
    # class 0: 3 images, FP32 gets 2 right; class 1: 1 image, right; class 2: 2 images, 1 right
    labels = [0, 0, 0, 1, 2, 2]
    ref = ranked_logits([0, 0, 2, 0, 0, 1], labels, 4)
    cand = ranked_logits([0, 1, 2, 0, 1, 1], labels, 4)
    c = compare("int8", "fp32", ref, cand, np.array(labels), ("a", "b", "c", "d"))
    rows = {r.name: (r.n, r.reference, r.candidate, r.delta) for r in c.per_class}
    assert rows["a"] == (3, pytest.approx(200 / 3), pytest.approx(100 / 3), pytest.approx(-100 / 3))
    assert rows["b"] == (1, 100.0, 100.0, 0.0)
    assert rows["c"] == (2, 50.0, 0.0, -50.0)
    assert "d" not in rows  # no image of class d: no row


def test_confusion_changes_sorted_by_count_then_names() -> None:
    # new errors: two "a" images called "c", one "b" image called "a", one "a" image called "b"
    labels = [0, 0, 0, 1, 2]
    ref = ranked_logits([0, 0, 0, 0, 0], labels, 3)
    cand = np.zeros_like(ref)
    for i, predicted in enumerate([2, 2, 1, 0, 2]):
        cand[i, predicted] = 1.0
    c = compare("int8", "fp32", ref, cand, np.array(labels), ("a", "b", "c"))
    assert c.confusion_changes == (("a", "c", 2), ("a", "b", 1), ("b", "a", 1))


def test_cosine_of_zero_vectors() -> None:
    zero, one = np.zeros((1, 3)), np.array([[0.0, 2.0, 0.0]])
    assert mean_cosine(zero, zero) == 1.0  # nothing to compare: counted as the same direction
    assert mean_cosine(zero, one) == 1.0 and mean_cosine(one, one * 0.5) == pytest.approx(1.0)
    assert mean_cosine(np.array([[0.1, 0.0]]), np.array([[0.0, 0.1]])) == pytest.approx(0.0, abs=1e-12)


def test_labelled_failure_does_not_claim_missing_labels() -> None:
    result = apply_gate({"int8.ort": comparison(3.0)}, GateSettings(max_drop=1.0))
    assert result.failures == ("int8.ort: drop 3.00 points > 1",)


def test_kl_averages_rows_each_normalized_on_its_own() -> None:
    # two rows at different scales: each row's softmax is normalized alone, then the KLs are averaged
    p = np.array([[0.0, 0.0], [100.0, 100.0]])
    q = np.array([[math.log(3.0), 0.0], [100.0 + math.log(3.0), 100.0]])
    one = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert mean_kl(p, q) == pytest.approx(one)  # both rows have the same KL


def test_metrics_past_one_chunk_of_rows_equal_the_direct_computation() -> None:
    # more rows than one internal chunk (4096): the chunked figures must cover every row exactly once
    rng = np.random.default_rng(3)
    n = 9000
    ref, cand = rng.standard_normal((n, 6)), rng.standard_normal((n, 6))
    labels = rng.integers(0, 6, n)
    top = np.argsort(-cand, axis=1, kind="stable")
    acc = topk_accuracy(cand, labels)
    assert acc.top1 == pytest.approx(100 * np.mean(top[:, 0] == labels))
    assert acc.top5 == pytest.approx(100 * np.mean((top[:, :5] == labels[:, None]).any(1)))
    cos = np.sum(ref * cand, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    assert mean_cosine(ref, cand) == pytest.approx(float(cos.mean()))
