"""Evaluation outputs: per-class + macro tables (CSV, JSON), ROC/PR curve plots (PNG) and MLflow logging."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_vecl.metrics import MetricTable


def table_rows(table: MetricTable) -> list[dict[str, object]]:
    """One row per class plus a ``macro`` row; CI bounds as ``<metric>_ci_low`` / ``_ci_high``."""
    rows = []
    for name, row in zip(table.class_names, table.per_class, strict=True):
        ci = table.ci.get(name, {})
        rows.append({"class": name, **row, **_ci_columns(ci)})
    rows.append({"class": "macro", **table.macro, **_ci_columns(table.macro_ci)})
    return rows


def _ci_columns(ci: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    out = {}
    for key, (low, high) in ci.items():
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = low, high
    return out


def jsonable(value: object) -> object:
    """``value`` with NaN/inf → None, numpy scalars → Python, paths → str, tuples → lists (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def write_table(
    table: MetricTable, out_dir: str | os.PathLike, name: str, meta: Mapping[str, object] | None = None
) -> list[Path]:
    """Write ``<name>.csv`` and ``<name>.json`` (NaN → empty cell / null) and return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(table)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    csv_path, json_path = out_dir / f"{name}.csv", out_dir / f"{name}.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if jsonable(row.get(k)) is None else row.get(k) for k in columns})
    payload = {
        "protocol": table.protocol_note,
        "n_bootstrap": table.n_bootstrap,
        **(meta or {}),
        "rows": rows,
    }
    json_path.write_text(json.dumps(jsonable(payload), indent=2), encoding="utf-8")
    return [csv_path, json_path]


def write_scores(
    images: Sequence[str], truth: np.ndarray, scores: np.ndarray, class_names: Sequence[str], path: str | os.PathLike
) -> Path:
    """Per-image scores and truth as ``<path>`` (``.npz``: ``images``, ``truth``, ``scores``, ``class_names``), so
    two models scored on the same images can be compared pairwise (paired bootstrap)."""
    path = Path(path)
    np.savez_compressed(path, images=np.asarray(images), truth=truth, scores=scores, class_names=np.asarray(class_names))
    return path


def plot_curves(
    y_true: np.ndarray, scores: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str
) -> Path:
    """ROC (left) and precision-recall (right) curves of every class with both labels present, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 5))
    for c, name in enumerate(class_names):
        keep = (y_true[:, c] == 0) | (y_true[:, c] == 1)
        y, s = y_true[keep, c], scores[keep, c]
        if not ((y == 1).any() and (y == 0).any()):
            continue
        fpr, tpr, _ = roc_curve(y, s)
        precision, recall, _ = precision_recall_curve(y, s)
        ax_roc.plot(fpr, tpr, label=f"{name} ({auc(fpr, tpr):.3f})")
        ax_pr.plot(recall, precision, label=name)
    ax_roc.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {title}")
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"Precision-recall — {title}", xlim=(0, 1), ylim=(0, 1.02))
    ax_roc.legend(fontsize=7, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def flat_metrics(table: MetricTable, prefix: str) -> dict[str, float]:
    """Finite macro metrics (and per-class AUC) as MLflow metric names ``<prefix>_<metric>``."""
    out = {f"{prefix}_macro_{k}": v for k, v in table.macro.items()}
    out |= {f"{prefix}_{_slug(n)}_auc": r["auc"] for n, r in zip(table.class_names, table.per_class, strict=True)}
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower())


def log_to_mlflow(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    artifact_dir: str | os.PathLike,
    artifact_root: str | os.PathLike | None = None,
) -> str:
    """Log one evaluation run (params, metrics, every file under ``artifact_dir``); returns the run id.

    ``artifact_root`` is used only when the experiment does not exist yet (MLflow would otherwise put
    artifacts under ``./mlruns`` of the current folder).
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    # an explicit client: the fluent API's set_tracking_uri also sets MLFLOW_TRACKING_URI in the environment,
    # which would redirect every later MLflow handler of the process (MONAI's reads that variable first)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = Path(artifact_root).resolve().as_uri() if artifact_root is not None else None
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    run = client.create_run(experiment_id, run_name=run_name)
    now = int(time.time() * 1000)
    items = [Param(k, str(v)[:500]) for k, v in params.items()]
    values = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for start in range(0, max(len(items), len(values)), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, metrics=values[start : start + 100], params=items[start : start + 100])
    client.log_artifacts(run.info.run_id, str(artifact_dir))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
