"""The bundle's ``evaluating`` workflow: a checkpoint, a manifest, class names → tables, plots, MLflow.

For every evaluated split (phantom ``test`` and ``test_shifted`` by default) and every scoring
mode (POS, PNC) it writes a per-class + macro table (CSV, JSON) with oracle and validation-threshold
metrics and bootstrap CIs, and a ROC/PR plot; optionally retrieval-based report generation,
the linear probe and the t-SNE feature map; then logs everything to MLflow.
Images are read and scored in chunks, so memory does not grow with the data set.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from monai_vecl.data.manifest import Record, image_path, read_manifest
from monai_vecl.data.preprocess import preprocess_gray
from monai_vecl.evaluation.zero_shot import MODES, ZeroShotClassifier, pnc
from monai_vecl.taxonomy import finding_code

logger = logging.getLogger(__name__)


def load_gray(path: str | os.PathLike) -> np.ndarray:
    """A grayscale image file as float32 [H, W] in [0, 1] (8- and 16-bit PNG/JPEG, RGB converted to L)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float32)
            return arr / (65535.0 if arr.max() > 255 else 255.0)
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def class_labels(records: Sequence[Record], class_names: Sequence[str]) -> np.ndarray:
    """Ground truth [N, C] from ``record.findings``: 1/0, -1 uncertain, NaN where the record has no value.

    A class matches a findings key by name or, for prompt names such as "Pulmonary Edema",
    by taxonomy finding code ("Edema").
    """
    out = np.full((len(records), len(class_names)), np.nan)
    for c, name in enumerate(class_names):
        code = _code_or_none(name)
        for i, record in enumerate(records):
            for key, value in (record.findings or {}).items():
                if key == name or (code is not None and _code_or_none(key) == code):
                    out[i, c] = value
                    break
    return out


def _code_or_none(name: str) -> int | None:
    try:
        return finding_code(name)
    except KeyError:
        return None


@dataclass
class SkipLog:
    """Images that could not be evaluated, with the reason (counted and written, never dropped silently)."""

    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, record: Record, reason: str) -> None:
        self.items.append({"image": record.image, "split": record.split, "reason": reason})


def iter_image_batches(
    records: Sequence[Record],
    manifest: str | os.PathLike,
    image_size: int,
    load_size: int,
    batch_size: int,
    skipped: SkipLog,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield (record indices, preprocessed images [B, 3, S, S]); unreadable images go to ``skipped``."""
    idx: list[int] = []
    batch: list[torch.Tensor] = []
    for i, record in enumerate(records):
        try:
            batch.append(preprocess_gray(load_gray(image_path(record, manifest)), image_size, load_size))
            idx.append(i)
        except (OSError, ValueError) as err:
            skipped.add(record, f"{type(err).__name__}: {err}")
        if len(batch) == batch_size:
            yield idx, torch.stack(batch)
            idx, batch = [], []
    if batch:
        yield idx, torch.stack(batch)


def load_checkpoint(model: torch.nn.Module, checkpoint: str | os.PathLike) -> torch.nn.Module:
    """Load a plain ``state_dict`` (``models/model.pt``) strictly into ``model``."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: train first or point `checkpoint` at your weights")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


