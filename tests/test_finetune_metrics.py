"""Metrics against values computed by hand (GLUE's and SQuAD's definitions)."""

import math

import numpy as np
import pytest

from mbkernels.finetune import metrics


def test_accuracy_and_positive_class_f1():
    assert metrics.accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == 0.75
    # tp = 2, fp = 1, fn = 1: F1 = 2·2 / (2·2 + 1 + 1)
    assert metrics.f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    assert metrics.f1([0, 0], [0, 0]) == 0.0


def test_matthews_binary_and_multiclass():
    # tp 2, tn 1, fp 1, fn 1: (2·1 − 1·1) / sqrt(3·3·2·2)
    assert metrics.matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(1 / 6)
    # confusion rows (true) [[2,0,0],[1,0,1],[0,1,1]], true counts t=[2,2,2], predicted q=[3,1,2]:
    # (3·6 − t·q) / sqrt((36 − q·q)(36 − t·t))
    assert metrics.matthews_corrcoef([0, 2, 1, 0, 0, 2], [0, 1, 2, 0, 1, 2]) == pytest.approx(6 / math.sqrt(22 * 24))
    assert metrics.matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0  # constant predictions
    assert metrics.matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)


def test_pearson_and_spearman_with_ties():
    # deviations [-1.5, -.5, .5, 1.5] and [-3, -1, 0, 4]: 11 / sqrt(5 · 26)
    assert metrics.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130))
    np.testing.assert_array_equal(metrics.rank([10, 20, 20, 20, 5]), [2, 4, 4, 4, 1])
    # ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4]: 4.5 / sqrt(4.5 · 5)
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert metrics.spearman([1, 5, 9, 20], [0, 1, 2, 3]) == pytest.approx(1.0)  # monotone, not linear


def test_squad_normalisation_exact_match_and_f1():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    assert metrics.squad_exact_match("the cat", ["A cat", "dog"]) == 1.0
    # prediction tokens [cat, sat, on, mat] vs gold [cat, sat]: precision 1/2, recall 1
    assert metrics.squad_f1("cat sat on mat", ["the cat sat", "mat"]) == pytest.approx(2 / 3)
    assert metrics.squad_f1("", ["cat"]) == 0.0
    scores = metrics.squad({"q1": "Paris", "q2": "in 1998"}, {"q1": ["paris"], "q2": ["1998", "in May 1998"]})
    assert scores["exact_match"] == pytest.approx(50.0)
    # q2: best of F1("in 1998", "1998") = 2/3 and F1("in 1998", "in may 1998") = 0.8
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 2)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="predictions: expected a non-empty 1-d array"):
        metrics.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="Pearson correlation is undefined"):
        metrics.pearson([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="metrics: expected names"):
        metrics.compute(["auc"], [1], [1])
    with pytest.raises(ValueError, match="1 missing"):
        metrics.squad({}, {"q": ["a"]})
