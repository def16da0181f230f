"""The VECL label taxonomy: 24 chest X-ray findings, their signed labels, and zero-shot class lists.

Codes, names and the per-dataset class lists follow the VECL paper (Table 4 and its
labeling prompt) and its reference code (WVeLong/VECL, MIT). A *signed label* is a
string: ``"2+"`` (positive mention of finding 2), ``"3-"`` (negative mention), or
``"25"`` (No Mention: another finding, normal anatomy or an unrelated sentence).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

#: Finding names by 1-based code; 25 is No Mention.
FINDINGS: dict[int, str] = {
    1: "Atelectasis",
    2: "Pleural Effusion",
    3: "Pneumothorax",
    4: "Cardiomegaly",
    5: "Lung Opacity",
    6: "Pneumonia",
    7: "Pulmonary Mass",
    8: "Edema",
    9: "Lung Nodule",
    10: "Lung Infiltration",
    11: "Fibrosis",
    12: "Emphysema",
    13: "Pleural Thickening",
    14: "Hernia",
    15: "Consolidation",
    16: "Bone Fracture",
    17: "Enlarged Cardiomediastinum",
    18: "Pleural Other",
    19: "Lung Lesion",
    20: "Support Devices",
    21: "Abnormal Lesion",
    22: "Lung Granuloma",
    23: "Calcified Granuloma",
    24: "Tissue Calcification",
}
NO_MENTION = 25
NUM_FINDINGS = len(FINDINGS)
NO_MENTION_LABEL = str(NO_MENTION)

#: All signed labels in multi-hot order: ``1+ .. 24+``, ``1- .. 24-``, ``25``.
SIGNED_LABELS: tuple[str, ...] = (
    tuple(f"{k}+" for k in FINDINGS) + tuple(f"{k}-" for k in FINDINGS) + (NO_MENTION_LABEL,)
)
NUM_SIGNED = len(SIGNED_LABELS)  # 49
LABEL_INDEX: dict[str, int] = {label: i for i, label in enumerate(SIGNED_LABELS)}
NO_MENTION_INDEX = LABEL_INDEX[NO_MENTION_LABEL]

_CODE_BY_NAME = {name.lower(): code for code, name in FINDINGS.items()}

#: Lexicon used by the rules labeler and by prompts: lower-case surface forms per finding.
SYNONYMS: dict[int, tuple[str, ...]] = {
    1: ("atelectasis", "atelectatic", "collapse", "volume loss"),
    2: ("pleural effusion", "effusion", "effusions", "pleural fluid", "blunting of the costophrenic"),
    3: ("pneumothorax", "pneumothoraces", "pneumothoraxes"),
    4: ("cardiomegaly", "enlarged heart", "heart is enlarged", "heart size is enlarged", "cardiac enlargement"),
    5: ("opacity", "opacities", "opacification", "haziness", "airspace disease"),
    6: ("pneumonia", "infectious process", "infection"),
    7: ("mass", "masses"),
    8: ("edema", "oedema", "vascular congestion", "interstitial edema", "pulmonary edema", "fluid overload",
        "cephalization", "vascular prominence", "venous hypertension"),
    9: ("nodule", "nodules", "nodular"),
    10: ("infiltrate", "infiltrates", "infiltration"),
    11: ("fibrosis", "fibrotic", "scarring"),
    12: ("emphysema", "emphysematous", "hyperinflation", "hyperinflated"),
    13: ("pleural thickening", "thickened pleura"),
    14: ("hernia", "hiatal hernia"),
    15: ("consolidation", "consolidations", "consolidative"),
    16: ("fracture", "fractures", "fractured"),
    17: ("enlarged cardiomediastinum", "mediastinal widening", "widened mediastinum", "mediastinum is widened"),
    18: ("pleural abnormality", "pleural plaque", "pleural plaques"),
    19: ("lung lesion", "pulmonary lesion", "cavitary lesion"),
    20: ("support device", "tube", "catheter", "line", "pacemaker", "wires", "sternotomy", "picc", "port",
         "clips", "surgical clips", "stent", "defibrillator", "pacer"),
    21: ("lesion", "lesions"),
    22: ("granuloma", "granulomas", "granulomatous"),
    23: ("calcified granuloma", "calcified granulomas"),
    24: ("calcification", "calcifications", "calcified"),
}

#: Zero-shot class names used in prompts, per evaluation set (docs/method.md §Taxonomy; VECL paper).
ZERO_SHOT_CLASSES: dict[str, tuple[str, ...]] = {
    "chexpert": ("Atelectasis", "Cardiomegaly", "Pulmonary Consolidation", "Pulmonary Edema", "Pleural Effusion"),
    "chestxray14": (
        "Atelectasis", "Cardiomegaly", "Pleural Effusion", "Pulmonary Infiltration", "Pulmonary Mass",
        "Lung Nodule", "Pneumonia", "Pneumothorax", "Pulmonary Consolidation", "Pulmonary Edema",
        "Pulmonary Emphysema", "Fibrosis", "Pleural Thickening", "Hernia",
    ),
    "chestxdet10": (
        "Atelectasis", "Tissue Calcification", "Pulmonary Consolidation", "Pleural Effusion",
        "Pulmonary Emphysema", "Fibrosis", "Bone Fracture", "Pulmonary Mass", "Lung Nodule", "Pneumothorax",
    ),
    "openi": (
        "Atelectasis", "Cardiomegaly", "Pleural Effusion", "Lung Infiltration", "Pulmonary Mass", "Lung Nodule",
        "Pneumonia", "Pneumothorax", "Pulmonary Edema", "Pulmonary Emphysema", "Pulmonary Fibrosis",
        "Pleural Thickening", "Hernia", "Bone Fracture", "Lung Opacity", "Abnormal Lesion", "Calcified Granuloma",
        "Lung Granuloma",
    ),
}

#: Prompt names that are not taxonomy names, mapped to their finding code.
PROMPT_NAME_CODES: dict[str, int] = {
    "Pulmonary Consolidation": 15,
    "Pulmonary Edema": 8,
    "Pulmonary Infiltration": 10,
    "Pulmonary Emphysema": 12,
    "Pulmonary Fibrosis": 11,
}


def finding_code(name: str) -> int:
    """Finding code for a taxonomy name or a zero-shot prompt name (case-insensitive)."""
    for table in (_CODE_BY_NAME, {k.lower(): v for k, v in PROMPT_NAME_CODES.items()}):
        if name.lower() in table:
            return table[name.lower()]
    raise KeyError(f"unknown finding name {name!r}")


def class_key(name: str, keys: Iterable[str]) -> str | None:
    """The key of ``keys`` that names the same finding as class ``name``: the same name, else the same taxonomy
    code (prompt name "Pulmonary Edema" ↔ finding "Edema"); ``None`` when none does. The one resolver of class
    names for training, evaluation and deployment."""
    keys = list(keys)
    if name in keys:
        return name
    try:
        code = finding_code(name)
    except KeyError:
        return None
    for key in keys:
        try:
            if finding_code(key) == code:
                return key
        except KeyError:
            continue
    return None


def positive(code: int) -> str:
    """Signed label for a positive mention of ``code``."""
    _check_code(code)
    return f"{code}+"


def negative(code: int) -> str:
    """Signed label for a negative mention of ``code``."""
    _check_code(code)
    return f"{code}-"


def opposite(label: str) -> str:
    """``k+`` ↔ ``k-``; No Mention is its own opposite."""
    validate_label(label)
    if label == NO_MENTION_LABEL:
        return label
    return label[:-1] + ("-" if label.endswith("+") else "+")


def code_of(label: str) -> int:
    """Finding code of a signed label (25 for No Mention)."""
    validate_label(label)
    return int(label.rstrip("+-"))


def validate_label(label: str) -> str:
    """Return ``label`` if it is one of the 49 signed labels, else raise ``ValueError``."""
    if label not in LABEL_INDEX:
        raise ValueError(f"not a signed VECL label: {label!r} (expected '1+'..'24+', '1-'..'24-' or '25')")
    return label


def _check_code(code: int) -> None:
    if code not in FINDINGS:
        raise ValueError(f"finding code must be 1..{NUM_FINDINGS}, got {code!r}")


def multi_hot(labels: Iterable[str]) -> torch.Tensor:
    """Float tensor of shape [49] with ones at the given signed labels (order: :data:`SIGNED_LABELS`)."""
    out = torch.zeros(NUM_SIGNED)
    for label in labels:
        out[LABEL_INDEX[validate_label(label)]] = 1.0
    return out


def multi_hot_batch(label_sets: Sequence[Iterable[str]]) -> torch.Tensor:
    """Stack :func:`multi_hot` over a batch: shape [N, 49]."""
    if len(label_sets) == 0:
        return torch.zeros(0, NUM_SIGNED)
    return torch.stack([multi_hot(s) for s in label_sets])


def normalize_label_set(labels: Iterable[str]) -> tuple[str, ...]:
    """Validate a sentence's label set and return it sorted and deduplicated.

    Rules: No Mention stands alone; a finding may not be both positive and negative.
    """
    labels = {validate_label(x) for x in labels}
    if not labels:
        raise ValueError("a label set needs at least one label (use '25' for No Mention)")
    if NO_MENTION_LABEL in labels and len(labels) > 1:
        raise ValueError(f"'25' (No Mention) must stand alone, got {sorted(labels)}")
    for label in labels:
        if label != NO_MENTION_LABEL and opposite(label) in labels:
            raise ValueError(f"label set has both {label} and {opposite(label)}")
    return tuple(sorted(labels, key=LABEL_INDEX.__getitem__))


_CELL_ITEM = re.compile(r"^(?:([1-9]|1[0-9]|2[0-4])([+-])|25)$")


def parse_cell(cell: str) -> tuple[str, ...] | None:
    """Parse a reference label cell (``"15-,  2-,  3-"``, ``"9+"``, ``"25"``); ``"0"`` (padding) gives ``None``.

    Raises ``ValueError`` with the offending cell for anything else.
    """
    text = cell.strip().strip('"').strip()
    if text == "0":
        return None
    items = [item.strip() for item in text.split(",")]
    if not items or any(not _CELL_ITEM.match(item) for item in items):
        raise ValueError(f"malformed label cell {cell!r}: expected e.g. '9+', '15-,  2-' or '25'")
    return normalize_label_set(items)


def format_cell(labels: Iterable[str]) -> str:
    """Inverse of :func:`parse_cell`, in the reference spelling (``"15-,  2-,  3-"`` without quotes)."""
    return ",  ".join(normalize_label_set(labels))


def image_label_set(sentence_labels: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """Union of the signed labels of a report's sentences (an image's label set)."""
    union: set[str] = set()
    for labels in sentence_labels:
        union.update(validate_label(x) for x in labels)
    return tuple(sorted(union, key=LABEL_INDEX.__getitem__))
