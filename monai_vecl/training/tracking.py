"""MLflow tracking to a local store: a SQLite tracking database and a local artifact folder, no server.

MLflow's file store raises unless ``MLFLOW_ALLOW_FILE_STORE=true`` (mlflow 3.17.2 ``FileStore``), hence
SQLite. Open it with
``mlflow ui --backend-store-uri sqlite:///<bundle>/outputs/mlflow.db --workers 1``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → ``{"a.b.c": "value"}`` with values as strings (lists kept as their repr)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_CHARS]
    return out


def sqlite_uri(path: str | os.PathLike) -> str:
    """``sqlite:///`` URI of a database file (made absolute, so the store does not depend on the working folder)."""
    return "sqlite:///" + Path(path).resolve().as_posix()


class MlflowTracker:
    """One MLflow run, created or resumed by id; every call is a no-op when ``tracking_uri`` is ``None``.

    Args:
        tracking_uri: e.g. ``sqlite:////abs/outputs/mlflow.db``; ``None`` disables tracking.
        experiment: experiment name.
        artifact_dir: local folder for the experiment's artifacts (created).
        run_name: display name of a new run.
    """

    def __init__(self, tracking_uri: str | None, experiment: str = "vecl",
                 artifact_dir: str | os.PathLike | None = None, run_name: str | None = None):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else None
        self.run_name = run_name
        self.run_id: str | None = None
        self._client = None

    @property
    def enabled(self) -> bool:
        return self.tracking_uri is not None

    def start(self, run_id: str | None = None) -> str | None:
        """Resume ``run_id`` (from a checkpoint) or create a new run; returns the run id."""
        if not self.enabled:
            return None
        from mlflow import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        if run_id is not None:
            self._client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        experiment = self._client.get_experiment_by_name(self.experiment)
        if experiment is None:
            location = None
            if self.artifact_dir is not None:
                self.artifact_dir.mkdir(parents=True, exist_ok=True)
                location = self.artifact_dir.resolve().as_uri()
            experiment_id = self._client.create_experiment(self.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        self.run_id = self._client.create_run(experiment_id, run_name=self.run_name).info.run_id
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self._client:
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self._client:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self._client:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED`` (an interrupted run is resumed under the same id)."""
        if self._client:
            self._client.set_terminated(self.run_id, status=status)
