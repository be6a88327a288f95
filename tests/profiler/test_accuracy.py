from __future__ import annotations

import numpy as np
import pytest

from profiler.accuracy import classifier_verdict, cosine_by_row, embedding_verdict, top1_agreement


def test_cosine_by_row_ignores_scale_and_sees_direction() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert cosine_by_row(a * 3, a) == pytest.approx([1.0, 1.0])
    assert cosine_by_row(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])) == pytest.approx([0.0])


def test_embedding_verdict_names_the_worst_row_and_threshold() -> None:
    ref = np.eye(4)
    got = ref.copy()
    got[2] = [0.0, 0.3, 1.0, 0.0]  # cosine 0.958 with row 2
    v = embedding_verdict(got, ref, min_cosine=0.98)
    assert not v.passed
    assert "0.98" in v.message and "row 2" in v.message
    assert v.metrics["min_cosine"] == pytest.approx(1 / np.sqrt(1.09))
    assert embedding_verdict(got, ref, min_cosine=0.95).passed


def test_top1_agreement_counts_changed_nearest_neighbours() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1]])
    assert top1_agreement(ref, ref) == 1.0
    moved = ref.copy()
    moved[2] = [0.95, 0.05, 0.0]  # row 2 now sits next to rows 0/1
    assert top1_agreement(moved, ref) < 1.0


@pytest.mark.parametrize(("correct", "passed"), [(98, True), (97, True), (96, False)],
                         ids=["equal", "one-image-worse", "two-images-worse"])
def test_classifier_verdict_allows_noise_not_a_drop(correct: int, passed: bool) -> None:
    labels = np.zeros(100, dtype=np.int64)
    predicted = np.where(np.arange(100) < correct, 0, 1)
    assert classifier_verdict(predicted, labels, baseline_accuracy=0.98, max_drop=0.015).passed is passed
