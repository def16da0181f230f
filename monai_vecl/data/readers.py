"""Readers that turn the on-disk layouts of real chest X-ray data sets into manifest records.

Supported layouts (as distributed by their owners; nothing here downloads anything):

- MIMIC-CXR-JPG: ``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg``, ``mimic-cxr-2.0.0-metadata.csv[.gz]``,
  ``mimic-cxr-2.0.0-split.csv[.gz]``, optional ``mimic-cxr-2.0.0-chexpert.csv[.gz]``, and the MIMIC-CXR
  report files ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` (under the same root or ``reports_dir``).
- CheXpert test/validation labels: a CSV with ``Path`` (official ``valid.csv``) or ``Study`` (CheXlocalize
  ``test_labels.csv``) plus one 0/1 column per observation.
- ChestX-ray14 (NIH): ``test_list.txt`` and ``Data_Entry_2017*.csv``; images anywhere below the root
  (``images/`` or ``images_0NN/images/``).
- Open-I (Indiana): PNG images and the ``ecgen-radiology`` report XML files (a folder, or the ``.tgz`` as
  distributed, e.g. the copy torchxrayvision ships).
- ChestX-Det10: ``test.json`` (``file_name``, ``syms``, ``boxes``) and the image folder.

Ground truth (``Record.findings``) is keyed by the data set's zero-shot class names
(:data:`monai_vecl.taxonomy.ZERO_SHOT_CLASSES`). Nothing is dropped silently: every listed image that
is missing, unreadable, not frontal or has a malformed row is counted in a :class:`ReaderReport`
with a few examples.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from monai_vecl.data.manifest import Record, write_manifest
from monai_vecl.reports import report_sentences
from monai_vecl.taxonomy import ZERO_SHOT_CLASSES

FRONTAL_VIEWS = ("PA", "AP")
UNCERTAIN_POLICIES = ("exclude", "zero", "one")
_EXAMPLES = 5

#: CheXpert observation column → CheXpert zero-shot class name.
CHEXPERT_COLUMNS = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Pulmonary Consolidation",
    "Edema": "Pulmonary Edema", "Pleural Effusion": "Pleural Effusion",
}
#: NIH ChestX-ray14 label → class name (official order of ZERO_SHOT_CLASSES["chestxray14"]).
CHESTXRAY14_LABELS = dict(zip(
    ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
     "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"),
    ZERO_SHOT_CLASSES["chestxray14"],
))
#: ChestX-Det10 category → class name.
CHESTXDET10_LABELS = {
    "Atelectasis": "Atelectasis", "Calcification": "Tissue Calcification", "Consolidation": "Pulmonary Consolidation",
    "Effusion": "Pleural Effusion", "Emphysema": "Pulmonary Emphysema", "Fibrosis": "Fibrosis",
    "Fracture": "Bone Fracture", "Mass": "Pulmonary Mass", "Nodule": "Lung Nodule", "Pneumothorax": "Pneumothorax",
}
#: Open-I MeSH major heading (text before the first "/", lower case) → Open-I class name. An approximation
#: of the class lists other projects derived from the same terms; "Thickening/pleura..." is handled apart.
OPENI_MESH = {
    "atelectasis": "Atelectasis", "pulmonary atelectasis": "Atelectasis", "cardiomegaly": "Cardiomegaly",
    "pleural effusion": "Pleural Effusion", "infiltrate": "Lung Infiltration", "mass": "Pulmonary Mass",
    "nodule": "Lung Nodule", "multiple pulmonary nodules": "Lung Nodule", "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax", "pulmonary edema": "Pulmonary Edema", "edema": "Pulmonary Edema",
    "pulmonary emphysema": "Pulmonary Emphysema", "emphysema": "Pulmonary Emphysema",
    "pulmonary fibrosis": "Pulmonary Fibrosis", "fibrosis": "Pulmonary Fibrosis",
    "pleural thickening": "Pleural Thickening", "hernia, hiatal": "Hernia", "hernia, diaphragmatic": "Hernia",
    "bullous emphysema": "Pulmonary Emphysema",
    "fractures, bone": "Bone Fracture", "opacity": "Lung Opacity", "lesion": "Abnormal Lesion",
    "calcified granuloma": "Calcified Granuloma", "granuloma": "Lung Granuloma",
    "granulomatous disease": "Lung Granuloma",
}


@dataclass
class ReaderReport:
    """What a reader read and what it could not use, with counts and a few examples per kind."""

    dataset: str
    records: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, example: str) -> None:
        """Count one problem of ``kind`` (e.g. ``missing_image``) and keep the first few examples."""
        self.counts[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < _EXAMPLES:
            shown.append(example)

    @property
    def skipped(self) -> int:
        """Listed items that did not become records (everything except notes that keep the record)."""
        return sum(n for kind, n in self.counts.items() if kind not in _KEPT_KINDS)

    def summary(self) -> str:
        lines = [f"{self.dataset}: {self.records} records, {self.skipped} listed items skipped"]
        for kind, n in sorted(self.counts.items()):
            kept = " (record kept)" if kind in _KEPT_KINDS else ""
            lines.append(f"  {kind}: {n}{kept}, e.g. {', '.join(self.examples[kind])}")
        return "\n".join(lines)


# Problems after which the record is still produced (with a gap that the note explains).
_KEPT_KINDS = frozenset({"missing_report", "uncertain_label_excluded", "unknown_label"})


def _open_text(path: Path) -> io.TextIOBase:
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz" else open(
        path, encoding="utf-8", newline=""
    )


def _find(root: Path, name: str) -> Path:
    """``root/name`` or ``root/name.gz``; a clear error if neither exists."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: expected {name} (or {name}.gz)")


