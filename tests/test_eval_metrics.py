"""Metrics against hand-worked cases, scikit-learn and MONAI."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef

from monai_vecl import metrics as M

Y = np.array([0, 0, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8])


def test_hand_worked_case():
    row = M.class_metrics(Y, S)
    assert row["auc"] == pytest.approx(0.75)
    assert row["ap"] == pytest.approx((1 / 1 + 2 / 3) / 2)  # precision at each true positive, averaged
    # grid threshold 0.11..0.35 predicts {0.35, 0.4, 0.8}: TP 2, FP 1, FN 0 -> F1 4/5; lowest such threshold wins
    assert (row["oracle_f1"], row["oracle_f1_threshold"]) == (pytest.approx(0.8), pytest.approx(0.11))
    # threshold 0.8: TP 1, FP 0, FN 1, TN 2 -> MCC 2 / sqrt(1*2*2*3)
    assert row["oracle_mcc"] == pytest.approx(2 / np.sqrt(12))
    assert row["oracle_accuracy"] == pytest.approx(0.75)
    assert np.isnan(row["val_f1"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_thresholds_match_sklearn_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.clip(0.3 * y + rng.normal(0.35, 0.2, 200), 0, 1).round(3)
    f1, f1_t = M.best_f1(y, s)
    brute_f1 = [f1_score(y, s >= t, zero_division=0) for t in M.F1_GRID]
    assert f1 == pytest.approx(max(brute_f1)) and f1_t == pytest.approx(M.F1_GRID[int(np.argmax(brute_f1))])
    mcc, mcc_t = M.best_mcc(y, s)
    brute_mcc = max(matthews_corrcoef(y, s >= t) for t in np.unique(s))
    assert mcc == pytest.approx(brute_mcc)
    assert matthews_corrcoef(y, s >= mcc_t) == pytest.approx(mcc)
    assert M.class_metrics(y, s)["ap"] == pytest.approx(average_precision_score(y, s))


def test_auc_matches_monai_and_macro_skips_classes_without_positives():
    import torch
    from monai.metrics import compute_roc_auc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (120, 3)).astype(float)
    y[:, 2] = 0  # no positives: must not enter the macro mean
    s = np.clip(0.4 * y + rng.random((120, 3)) * 0.7, 0, 1)
    table = M.evaluate_scores(y, s, ["a", "b", "c"], n_bootstrap=0)
    for c in range(2):
        ref = compute_roc_auc(torch.tensor(s[:, c]), torch.tensor(y[:, c]))
        assert table.per_class[c]["auc"] == pytest.approx(ref)
    assert np.isnan(table.per_class[2]["auc"]) and table.macro["n_classes"] == 2
    assert table.macro["auc"] == pytest.approx((table.per_class[0]["auc"] + table.per_class[1]["auc"]) / 2)


def test_uncertain_labels_are_left_out_and_counted():
    y = np.array([[0], [0], [1], [1], [-1], [np.nan]])
    s = np.array([[0.1], [0.4], [0.35], [0.8], [0.99], [0.0]])
    row = M.evaluate_scores(y, s, ["x"], n_bootstrap=0).per_class[0]
    assert row["n"] == 4 and row["n_pos"] == 2 and row["auc"] == pytest.approx(0.75)


def test_validation_thresholds_are_applied_unchanged():
    rng = np.random.default_rng(4)
    y_val, y_test = rng.integers(0, 2, (150, 2)), rng.integers(0, 2, (150, 2))
    s_val = np.clip(0.3 * y_val + rng.random((150, 2)) * 0.7, 0, 1)
    s_test = np.clip(0.3 * y_test + rng.random((150, 2)) * 0.7, 0, 1)
    thr = M.choose_thresholds(y_val, s_val)
    assert thr.f1[0] == pytest.approx(M.best_f1(y_val[:, 0], s_val[:, 0])[1])
    row = M.evaluate_scores(y_test, s_test, ["a", "b"], thresholds=thr, n_bootstrap=0).per_class[1]
    assert row["val_f1"] == pytest.approx(f1_score(y_test[:, 1], s_test[:, 1] >= thr.f1[1]))
    assert row["val_mcc"] == pytest.approx(matthews_corrcoef(y_test[:, 1], s_test[:, 1] >= thr.mcc[1]))
    assert row["val_f1"] <= row["oracle_f1"] + 1e-12  # the oracle picks its threshold on this very set


def test_bootstrap_ci_brackets_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(5)

    def width(n):
        y = rng.integers(0, 2, (n, 1))
        s = np.clip(0.3 * y + rng.random((n, 1)) * 0.7, 0, 1)
        t = M.evaluate_scores(y, s, ["x"], n_bootstrap=100, seed=1)
        lo, hi = t.macro_ci["auc"]
        assert lo <= t.macro["auc"] <= hi
        assert t.ci["x"]["auc"] == pytest.approx((lo, hi))  # one class: macro == class
        return hi - lo

    assert width(600) < width(60)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="not finite"):
        M.evaluate_scores(np.zeros((2, 1)), np.array([[np.nan], [0.1]]), ["x"])
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        M.evaluate_scores(np.zeros((2, 1)), np.zeros((2, 2)), ["x"])
    with pytest.raises(ValueError, match="class names"):
        M.evaluate_scores(np.zeros((2, 2)), np.zeros((2, 2)), ["x"])
