"""The bundle's ``evaluating`` workflow: a checkpoint, a manifest, the bundle's validation evaluator → tables,
plots, MLflow.

Every evaluated split (phantom ``test`` and ``test_shifted`` by default, and the validation split the deployable
thresholds are chosen on) runs through the bundle's ``validate#evaluator`` — the same dataset, preprocessing,
inferer and AUC as training's validation. For every split and scoring mode (POS, PNC) it writes a per-class +
macro table (CSV, JSON) with oracle and validation-threshold metrics and bootstrap CIs, and a ROC/PR plot;
optionally retrieval-based report generation, the linear probe, the t-SNE feature map and grounding; then logs
everything to MLflow. Images are read and scored in batches, so memory does not grow with the data set.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.utils import CommonKeys

from monai_vecl import metrics
from monai_vecl.data.manifest import Record, class_labels, image_path, read_manifest
from monai_vecl.files import sha256_file
from monai_vecl.inference.engine import ERROR_KEY, LoadGrayd, ZeroShotInferer, labeled_dataset
from monai_vecl.inference.zero_shot import MODES, load_weights, pnc
from monai_vecl.thresholds import ThresholdTable, save_thresholds

logger = logging.getLogger(__name__)


@dataclass
class SkipLog:
    """Images that could not be evaluated, with the reason (counted and written, never dropped silently)."""

    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, record: Record, reason: str) -> None:
        """Log once per (image, split, reason): the extra steps re-read splits the main pass already logged."""
        item = {"image": record.image, "split": record.split, "reason": reason}
        if item not in self.items:
            self.items.append(item)


def _readable(batch: dict, skipped: SkipLog, records: Sequence[Record]) -> list[int]:
    """Positions in ``batch`` of readable images; the others go to ``skipped`` with LoadGrayd's reason."""
    ok = []
    for j, (index, error) in enumerate(zip(batch["index"].tolist(), batch[ERROR_KEY], strict=True)):
        if error:
            skipped.add(records[index], error)
        else:
            ok.append(j)
    return ok