def _image_ok(path: Path, verify: bool, report: ReaderReport) -> bool:
    """Count a missing or (with ``verify``) undecodable image; True if the image can be used."""
    if not path.is_file():
        report.note("missing_image", str(path))
        return False
    if verify:
        from PIL import Image

        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as err:  # PIL raises many exception types for corrupt files
            report.note("unreadable_image", f"{path} ({type(err).__name__})")
            return False
    return True


def _sentences(report_text: str) -> list[str]:
    return report_sentences(report_text) if report_text else []


def read_mimic_cxr(
    root: str | os.PathLike,
    reports_dir: str | os.PathLike | None = None,
    splits: Iterable[str] | None = None,
    frontal_only: bool = True,
    uncertain: str = "exclude",
    verify: bool = False,
) -> tuple[list[Record], ReaderReport]:
    """MIMIC-CXR-JPG images with their reports; CheXpert-labeler findings when the chexpert CSV is present.

    ``uncertain`` decides what a CheXpert ``-1.0`` becomes: left out of ``findings`` (``exclude``), 0 or 1.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    root = Path(root)
    reports_root = Path(reports_dir) if reports_dir else root
    report = ReaderReport("mimic-cxr")
    with _open_text(_find(root, "mimic-cxr-2.0.0-split.csv")) as f:
        split_of = {row["dicom_id"]: row["split"] for row in csv.DictReader(f)}
    labels: dict[str, dict[str, str]] = {}
    try:
        with _open_text(_find(root, "mimic-cxr-2.0.0-chexpert.csv")) as f:
            labels = {row["study_id"]: row for row in csv.DictReader(f)}
    except FileNotFoundError:
        pass
    wanted = set(splits) if splits else None
    records: list[Record] = []
    report_cache: dict[Path, str | None] = {}
    with _open_text(_find(root, "mimic-cxr-2.0.0-metadata.csv")) as f:
        for row in csv.DictReader(f):
            dicom_id, subject, study = row.get("dicom_id"), row.get("subject_id"), row.get("study_id")
            if not (dicom_id and subject and study):
                report.note("bad_row", str(row)[:120])
                continue
            split = split_of.get(dicom_id)
            if split is None:
                report.note("not_in_split_file", dicom_id)
                continue
            if wanted is not None and split not in wanted:
                continue
            view = row.get("ViewPosition", "")
            if frontal_only and view not in FRONTAL_VIEWS:
                report.note("not_frontal", f"{dicom_id} ({view or 'no view'})")
                continue
            folder = Path("files") / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            image = root / folder / f"{dicom_id}.jpg"
            if not _image_ok(image, verify, report):
                continue
            txt = reports_root / folder.parent / f"s{study}.txt"
            if txt not in report_cache:
                report_cache[txt] = txt.read_text(encoding="utf-8", errors="replace") if txt.is_file() else None
            text = report_cache[txt]
            if text is None:
                report.note("missing_report", str(txt))
            findings = _chexpert_findings(labels.get(study), uncertain, report, study) if labels else None
            records.append(Record(
                image=str(image.resolve()), study_id=study, patient_id=subject, split=split, view=view or "PA",
                report=text or "", sentences=_sentences(text or ""), findings=findings,
                extra={"dicom_id": dicom_id},
            ))
    report.records = len(records)
    return records, report


def _chexpert_findings(
    row: dict[str, str] | None, uncertain: str, report: ReaderReport, key: str
) -> dict[str, int] | None:
    """CheXpert 1.0/0.0/-1.0/blank cells → 0/1 per CheXpert class (blank = not mentioned = 0)."""
    if row is None:
        report.note("no_labels", key)
        return None
    out: dict[str, int] = {}
    for column, name in CHEXPERT_COLUMNS.items():
        cell = (row.get(column) or "").strip()
        try:
            value = float(cell) if cell else 0.0
        except ValueError:
            report.note("bad_label", f"{key}: {column}={cell!r}")
            continue
        if value == -1.0:
            if uncertain == "exclude":
                report.note("uncertain_label_excluded", f"{key}: {column}")
                continue
            value = 1.0 if uncertain == "one" else 0.0
        out[name] = int(value == 1.0)
    return out


def read_chexpert(
    root: str | os.PathLike, labels_csv: str = "test_labels.csv", frontal_only: bool = True, verify: bool = False
) -> tuple[list[Record], ReaderReport]:
    """CheXpert test (CheXlocalize ``test_labels.csv``, column ``Study``) or validation (``valid.csv``, ``Path``)."""
    root = Path(root)
    report = ReaderReport("chexpert")
    records: list[Record] = []
    with _open_text(_find(root, labels_csv)) as f:
        reader = csv.DictReader(f)
        path_column = next((c for c in ("Path", "Study") if c in (reader.fieldnames or [])), None)
        if path_column is None:
            raise ValueError(f"{root / labels_csv}: no 'Path' or 'Study' column (got {reader.fieldnames})")
        for row in reader:
            rel = (row.get(path_column) or "").strip()
            match = re.search(r"(patient\d+)/(study\d+)/", rel)
            if not match:
                report.note("bad_row", rel or str(row)[:120])
                continue
            lateral = row.get("Frontal/Lateral", "").lower() == "lateral" or "lateral" in Path(rel).name
            if frontal_only and lateral:
                report.note("not_frontal", rel)
                continue
            # official CSVs name files from the archive's top folder ("CheXpert-v1.0/valid/...")
            candidates = [root / rel, root / Path(*Path(rel).parts[1:])] if len(Path(rel).parts) > 1 else [root / rel]
            image = next((c for c in candidates if c.is_file()), candidates[0])
            if not _image_ok(image, verify, report):
                continue
            findings = _chexpert_findings(row, "zero", report, rel)
            records.append(Record(
                image=str(image.resolve()), study_id=f"{match[1]}/{match[2]}", patient_id=match[1], split="test",
                view=row.get("AP/PA") or "unknown", findings=findings,
            ))
    report.records = len(records)
    return records, report


def _index_images(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """File name → path for every image below ``root`` (NIH and Det10 ship images in varying folders)."""
    index: dict[str, Path] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(suffixes):
                index.setdefault(name, Path(folder) / name)
    return index


def read_chestxray14(
    root: str | os.PathLike, list_file: str = "test_list.txt", verify: bool = False
) -> tuple[list[Record], ReaderReport]:
    """NIH ChestX-ray14 images named in ``list_file`` with their 14 labels from ``Data_Entry_2017*.csv``."""
    root = Path(root)
    report = ReaderReport("chestxray14")
    entries = sorted(root.glob("Data_Entry_2017*.csv"))
    if not entries:
        raise FileNotFoundError(f"{root}: expected Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv)")
    with _open_text(entries[0]) as f:
        rows = {row["Image Index"]: row for row in csv.DictReader(f) if row.get("Image Index")}
    names = [line.strip() for line in _find(root, list_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    index = _index_images(root, (".png",))
    records: list[Record] = []
    for name in names:
        row = rows.get(name)
        if row is None:
            report.note("not_in_data_entry", name)
            continue
        image = index.get(name, root / "images" / name)
        if not _image_ok(image, verify, report):
            continue
        present = set()
        for label in (row.get("Finding Labels") or "").split("|"):
            label = label.strip()
            if label in CHESTXRAY14_LABELS:
                present.add(CHESTXRAY14_LABELS[label])
            elif label != "No Finding":
                report.note("unknown_label", f"{name}: {label!r}")
        records.append(Record(
            image=str(image.resolve()), study_id=Path(name).stem, patient_id=row.get("Patient ID", ""), split="test",
            view=row.get("View Position") or "PA", findings={c: int(c in present) for c in ZERO_SHOT_CLASSES["chestxray14"]},
        ))
    report.records = len(records)
    return records, report


def read_chestxdet10(
    root: str | os.PathLike, annotations: str = "test.json", verify: bool = False
) -> tuple[list[Record], ReaderReport]:
    """ChestX-Det10 test images with their 10 categories.

    Boxes go to ``extra["boxes"]`` as ``{"label": category, "finding": class name or None, "box": [x0, y0, x1, y1]}``
    (pixels), the region truth the grounding evaluation reads (docs/grounding.md).
    """
    root = Path(root)
    report = ReaderReport("chestxdet10")
    try:
        items = json.loads(_find(root, annotations).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{root / annotations}: not valid JSON: {err}") from err
    index = _index_images(root, (".png", ".jpg"))
    records: list[Record] = []
    for item in items:
        name = item.get("file_name") if isinstance(item, dict) else None
        syms = item.get("syms", []) if isinstance(item, dict) else None
        if not name or not isinstance(syms, list):
            report.note("bad_row", str(item)[:120])
            continue
        image = index.get(name, root / name)
        if not _image_ok(image, verify, report):
            continue
        present = set()
        for sym in syms:
            if sym in CHESTXDET10_LABELS:
                present.add(CHESTXDET10_LABELS[sym])
            else:
                report.note("unknown_label", f"{name}: {sym!r}")
        records.append(Record(
            image=str(image.resolve()), study_id=Path(name).stem, patient_id=Path(name).stem, split="test",
            findings={c: int(c in present) for c in ZERO_SHOT_CLASSES["chestxdet10"]},
            extra={"boxes": [{"label": s, "finding": CHESTXDET10_LABELS.get(s), "box": b}
                             for s, b in zip(syms, item.get("boxes", []))]},
        ))
    report.records = len(records)
    return records, report


def _openi_xml(reports: Path) -> Iterator[tuple[str, bytes]]:
    """(name, XML bytes) of every report, from a folder or from the distributed ``.tgz``."""
    if reports.is_dir():
        for path in sorted(reports.rglob("*.xml")):
            yield path.name, path.read_bytes()
        return
    with tarfile.open(reports) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xml"):
                handle = tar.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read()


def read_openi(
    root: str | os.PathLike, reports: str | os.PathLike | None = None, images_dir: str = "NLMCXR_png",
    verify: bool = False,
) -> tuple[list[Record], ReaderReport]:
    """Open-I: one record per report image (``parentImage``), findings from the report's MeSH major terms.

    Open-I XML carries no view position, so frontal and lateral images both appear (``view="unknown"``).
    """
    root = Path(root)
    reports_path = Path(reports) if reports else root / "ecgen-radiology"
    if not reports_path.exists():
        raise FileNotFoundError(f"Open-I reports not found at {reports_path} (a folder of XML or the .tgz)")
    report = ReaderReport("openi")
    records: list[Record] = []
    for name, data in _openi_xml(reports_path):
        try:
            xml = ET.fromstring(data)
        except ET.ParseError as err:
            report.note("unreadable_report", f"{name} ({err})")
            continue
        uid = xml.find("uId")
        study = uid.get("id") if uid is not None else Path(name).stem
        sections = {(t.get("Label") or "").upper(): (t.text or "").strip() for t in xml.iter("AbstractText")}
        text = "\n\n".join(f"{label}: {sections[label]}" for label in ("FINDINGS", "IMPRESSION") if sections.get(label))
        present = set()
        for major in xml.iter("major"):
            term = (major.text or "").strip().lower()
            heading = term.split("/")[0].strip()
            if heading in OPENI_MESH:
                present.add(OPENI_MESH[heading])
            elif heading == "thickening" and "pleura" in term:
                present.add("Pleural Thickening")
        findings = {c: int(c in present) for c in ZERO_SHOT_CLASSES["openi"]}
        images = [p.get("id") for p in xml.iter("parentImage") if p.get("id")]
        if not images:
            report.note("no_images", study)
        for image_id in images:
            image = root / images_dir / f"{image_id}.png"
            if not _image_ok(image, verify, report):
                continue
            records.append(Record(
                image=str(image.resolve()), study_id=study, patient_id=study, split="test", view="unknown",
                report=text, sentences=_sentences(text), findings=dict(findings),
            ))
    report.records = len(records)
    return records, report


READERS: dict[str, Callable[..., tuple[list[Record], ReaderReport]]] = {
    "mimic-cxr": read_mimic_cxr, "chexpert": read_chexpert, "chestxray14": read_chestxray14,
    "openi": read_openi, "chestxdet10": read_chestxdet10,
}


def read_dataset(name: str, root: str | os.PathLike, **kwargs) -> tuple[list[Record], ReaderReport]:
    """Dispatch to the reader of data set ``name`` (one of :data:`READERS`)."""
    if name not in READERS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(READERS)}")
    return READERS[name](root, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Read a real chest X-ray data set into a manifest.")
    parser.add_argument("dataset", choices=sorted(READERS))
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="manifest.jsonl to write")
    parser.add_argument("--verify", action="store_true", help="decode every image header (slower)")
    args = parser.parse_args(argv)
    records, report = read_dataset(args.dataset, args.root, verify=args.verify)
    write_manifest(records, args.out)
    print(report.summary())


if __name__ == "__main__":
    main()
