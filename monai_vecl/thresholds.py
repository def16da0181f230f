"""Calibrated per-finding decision thresholds: the hand-over from evaluation to deployment.

The evaluation chooses one threshold per finding on a validation split (never on the test set)
and writes them beside the model as ``models/thresholds.json``; the deploy app and the gateway read
that file. A finding without a calibrated threshold keeps its score but gets no present/absent call.

File layout (JSON)::

    {"format": 1, "score_mode": "pnc", "split": "validate", "rule": "max_f1",
     "model_sha256": "...", "created": "2026-12-01T10:00:00+00:00",
     "thresholds": {"Pleural Effusion": {"threshold": 0.42, "n": 300, "n_pos": 61,
                                          "f1": 0.81, "precision": 0.78, "recall": 0.84, "auc": 0.93}}}

``threshold`` is the rule ``score >= threshold`` → present. The per-finding figures are the ones the
threshold gives on the split it was chosen on (so they are optimistic for that split).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_vecl.files import write_json

FORMAT = 1
FILE_NAME = "thresholds.json"
RULES = ("max_f1", "max_mcc")


@dataclass(frozen=True)
class ThresholdTable:
    """Per-finding thresholds with the provenance a deployment must report."""

    thresholds: dict[str, float]
    score_mode: str
    split: str
    rule: str
    model_sha256: str | None = None
    created: str | None = None
    figures: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"thresholds rule must be one of {RULES}, got {self.rule!r}")
        for name, value in self.thresholds.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold of {name!r} must be a number in [0, 1], got {value!r}")

    def threshold(self, finding: str) -> float | None:
        """The calibrated threshold of ``finding``, or None when it has none."""
        return self.thresholds.get(finding)

    def describe(self) -> str:
        """One line for logs and the SR: which thresholds these are."""
        return f"{self.rule} on {self.split} split ({self.score_mode}), {len(self.thresholds)} findings"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "score_mode": self.score_mode,
            "split": self.split,
            "rule": self.rule,
            "model_sha256": self.model_sha256,
            "created": self.created,
            "thresholds": {
                name: {"threshold": float(value), **self.figures.get(name, {})} for name, value in self.thresholds.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "thresholds") -> ThresholdTable:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a thresholds file of format {FORMAT}")
        try:
            entries = data["thresholds"]
            values = {str(k): v["threshold"] for k, v in entries.items()}
            figures = {str(k): {f: x for f, x in v.items() if f != "threshold"} for k, v in entries.items()}
            return cls(values, str(data["score_mode"]), str(data["split"]), str(data["rule"]),
                       data.get("model_sha256"), data.get("created"), figures)
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{source}: malformed thresholds file ({err!r})") from err


def load_thresholds(path: str | os.PathLike) -> ThresholdTable:
    """Read a thresholds file; a missing or malformed file raises with the path in the message."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read thresholds ({err})") from err
    return ThresholdTable.from_json(data, str(path))


def save_thresholds(table: ThresholdTable, path: str | os.PathLike) -> Path:
    """Write ``table`` as JSON atomically (:func:`monai_vecl.files.write_json`)."""
    return write_json(path, table.to_json(), sort_keys=True)


def load_checked(path: str | os.PathLike, score_mode: str, model_sha256: str | None, scorer: str = "this run",
                 model_name: str = "the model") -> ThresholdTable | None:
    """The thresholds at ``path`` if they were calibrated for ``score_mode`` and (when both digests are known)
    these weights; None when there is no such file. Thresholds of another score mode or other weights would be
    silently wrong, so either mismatch raises, naming ``scorer`` and ``model_name``."""
    if not Path(path).is_file():
        return None
    table = load_thresholds(path)
    if table.score_mode != score_mode:
        raise ValueError(f"{path}: calibrated for score_mode {table.score_mode!r}, {scorer} scores {score_mode!r}")
    if table.model_sha256 and model_sha256 and table.model_sha256 != model_sha256:
        raise ValueError(f"{path}: calibrated for model sha256 {table.model_sha256[:16]}, {model_name} is "
                         f"{model_sha256[:16]}: re-run the evaluation that writes the thresholds for these weights")
    return table
