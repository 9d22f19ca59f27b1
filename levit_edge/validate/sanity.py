"""Checks that a labelled result can be trusted before any gate looks at it.

A gate compares INT8 with FP32; when the labels do not fit the model (a different class order, indices
beyond the classifier) both score near zero, the drop is zero and the gate would pass. These checks turn
such runs into user errors that name the likely cause.
"""

from __future__ import annotations

import numpy as np

from levit_edge.data.sources import ImageSource
from levit_edge.errors import UserError

__all__ = ["ALLOW_CHANCE_FLAG", "check_above_chance", "check_labels_fit"]

ALLOW_CHANCE_FLAG = "--allow-chance-accuracy"


def check_labels_fit(source: ImageSource, num_classes: int, what: str = "--val") -> None:
    """UserError when a label of ``source`` is not a class index of a ``num_classes``-way classifier."""
    labels = source.labels
    if labels is None or not len(labels):
        return
    top = int(np.max(labels))
    if top >= num_classes:
        count = int(np.count_nonzero(labels >= num_classes))
        raise UserError(
            f"{what} {source.path}: {count} label(s) up to {top} are outside the model's classes "
            f"[0, {num_classes}) (wrong --num-classes or labels from another class list?)"
        )


def check_above_chance(top1: float, n: int, num_classes: int, source: ImageSource, allow: bool) -> None:
    """UserError when labelled FP32 top-1 is at or below chance (100 / classes percent).

    Such a number says the labels and the model's outputs do not correspond; a drop measured on it is
    meaningless. ``allow`` (``--allow-chance-accuracy``) accepts it for a model that really is that weak.
    """
    chance = 100.0 / max(num_classes, 1)
    if allow or n == 0 or top1 > chance:
        return
    order = source.class_order or "given"
    hint = {
        "natural": "class folders are numbered in timm's natural order (1, 2, 10); "
        "try --class-order lexical or --class-list FILE",
        "lexical": "class folders are in lexical order (1, 10, 2); "
        "try --class-order natural or --class-list FILE",
        "class-list": "check that the class list is in the model's class order",
    }.get(order, "check that the labels use the model's class indices")
    raise UserError(
        f"FP32 top-1 is {top1:.2f}% on {n} labelled images, at or below chance ({chance:.2f}% for "
        f"{num_classes} classes): the labels do not match the model's classes ({hint}); pass "
        f"{ALLOW_CHANCE_FLAG} if the model really is that weak"
    )
