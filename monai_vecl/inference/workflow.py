"""The pieces of the bundle's inference workflow (``configs/inference.yaml``) around the MONAI engine: the images to
score (:func:`list_images`), the calibrated thresholds (:func:`calibrated_thresholds`) and the writer of per-image
scores and present/absent calls (:class:`ZeroShotWriter`).

Nothing is dropped silently: files of a folder that are not images are counted by suffix, unreadable images are
listed with their reason and counted per reason (``LoadGrayd(error_key=...)`` marks them).
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.utils import CommonKeys

from monai_vecl.data.manifest import image_path, read_manifest
from monai_vecl.data.preprocess import is_dicom
from monai_vecl.files import atomic_open, sha256_file, write_json
from monai_vecl.inference.engine import ERROR_KEY
from monai_vecl.inference.zero_shot import MODES, pnc
from monai_vecl.taxonomy import class_key
from monai_vecl.thresholds import ThresholdTable, load_checked

__all__ = ["IMAGE_SUFFIXES", "ImageInputs", "ZeroShotWriter", "calibrated_thresholds", "list_images"]

logger = logging.getLogger(__name__)

#: Suffixes scored in a folder (case-insensitive); a file with another name is scored when it is a DICOM file.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
FORMAT = 1


@dataclass(frozen=True)
class ImageInputs:
    """What an inference run scores: ``items`` (``{"image": path, "name": name in the outputs}``), where they come
    from, and the files of the folder that are not images, counted by suffix."""

    items: list[dict[str, str]]
    source: str
    ignored: dict[str, int] = field(default_factory=dict)


def list_images(dataset_dir: str | os.PathLike, manifest: str | os.PathLike | None = None, split: str | None = None,
                suffixes: Sequence[str] = IMAGE_SUFFIXES) -> ImageInputs:
    """Every image below ``dataset_dir`` in path order (a PNG/JPEG/DICOM suffix, or a DICOM file by its content),
    named by its path relative to the folder; with ``manifest``, the records of that ``manifest.jsonl`` instead
    (of ``split`` when given), named as the manifest names them. Nothing to score is an error naming the source."""
    if manifest is not None:
        records = read_manifest(manifest, split=split)
        items = [{"image": str(image_path(r, manifest)), "name": r.image} for r in records]
        source, ignored = str(manifest) + (f" (split {split})" if split else ""), Counter()
    else:
        root = Path(dataset_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset_dir {root} is not a folder (give --dataset_dir <folder of images> "
                                    "or --input_manifest <manifest.jsonl>)")
        wanted = {s.lower() for s in suffixes}
        items, ignored, source = [], Counter(), str(root)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.suffix.lower() in wanted or is_dicom(path):
                items.append({"image": str(path), "name": path.relative_to(root).as_posix()})
            else:
                ignored[path.suffix.lower() or "(no suffix)"] += 1
    if not items:
        raise ValueError(f"{source}: no images to score (suffixes {list(suffixes)} or DICOM files); "
                         f"files that are not images: {dict(ignored)}")
    return ImageInputs(items, source, dict(sorted(ignored.items())))


def calibrated_thresholds(thresholds_file: str | os.PathLike | None, score_mode: str,
                          model_file: str | os.PathLike | None = None) -> ThresholdTable | None:
    """The thresholds calibrated for these weights and this score mode; None (and a warning) when there are none.

    Thresholds chosen for another score mode or other weights would be silently wrong, so either mismatch raises.
    """
    digest = sha256_file(model_file) if model_file is not None and Path(model_file).is_file() else None
    table = load_checked(thresholds_file, score_mode, digest, model_name=str(model_file)) if thresholds_file else None
    if table is None:
        logger.warning("no calibrated thresholds at %s: scores without present/absent calls", thresholds_file)
    return table


class ZeroShotWriter:
    """Writes what the evaluator scored when it completes: ``scores.csv`` (a row per image and finding: POS, PNC,
    threshold, call; a row per unreadable image with its reason) and ``scores.json`` (the same per image, with the
    counts, the unreadable images per reason, the ignored files and where the thresholds come from).

    The evaluator's ``pred`` is the :class:`~monai_vecl.inference.engine.ZeroShotInferer` output [N, 2, C] (entail
    probabilities of "There is X" and "There is no X"), with ``decollate=False``. The call compares the
    ``score_mode`` score with the finding's calibrated threshold (``score >= threshold`` → present); a finding
    without one gets no call.
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str], score_mode: str = "pnc",
                 thresholds: ThresholdTable | None = None, inputs: ImageInputs | None = None, name_key: str = "name",
                 error_key: str = ERROR_KEY):
        if score_mode not in MODES:
            raise ValueError(f"score_mode must be one of {MODES}, got {score_mode!r}")
        self.output_dir, self.class_names, self.score_mode = Path(output_dir), tuple(class_names), score_mode
        self.thresholds, self.inputs, self.name_key, self.error_key = thresholds, inputs, name_key, error_key
        matched = {name: class_key(name, thresholds.thresholds) if thresholds else None for name in self.class_names}
        self.threshold_of = {name: thresholds.thresholds[key] if key else None for name, key in matched.items()}
        self.images: list[dict[str, Any]] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda _: self.images.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.write())

    def collect(self, engine: Any) -> None:
        """Keep the scores (or the reason it could not be read) of every image of the iteration's batch."""
        batch, output = engine.state.batch, engine.state.output
        if not isinstance(output, dict):
            raise TypeError("ZeroShotWriter needs the evaluator's batch output: set the evaluator's decollate to false")
        pred = output[CommonKeys.PRED].detach().float().cpu()
        p_pos, p_neg = pred[:, 0], pred[:, 1]
        p_pnc = pnc(p_pos, p_neg)
        for i, (name, error) in enumerate(zip(batch[self.name_key], batch[self.error_key], strict=True)):
            if error:
                self.images.append({"image": name, "status": "unreadable", "reason": error})
                continue
            findings = {}
            for c, finding in enumerate(self.class_names):
                pos, contrast = float(p_pos[i, c]), float(p_pnc[i, c])
                threshold = self.threshold_of[finding]
                score = contrast if self.score_mode == "pnc" else pos
                call = None if threshold is None else ("present" if score >= threshold else "absent")
                findings[finding] = {"pos": pos, "pnc": contrast, "threshold": threshold, "call": call}
            self.images.append({"image": name, "status": "scored", "findings": findings})

    def counts(self) -> dict[str, Any]:
        """Images listed, scored, unreadable (in total and per reason); files of the folder that are not images."""
        reasons = Counter(r["reason"] for r in self.images if r["status"] == "unreadable")
        return {"images": len(self.images), "scored": len(self.images) - sum(reasons.values()),
                "unreadable": sum(reasons.values()), "unreadable_by_reason": dict(reasons.most_common()),
                "ignored_files": dict(self.inputs.ignored) if self.inputs else {}}

    def write(self) -> Path:
        """Write ``scores.csv`` and ``scores.json`` into ``output_dir`` (atomically); returns the JSON's path."""
        counts = self.counts()
        table = self.thresholds
        provenance = None if table is None else {"description": table.describe(), "model_sha256": table.model_sha256}
        summary = {
            "format": FORMAT,
            "source": self.inputs.source if self.inputs else None,
            "score_mode": self.score_mode,
            "class_names": list(self.class_names),
            "thresholds": provenance,
            "counts": counts,
            "images": self.images,
        }
        self._write_csv(self.output_dir / "scores.csv")
        path = write_json(self.output_dir / "scores.json", summary)
        logger.info("scored %d of %d images into %s", counts["scored"], counts["images"], self.output_dir)
        if counts["unreadable"]:
            logger.warning("%d images unreadable: %s", counts["unreadable"], counts["unreadable_by_reason"])
        return path

    def _write_csv(self, path: Path) -> None:
        with atomic_open(path, "w") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(["image", "status", "reason", "finding", "pos", "pnc", "threshold", "call"])
            for image in self.images:
                if image["status"] == "unreadable":
                    out.writerow([image["image"], "unreadable", image["reason"], "", "", "", "", ""])
                    continue
                for finding, s in image["findings"].items():
                    out.writerow([image["image"], "scored", "", finding, f"{s['pos']:.6f}", f"{s['pnc']:.6f}",
                                  "" if s["threshold"] is None else s["threshold"], s["call"] or ""])