class ZeroShotEvaluation:
    """Zero-shot evaluation of one checkpoint on one manifest; :meth:`run` writes everything to ``output_dir``."""

    def __init__(
        self,
        network: torch.nn.Module,
        manifest: str | os.PathLike,
        class_names: Sequence[str],
        output_dir: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        splits: Sequence[str] = ("test", "test_shifted"),
        validation_split: str | None = "validate",
        modes: Sequence[str] = MODES,
        pos_template: str = "There is {}",
        neg_template: str = "There is no {}",
        chunk_size: int = 64,
        n_bootstrap: int = 1000,
        seed: int = 0,
        extras: Sequence[object] = (),
        tracking_uri: str | None = None,
        experiment: str = "vecl_cxr",
        run_name: str = "evaluate",
        artifact_root: str | os.PathLike | None = None,
    ):
        unknown = set(modes) - set(MODES)
        if unknown:
            raise ValueError(f"unknown scoring modes {sorted(unknown)}; use {MODES}")
        self.model = load_checkpoint(network, checkpoint) if checkpoint else network
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(device).eval()
        self.manifest = Path(manifest)
        self.class_names = tuple(class_names)
        self.output_dir = Path(output_dir)
        self.checkpoint = checkpoint
        self.splits, self.validation_split, self.modes = tuple(splits), validation_split, tuple(modes)
        self.chunk_size, self.n_bootstrap, self.seed = chunk_size, n_bootstrap, seed
        self.classifier = ZeroShotClassifier(self.model, self.class_names, pos_template, neg_template, chunk_size)
        self.extras = tuple(extras)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.artifact_root = artifact_root
        self.skipped = SkipLog()

    def records(self, split: str) -> list[Record]:
        """Records of ``split``; records without any ground truth for these classes are logged as skipped."""
        records = read_manifest(self.manifest, split)
        labels = class_labels(records, self.class_names)
        kept = []
        for record, row in zip(records, labels):
            if np.isnan(row).all():
                self.skipped.add(record, f"no ground truth for any of {len(self.class_names)} classes")
            else:
                kept.append(record)
        return kept

    def score(self, records: Sequence[Record]) -> tuple[list[int], dict[str, np.ndarray]]:
        """(indices of scored records, {mode: scores [n, C]}) — both modes share one image pass."""
        size, load = self.model.image_size, self.model.load_size
        kept: list[int] = []
        parts: dict[str, list[np.ndarray]] = {m: [] for m in self.modes}
        for idx, images in iter_image_batches(records, self.manifest, size, load, self.chunk_size, self.skipped):
            p_pos, p_neg = self.classifier.entail(images, negative="pnc" in self.modes)
            kept.extend(idx)
            if "pos" in self.modes:
                parts["pos"].append(p_pos.numpy())
            if "pnc" in self.modes:
                parts["pnc"].append(pnc(p_pos, p_neg).numpy())
        empty = np.zeros((0, len(self.class_names)))
        return kept, {m: np.concatenate(p) if p else empty for m, p in parts.items()}

    def run(self) -> dict[str, object]:
        """Evaluate every split and mode, run the extras, write outputs, log to MLflow; returns a summary."""
        from monai_vecl.evaluation import metrics, reporting

        self.output_dir.mkdir(parents=True, exist_ok=True)
        thresholds: dict[str, metrics.Thresholds] = {}
        if self.validation_split:
            val_records = self.records(self.validation_split)
            kept, scores = self.score(val_records)
            y_val = class_labels([val_records[i] for i in kept], self.class_names)
            thresholds = {m: metrics.choose_thresholds(y_val, s) for m, s in scores.items()} if kept else {}
        summary: dict[str, object] = {"checkpoint": str(self.checkpoint), "manifest": str(self.manifest)}
        flat: dict[str, float] = {}
        for split in self.splits:
            records = self.records(split)
            kept, scores = self.score(records)
            y = class_labels([records[i] for i in kept], self.class_names)
            for mode, s in scores.items():
                name = f"{split}_{mode}"
                table = metrics.evaluate_scores(
                    y, s, self.class_names, thresholds.get(mode), n_bootstrap=self.n_bootstrap, seed=self.seed
                )
                reporting.write_table(table, self.output_dir, name, {"split": split, "mode": mode, "n_images": len(kept)})
                reporting.plot_curves(y, s, self.class_names, self.output_dir / f"{name}_curves.png", f"{split}, {mode.upper()}")
                flat |= reporting.flat_metrics(table, name)
                summary[name] = {k: table.macro[k] for k in ("auc", "ap", "oracle_f1", "oracle_mcc", "val_f1", "val_mcc")}
        for extra in self.extras:
            result = extra(self)
            flat |= result.get("metrics", {})
            summary |= result.get("summary", {})
        summary["skipped"] = len(self.skipped.items)
        (self.output_dir / "skipped.json").write_text(json.dumps(self.skipped.items, indent=2), encoding="utf-8")
        (self.output_dir / "summary.json").write_text(json.dumps(reporting.jsonable(summary), indent=2), encoding="utf-8")
        if self.skipped.items:
            logger.warning("%d images/records skipped, see %s", len(self.skipped.items), self.output_dir / "skipped.json")
        if self.tracking_uri:
            params = {
                "checkpoint": self.checkpoint, "manifest": self.manifest, "splits": self.splits,
                "class_names": self.class_names, "templates": (self.classifier.pos_prompts[0], self.classifier.neg_prompts[0]),
                "n_bootstrap": self.n_bootstrap, "skipped": len(self.skipped.items),
            }
            summary["mlflow_run_id"] = reporting.log_to_mlflow(
                self.tracking_uri, self.experiment, self.run_name, params, flat, self.output_dir, self.artifact_root
            )
        return summary