def iter_image_batches(
    records: Sequence[Record],
    manifest: str | os.PathLike,
    image_size: int,
    load_size: int,
    batch_size: int,
    skipped: SkipLog,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield (record indices, preprocessed images [B, 3, S, S]) through the evaluator's transform
    (:class:`LoadGrayd`); unreadable images go to ``skipped``."""
    items = [{"image": str(image_path(r, manifest)), "index": i} for i, r in enumerate(records)]
    dataset = Dataset(items, transform=LoadGrayd("image", image_size, load_size, ERROR_KEY))
    for batch in DataLoader(dataset, batch_size=batch_size):
        ok = _readable(batch, skipped, records)
        if ok:
            yield batch["index"][ok].tolist(), batch["image"][ok]


class ZeroShotEvaluation:
    """Zero-shot evaluation of one checkpoint on one manifest; :meth:`run` writes everything to ``output_dir``.

    ``evaluator`` is a ``SupervisedEvaluator`` with a :class:`ZeroShotInferer` (the bundle's ``validate#evaluator``,
    its training handlers replaced by ``evaluate.yaml``): its network is the one evaluated, its inferer's class names
    and prompt templates are the ones scored, and every split runs through it in turn.
    """

    def __init__(
        self,
        evaluator: Any,
        manifest: str | os.PathLike,
        output_dir: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        splits: Sequence[str] = ("test", "test_shifted"),
        validation_split: str | None = "validate",
        validation_manifest: str | os.PathLike | None = None,
        modes: Sequence[str] = MODES,
        chunk_size: int = 64,
        n_bootstrap: int = 1000,
        seed: int = 0,
        extras: Sequence[object] = (),
        tracking_uri: str | None = None,
        experiment: str = "vecl_cxr",
        run_name: str = "evaluate",
        artifact_root: str | os.PathLike | None = None,
        thresholds_file: str | os.PathLike | None = None,
        thresholds_mode: str = "pnc",
        thresholds_rule: str = "max_f1",
    ):
        unknown = set(modes) - set(MODES)
        if unknown:
            raise ValueError(f"unknown scoring modes {sorted(unknown)}; use {MODES}")
        if not isinstance(evaluator.inferer, ZeroShotInferer):
            raise TypeError(f"the evaluator's inferer must be a ZeroShotInferer, got {type(evaluator.inferer)}")
        # the weights are loaded in run(): building the workflow stays cheap where it is not run
        self.evaluator, self.model = evaluator, evaluator.network
        self.manifest = Path(manifest)
        self.validation_manifest = Path(validation_manifest) if validation_manifest else self.manifest
        self.class_names = evaluator.inferer.class_names
        self.pos_template, self.neg_template = evaluator.inferer.pos_template, evaluator.inferer.neg_template
        self.output_dir = Path(output_dir)
        self.checkpoint = checkpoint
        self.splits, self.validation_split, self.modes = tuple(splits), validation_split, tuple(modes)
        self.chunk_size, self.n_bootstrap, self.seed = chunk_size, n_bootstrap, seed
        self.extras = tuple(extras)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.artifact_root = artifact_root
        self.skipped = SkipLog()
        self.thresholds_file = Path(thresholds_file) if thresholds_file else None
        self.thresholds_mode, self.thresholds_rule = thresholds_mode, thresholds_rule
        if self.thresholds_file and (thresholds_mode not in self.modes or not validation_split):
            raise ValueError(f"thresholds_file needs a validation_split and {thresholds_mode!r} in modes {self.modes}")

    def write_thresholds(self, y_val: np.ndarray, scores: dict[str, np.ndarray],
                         thresholds: dict[str, metrics.Thresholds]) -> Path:
        """The deployable thresholds (chosen on the validation split) as ``thresholds_file``, beside the model."""
        mode = self.thresholds_mode
        values, figures = metrics.threshold_table(y_val, scores[mode], self.class_names, thresholds[mode],
                                                  self.thresholds_rule)
        digest = sha256_file(self.checkpoint) if self.checkpoint else None
        table = ThresholdTable(values, mode, self.validation_split, self.thresholds_rule, digest,
                               datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), figures)
        path = save_thresholds(table, self.thresholds_file)
        logger.info("thresholds (%s) written to %s", table.describe(), path)
        return path

    def labeled(self, split: str, manifest: Path | None = None) -> Dataset:
        """The ``split`` records with ground truth (:func:`labeled_dataset`); the others are logged as skipped."""
        dataset = labeled_dataset(manifest or self.manifest, self.class_names, split, self.model.image_size,
                                  self.model.load_size, error_key=ERROR_KEY)
        for record in dataset.left_out:
            self.skipped.add(record, f"no ground truth for any of {len(self.class_names)} classes")
        return dataset

    def score(self, split: str, manifest: Path | None = None) -> tuple[list[Record], np.ndarray, dict[str, np.ndarray]]:
        """(scored records, their ground truth [n, C], {mode: scores [n, C]}) of ``split``: one run of the
        evaluator over it; unreadable images are logged as skipped."""
        dataset = self.labeled(split, manifest)
        loader = DataLoader(dataset, batch_size=self.chunk_size)
        kept: list[int] = []
        preds: list[torch.Tensor] = []

        def collect(engine: Any) -> None:
            ok = _readable(engine.state.batch, self.skipped, dataset.records)
            kept.extend(engine.state.batch["index"][ok].tolist())
            preds.append(engine.state.output[CommonKeys.PRED][ok].float().cpu())

        # the evaluator's data is this split: MONAI's Evaluator.run keeps the state's epoch length, so set both
        self.evaluator.data_loader = loader
        self.evaluator.state.epoch_length = len(loader)
        with self.evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect):
            self.evaluator.run()
        records = [dataset.records[i] for i in kept]
        pred = torch.cat(preds) if preds else torch.zeros(0, 2, len(self.class_names))
        scores = {"pos": pred[:, 0].numpy(), "pnc": pnc(pred[:, 0], pred[:, 1]).numpy()}
        return records, class_labels(records, self.class_names), {m: scores[m] for m in self.modes}

    def run(self) -> dict[str, object]:
        """Evaluate every split and mode, run the extras, write outputs, log to MLflow; returns a summary."""
        from monai_vecl.evaluation import reporting

        if self.checkpoint:
            load_weights(self.model, self.checkpoint)
        self.model.eval()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        thresholds: dict[str, metrics.Thresholds] = {}
        n_val = 0
        if self.validation_split:
            val_records, y_val, scores = self.score(self.validation_split, self.validation_manifest)
            n_val = len(val_records)
            thresholds = {m: metrics.choose_thresholds(y_val, s) for m, s in scores.items()} if n_val else {}
            if n_val and self.thresholds_file:
                self.write_thresholds(y_val, scores, thresholds)
            if not n_val:
                logger.warning(
                    "no %r images in %s: val_* (deployable) metrics stay empty",
                    self.validation_split,
                    self.validation_manifest,
                )
        summary: dict[str, object] = {
            "checkpoint": str(self.checkpoint),
            "manifest": str(self.manifest),
            "n_validation_images": n_val,
        }
        flat: dict[str, float] = {}
        for split in self.splits:
            records, y, scores = self.score(split)
            for mode, s in scores.items():
                name = f"{split}_{mode}"
                reporting.write_scores([r.image for r in records], y, s, self.class_names,
                                       self.output_dir / f"{name}_scores.npz")
                table = metrics.evaluate_scores(
                    y, s, self.class_names, thresholds.get(mode), n_bootstrap=self.n_bootstrap, seed=self.seed
                )
                reporting.write_table(
                    table, self.output_dir, name, {"split": split, "mode": mode, "n_images": len(records)}
                )
                reporting.plot_curves(
                    y, s, self.class_names, self.output_dir / f"{name}_curves.png", f"{split}, {mode.upper()}"
                )
                flat |= reporting.flat_metrics(table, name)
                summary[name] = {
                    k: table.macro[k] for k in ("auc", "ap", "oracle_f1", "oracle_mcc", "val_f1", "val_mcc")
                }
        for extra in self.extras:
            result = extra(self)
            flat |= result.get("metrics", {})
            summary |= result.get("summary", {})
        summary["skipped"] = len(self.skipped.items)
        (self.output_dir / "skipped.json").write_text(json.dumps(self.skipped.items, indent=2), encoding="utf-8")
        summary_path = self.output_dir / "summary.json"
        summary_path.write_text(json.dumps(reporting.jsonable(summary), indent=2), encoding="utf-8")
        if self.skipped.items:
            logger.warning(
                "%d images/records skipped, see %s", len(self.skipped.items), self.output_dir / "skipped.json"
            )
        if self.tracking_uri:
            params = {
                "checkpoint": self.checkpoint,
                "manifest": self.manifest,
                "splits": self.splits,
                "class_names": self.class_names,
                "templates": (self.pos_template, self.neg_template),
                "n_bootstrap": self.n_bootstrap,
                "skipped": len(self.skipped.items),
            }
            summary["mlflow_run_id"] = reporting.log_to_mlflow(
                self.tracking_uri, self.experiment, self.run_name, params, flat, self.output_dir, self.artifact_root
            )
            # the local copy also names the run it was logged as
            summary_path.write_text(json.dumps(reporting.jsonable(summary), indent=2), encoding="utf-8")
        return summary


def _load_split(
    ev: ZeroShotEvaluation, split: str, max_images: int | None, seed: int
) -> tuple[list[Record], torch.Tensor]:
    """Up to ``max_images`` (seeded random sample) records of ``split`` with their preprocessed images."""
    records = ev.labeled(split).records
    if max_images is not None and len(records) > max_images:
        pick = np.sort(np.random.default_rng(seed).choice(len(records), max_images, replace=False))
        records = [records[i] for i in pick]
    size, load = ev.model.image_size, ev.model.load_size
    kept, images = [], []
    for idx, batch in iter_image_batches(records, ev.manifest, size, load, ev.chunk_size, ev.skipped):
        kept.extend(idx)
        images.append(batch)
    empty = torch.zeros(0, 3, size, size)
    return [records[i] for i in kept], torch.cat(images) if images else empty


@dataclass
class RetrievalStep:
    """Retrieval-based report generation: each ``split`` image gets the best ``candidate_split`` report."""

    split: str = "test"
    candidate_split: str = "train"
    max_images: int | None = 200
    max_candidates: int | None = 500
    seed: int = 0

    def __call__(self, ev: ZeroShotEvaluation) -> dict[str, dict]:
        from monai_vecl.evaluation.retrieval import report_generation_scores, retrieve

        candidates = list(
            dict.fromkeys(r.report for r in read_manifest(ev.manifest, self.candidate_split) if r.report.strip())
        )
        if self.max_candidates is not None and len(candidates) > self.max_candidates:
            pick = np.random.default_rng(self.seed).choice(len(candidates), self.max_candidates, replace=False)
            candidates = [candidates[i] for i in np.sort(pick)]
        records, images = _load_split(ev, self.split, self.max_images, self.seed)
        with_report = [i for i, r in enumerate(records) if r.report.strip()]
        for i in sorted(set(range(len(records))) - set(with_report)):
            ev.skipped.add(records[i], "retrieval: record has no report text")
        idx, _ = retrieve(ev.model, images[with_report], candidates, ev.chunk_size)
        generated = [candidates[i] for i in idx.tolist()]
        scores = report_generation_scores(generated, [records[i].report for i in with_report])
        examples = [
            {"image": records[i].image, "truth": records[i].report, "retrieved": g}
            for i, g in zip(with_report[:20], generated[:20], strict=True)
        ]
        out = {
            "split": self.split,
            "n_images": len(with_report),
            "n_candidates": len(candidates),
            **scores,
            "examples": examples,
        }
        (ev.output_dir / f"retrieval_{self.split}.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
        return {
            "metrics": {f"retrieval_{self.split}_{k}": v for k, v in scores.items()},
            "summary": {f"retrieval_{self.split}": scores},
        }


@dataclass
class ProbeStep:
    """Linear probe on frozen image features, trained on fractions of ``train_split``, tested on ``splits``."""

    fractions: Sequence[float] = (0.01, 0.1, 1.0)
    train_split: str = "train"
    splits: Sequence[str] = ("test", "test_shifted")
    max_train_images: int | None = None
    n_bootstrap: int = 200
    seed: int = 0

    def _features(self, ev: ZeroShotEvaluation, split: str, max_images: int | None) -> tuple[np.ndarray, np.ndarray]:
        from monai_vecl.evaluation.probe import image_embedding

        records, images = _load_split(ev, split, max_images, self.seed)
        feats = [image_embedding(ev.model, images[i : i + ev.chunk_size]) for i in range(0, len(images), ev.chunk_size)]
        x = torch.cat(feats).numpy() if feats else np.zeros((0, 1))
        return x, class_labels(records, ev.class_names)

    def __call__(self, ev: ZeroShotEvaluation) -> dict[str, dict]:
        from monai_vecl.evaluation import reporting
        from monai_vecl.evaluation.probe import fit_probe

        train_x, train_y = self._features(ev, self.train_split, self.max_train_images)
        flat, summary = {}, {}
        for split in self.splits:
            test_x, test_y = self._features(ev, split, None)
            for fraction in self.fractions:
                result = fit_probe(train_x, train_y, test_x, ev.class_names, fraction, self.seed)
                name = f"probe_{round(fraction * 100)}pct_{split}"
                table = metrics.evaluate_scores(
                    test_y, result.scores, ev.class_names, n_bootstrap=self.n_bootstrap, seed=self.seed
                )
                meta = {
                    "split": split,
                    "train_fraction": fraction,
                    "n_train": result.n_train,
                    "untrained_classes": result.untrained,
                }
                reporting.write_table(table, ev.output_dir, name, meta)
                flat |= reporting.flat_metrics(table, name)
                summary[name] = {
                    "n_train": result.n_train,
                    "auc": table.macro["auc"],
                    "ap": table.macro["ap"],
                    "oracle_f1": table.macro["oracle_f1"],
                    "untrained": result.untrained,
                }
        return {"metrics": flat, "summary": summary}


@dataclass
class FeatureMapStep:
    """t-SNE map of fusion features (paper Fig. 8) for one class of ``split`` (default: the first with both labels)."""

    split: str = "test"
    class_name: str | None = None
    max_images: int | None = 200
    seed: int = 0

    def __call__(self, ev: ZeroShotEvaluation) -> dict[str, dict]:
        from monai_vecl.evaluation.feature_map import feature_map

        records, images = _load_split(ev, self.split, self.max_images, self.seed)
        labels = class_labels(records, ev.class_names)
        names = [self.class_name] if self.class_name else list(ev.class_names)
        for name in names:
            column = labels[:, ev.class_names.index(name)]
            if (column == 1).any() and (column == 0).any():
                path = ev.output_dir / f"tsne_{self.split}_{name.lower().replace(' ', '_')}.png"
                info = feature_map(ev.model, images, column, name, path, ev.pos_template, ev.neg_template, self.seed)
                return {
                    "metrics": {f"tsne_{self.split}_prompt_separation": info["prompt_separation"]},
                    "summary": {"feature_map": {"class": name, "png": path.name, **info}},
                }
        raise ValueError(f"no class among {names} has both positive and negative images in {self.split!r}")
