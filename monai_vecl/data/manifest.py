"""One manifest schema for every data set: a JSON-lines file, one record per image.

Image paths are stored relative to the manifest's folder so a data set can be moved.
Readers for real data sets (MIMIC-CXR-JPG, CheXpert, ChestX-ray14, Open-I, ChestX-Det10)
and the phantom generator all produce :class:`Record` lists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from monai_vecl.files import atomic_open
from monai_vecl.taxonomy import class_key, image_label_set, normalize_label_set

SPLITS = ("train", "validate", "test", "test_shifted")


@dataclass
class Record:
    """One image with its report and labels.

    ``sentence_labels[i]`` holds the signed labels of ``sentences[i]`` (``None`` when not labeled yet);
    ``findings`` maps a finding or class name to 0/1 ground truth where a data set has it.
    """

    image: str
    study_id: str
    patient_id: str
    split: str
    view: str = "PA"
    report: str = ""
    sentences: list[str] = field(default_factory=list)
    sentence_labels: list[list[str]] | None = None
    findings: dict[str, int] | None = None
    label_source: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"record {self.image!r}: split must be one of {SPLITS}, got {self.split!r}")
        if self.sentence_labels is not None:
            if len(self.sentence_labels) != len(self.sentences):
                raise ValueError(
                    f"record {self.image!r}: {len(self.sentences)} sentences but "
                    f"{len(self.sentence_labels)} label sets (labels must align with sentences by index)"
                )
            self.sentence_labels = [list(normalize_label_set(s)) for s in self.sentence_labels]

    @property
    def image_labels(self) -> tuple[str, ...]:
        """Union of the sentence labels (empty if unlabeled)."""
        return image_label_set(self.sentence_labels or [])

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


_FIELDS = {f.name for f in fields(Record)}


def write_manifest(records: Iterable[Record], path: str | os.PathLike) -> Path:
    """Write records atomically (:func:`monai_vecl.files.atomic_open`): a killed writer never leaves half a manifest."""
    with atomic_open(path, "w") as f:
        for record in records:
            f.write(record.to_json() + "\n")
    return Path(path)


def iter_manifest(path: str | os.PathLike) -> Iterator[Record]:
    """Yield records; a malformed line raises ``ValueError`` naming the file and line number."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                unknown = set(data) - _FIELDS
                if unknown:
                    raise ValueError(f"unknown fields {sorted(unknown)}")
                yield Record(**data)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{path}:{line_no}: bad manifest record: {err}") from err


def read_manifest(path: str | os.PathLike, split: str | None = None) -> list[Record]:
    """All records of a manifest, optionally only one split."""
    return [r for r in iter_manifest(path) if split is None or r.split == split]


def image_path(record: Record, manifest_path: str | os.PathLike) -> Path:
    """Absolute path of a record's image (relative paths resolve against the manifest's folder)."""
    p = Path(record.image)
    return p if p.is_absolute() else Path(manifest_path).resolve().parent / p


def class_labels(records: Sequence[Record], class_names: Sequence[str]) -> np.ndarray:
    """Ground truth [N, C] from ``record.findings``: 1/0, -1 uncertain, NaN where the record has no value for
    the class (matched by :func:`monai_vecl.taxonomy.class_key`)."""
    out = np.full((len(records), len(class_names)), np.nan)
    for i, record in enumerate(records):
        findings = record.findings or {}
        for c, name in enumerate(class_names):
            key = class_key(name, findings)
            if key is not None:
                out[i, c] = findings[key]
    return out
