"""Classification metrics for zero-shot and probe scores, per class and macro (docs/method.md §Metrics).

Two threshold protocols, named in every output key:

* ``oracle_*`` — the VECL paper's protocol: F1 at its best threshold on a 0.00…1.00 grid
  (step 0.01) and MCC at its best ROC threshold, both chosen **on the evaluated set itself**.
  Optimistic; reported only to compare with the paper.
* ``val_*`` — deployable protocol (as CheXzero does): the same best-F1 / best-MCC thresholds
  chosen on a validation split, then applied unchanged to the evaluated set.

AUC and AP come from scikit-learn. Labels use 1 = positive, 0 = negative, and any other value
(-1 uncertain, NaN missing) is left out of that class; the counts of used samples are reported.
Macro means run over classes with at least one positive and one negative sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import sklearn
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

#: The paper's F1 threshold grid: 0.00, 0.01, ..., 1.00.
F1_GRID = np.round(np.arange(0, 101) / 100, 2)

POINT_METRICS = ("auc", "ap", "oracle_f1", "oracle_mcc", "oracle_accuracy")
VAL_METRICS = ("val_f1", "val_mcc", "val_accuracy")


def _counts_at(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn, tn) for the rule ``score >= threshold``, vectorised over thresholds."""
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    tp = len(pos) - np.searchsorted(pos, thresholds, side="left")
    fp = len(neg) - np.searchsorted(neg, thresholds, side="left")
    return tp, fp, len(pos) - tp, len(neg) - fp


def f1_from_counts(tp, fp, fn) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN), 0 where undefined (as scikit-learn's ``zero_division=0``)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def mcc_from_counts(tp, fp, fn, tn) -> np.ndarray:
    """Matthews correlation, 0 where a marginal is empty (scikit-learn's convention)."""
    tp, fp, fn, tn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn, tn))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.divide(tp * tn - fp * fn, den, out=np.zeros_like(den), where=den > 0)


def best_f1(y: np.ndarray, s: np.ndarray, grid: np.ndarray = F1_GRID) -> tuple[float, float]:
    """(best F1, its threshold) over ``grid`` with the rule ``score >= threshold``; ties take the lowest."""
    tp, fp, fn, _ = _counts_at(y, s, grid)
    f1 = f1_from_counts(tp, fp, fn)
    k = int(np.argmax(f1))
    return float(f1[k]), float(grid[k])


def best_mcc(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(best MCC, its threshold) over the ROC curve's thresholds (every distinct score)."""
    _, _, thresholds = roc_curve(y, s, drop_intermediate=False)
    thresholds = thresholds[np.isfinite(thresholds)]
    tp, fp, fn, tn = _counts_at(y, s, thresholds)
    mcc = mcc_from_counts(tp, fp, fn, tn)
    k = int(np.argmax(mcc))
    return float(mcc[k]), float(thresholds[k])


def at_threshold(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    """F1, MCC and accuracy of the rule ``score >= threshold``."""
    tp, fp, fn, tn = (int(c[0]) for c in _counts_at(y, s, np.array([threshold])))
    return {
        "f1": float(f1_from_counts(tp, fp, fn)),
        "mcc": float(mcc_from_counts(tp, fp, fn, tn)),
        "accuracy": (tp + tn) / max(1, tp + fp + fn + tn),
    }


@dataclass
class Thresholds:
    """Per-class thresholds chosen on a validation split (NaN where a class could not be tuned)."""

    f1: np.ndarray
    mcc: np.ndarray


def _valid(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = (y == 0) | (y == 1)
    return y[keep].astype(np.int64), s[keep].astype(np.float64)


def _both_classes(y: np.ndarray) -> bool:
    return bool((y == 1).any() and (y == 0).any())


def masked_macro_auc(y_true: np.ndarray, scores: np.ndarray, class_names: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Macro ROC AUC over the classes with a positive and a negative labeled case, and the per-class values;
    per class, labels other than 0/1 (-1 uncertain, NaN missing) are left out. The macro AUC of training
    validation, of the evaluation tables (``auc`` in :func:`evaluate_scores`) and of the benches."""
    y, s = _check(y_true, scores)
    per_class = {}
    for c, name in enumerate(class_names):
        yc, sc = _valid(y[:, c], s[:, c])
        if _both_classes(yc):
            per_class[name] = float(roc_auc_score(yc, sc))
    if not per_class:
        raise ValueError("no class has both a positive and a negative labeled case: macro AUC undefined")
    return float(np.mean(list(per_class.values()))), per_class


def choose_thresholds(y_val: np.ndarray, s_val: np.ndarray) -> Thresholds:
    """Best-F1 and best-MCC thresholds per class on a validation split."""
    y_val, s_val = _check(y_val, s_val)
    f1_t, mcc_t = np.full(y_val.shape[1], np.nan), np.full(y_val.shape[1], np.nan)
    for c in range(y_val.shape[1]):
        y, s = _valid(y_val[:, c], s_val[:, c])
        if _both_classes(y):
            f1_t[c], mcc_t[c] = best_f1(y, s)[1], best_mcc(y, s)[1]
    return Thresholds(f1=f1_t, mcc=mcc_t)


def threshold_table(
    y_val: np.ndarray, s_val: np.ndarray, class_names: Sequence[str], thresholds: Thresholds, rule: str = "max_f1"
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per-class thresholds of ``rule`` (``max_f1`` / ``max_mcc``) and what each gives on the split it was chosen
    on (n, n_pos, f1, precision, recall, mcc, auc); classes that could not be tuned are left out."""
    chosen = {"max_f1": thresholds.f1, "max_mcc": thresholds.mcc}[rule]
    y_val, s_val = _check(y_val, s_val)
    values, figures = {}, {}
    for c, name in enumerate(class_names):
        if not np.isfinite(chosen[c]):
            continue
        y, s = _valid(y_val[:, c], s_val[:, c])
        tp, fp, fn, _ = (int(x[0]) for x in _counts_at(y, s, np.array([chosen[c]])))
        values[name] = float(chosen[c])
        figures[name] = {
            "n": int(len(y)), "n_pos": int(y.sum()), **at_threshold(y, s, chosen[c]),
            "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn),
            "auc": float(roc_auc_score(y, s)),
        }
    return values, figures


def class_metrics(
    y: np.ndarray, s: np.ndarray, f1_threshold: float = np.nan, mcc_threshold: float = np.nan
) -> dict[str, float]:
    """All metrics of one class; ``val_*`` only when validation thresholds are given. NaN when undefined."""
    y, s = _valid(y, s)
    out: dict[str, float] = {"n": float(len(y)), "n_pos": float((y == 1).sum())}
    if not _both_classes(y):
        return out | {k: np.nan for k in POINT_METRICS + VAL_METRICS}
    f1, f1_thr = best_f1(y, s)
    mcc, mcc_thr = best_mcc(y, s)
    out |= {
        "auc": float(roc_auc_score(y, s)),
        "ap": float(average_precision_score(y, s)),
        "oracle_f1": f1,
        "oracle_f1_threshold": f1_thr,
        "oracle_mcc": mcc,
        "oracle_mcc_threshold": mcc_thr,
        "oracle_accuracy": at_threshold(y, s, f1_thr)["accuracy"],
    }
    if np.isfinite(f1_threshold) and np.isfinite(mcc_threshold):
        at_f1 = at_threshold(y, s, f1_threshold)
        out |= {
            "val_f1": at_f1["f1"],
            "val_f1_threshold": float(f1_threshold),
            "val_mcc": at_threshold(y, s, mcc_threshold)["mcc"],
            "val_mcc_threshold": float(mcc_threshold),
            "val_accuracy": at_f1["accuracy"],
        }
    else:
        out |= {k: np.nan for k in VAL_METRICS}
    return out


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y_true, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"labels and scores must both be [N, C], got {y.shape} and {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are not finite")
    return y, s


@dataclass
class MetricTable:
    """Per-class metric rows, the macro row, and bootstrap CIs (``{metric: (low, high)}``)."""

    class_names: tuple[str, ...]
    per_class: list[dict[str, float]]
    macro: dict[str, float]
    ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    macro_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_bootstrap: int = 0
    protocol_note: str = (
        "oracle_*: thresholds chosen on this evaluated set (VECL paper protocol, optimistic); "
        "val_*: thresholds chosen on the validation split (deployable)"
    )


def _macro(rows: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    out = {}
    for key in keys:
        vals = np.array([r.get(key, np.nan) for r in rows], dtype=np.float64)
        out[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
    return out


def evaluate_scores(
    y_true: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    thresholds: Thresholds | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> MetricTable:
    """Per-class and macro metrics with percentile bootstrap CIs over resampled images.

    Each bootstrap replicate redoes the oracle threshold search (that is what the oracle
    protocol is); ``val_*`` keeps the validation thresholds fixed.
    """
    y, s = _check(y_true, scores)
    if y.shape[1] != len(class_names):
        raise ValueError(f"{y.shape[1]} score columns but {len(class_names)} class names")
    n_cls = y.shape[1]
    f1_t = thresholds.f1 if thresholds is not None else np.full(n_cls, np.nan)
    mcc_t = thresholds.mcc if thresholds is not None else np.full(n_cls, np.nan)

    def table(idx: np.ndarray | None) -> list[dict[str, float]]:
        yy, ss = (y, s) if idx is None else (y[idx], s[idx])
        return [class_metrics(yy[:, c], ss[:, c], f1_t[c], mcc_t[c]) for c in range(n_cls)]

    rows = table(None)
    keys = POINT_METRICS + VAL_METRICS
    n_macro = float(sum(np.isfinite(r["auc"]) for r in rows))
    result = MetricTable(tuple(class_names), rows, _macro(rows, keys) | {"n_classes": n_macro}, n_bootstrap=n_bootstrap)
    if n_bootstrap <= 0 or len(y) == 0:
        return result
    rng = np.random.default_rng(seed)
    per_class = np.full((n_bootstrap, n_cls, len(keys)), np.nan)
    macro = np.full((n_bootstrap, len(keys)), np.nan)
    # the point estimate checked these arrays; replicates are resamples of them, so skip scikit-learn's checks
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for b in range(n_bootstrap):
            boot = table(rng.integers(0, len(y), len(y)))
            per_class[b] = [[r[k] for k in keys] for r in boot]
            macro[b] = [_macro(boot, keys)[k] for k in keys]
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (class absent from replicates)
        pc_lo, pc_hi = np.nanpercentile(per_class, lo, axis=0), np.nanpercentile(per_class, hi, axis=0)
        m_lo, m_hi = np.nanpercentile(macro, lo, axis=0), np.nanpercentile(macro, hi, axis=0)
    result.ci = {
        name: {k: (float(pc_lo[c, i]), float(pc_hi[c, i])) for i, k in enumerate(keys)}
        for c, name in enumerate(class_names)
    }
    result.macro_ci = {k: (float(m_lo[i]), float(m_hi[i])) for i, k in enumerate(keys)}
    return result
