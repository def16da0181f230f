"""Which instance of a study the model reads: a frontal (PA/AP) chest CR or DX radiograph.

Works on headers only (read with ``stop_before_pixels``), so a study is triaged without
decoding its pixels. Every instance that is not chosen gets a reason, and a study with no
usable instance gets one study-level reason, so nothing is skipped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from monai_vecl.config import check_choice, check_dataclass, check_fields

FRONTAL_VIEWS = ("PA", "AP")
#: View words found in ViewPosition, View Code Sequence meanings or series/protocol descriptions.
_VIEW_WORDS = {
    "PA": ("PA", "POSTERO-ANTERIOR", "POSTEROANTERIOR", "POSTERIOR-ANTERIOR"),
    "AP": ("AP", "ANTERO-POSTERIOR", "ANTEROPOSTERIOR", "ANTERIOR-POSTERIOR", "AP SUPINE", "PORTABLE"),
    "LATERAL": ("LL", "RL", "LAT", "LATERAL", "LEFT LATERAL", "RIGHT LATERAL"),
}


@dataclass(frozen=True)
class SelectionConfig:
    """Selection rules (the ``deploy.selection`` section of ``deploy/config.yaml``)."""

    modalities: tuple[str, ...] = ("CR", "DX")
    body_parts: tuple[str, ...] = ("CHEST", "THORAX", "LUNG", "CXR")
    views: tuple[str, ...] = ("PA", "AP")
    allow_unknown_view: bool = False

    def __post_init__(self) -> None:
        check_dataclass(self, "deploy.selection")
        for view in self.views:
            check_choice("deploy.selection.views[]", view, FRONTAL_VIEWS)

    @classmethod
    def from_mapping(cls, data: dict | None) -> SelectionConfig:
        data = dict(data or {})
        check_fields(cls, data, "deploy.selection")
        # header values are compared in upper case; the YAML may use any case
        upper = {k: tuple(str(v).upper() for v in data[k]) for k in ("modalities", "body_parts", "views") if k in data}
        return cls(**{**data, **upper})


@dataclass
class Selection:
    """Candidates in preference order (best first) and a reason for every instance left out.

    ``candidates`` and ``rejected`` hold indices into the header list given to :func:`select_frontal_chest`.
    """

    candidates: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    views: dict[int, str] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """Study-level reason when there is no candidate, else ``None``."""
        if self.candidates:
            return None
        if not self.rejected:
            return "study has no instances"
        reasons = sorted(set(self.rejected.values()))
        return "no frontal chest CR/DX image: " + "; ".join(reasons)


def _words(*texts: object) -> set[str]:
    out: set[str] = set()
    for text in texts:
        if text:
            upper = str(text).upper()
            out.add(upper.strip())
            out.update(upper.replace("_", " ").replace("/", " ").replace(",", " ").split())
    return out


def view_of(ds: Dataset) -> str | None:
    """``"PA"``, ``"AP"``, ``"LATERAL"`` or ``None``: ViewPosition first, then View Code Sequence, then descriptions."""
    meanings = [getattr(item, "CodeMeaning", "") for item in ds.get("ViewCodeSequence", [])]
    for sources in (
        (ds.get("ViewPosition"),),
        meanings,
        (ds.get("SeriesDescription"), ds.get("ProtocolName"), ds.get("ImageComments")),
    ):
        words = _words(*sources)
        for view, names in _VIEW_WORDS.items():
            if words & set(names):
                return view
    return None


def is_chest(ds: Dataset, body_parts: Sequence[str]) -> bool | None:
    """``True``/``False`` from Body Part Examined or Anatomic Region; ``None`` when the header does not say."""
    region = [getattr(item, "CodeMeaning", "") for item in ds.get("AnatomicRegionSequence", [])]
    stated = _words(ds.get("BodyPartExamined"), *region)
    if stated:
        return bool(stated & set(body_parts))
    described = _words(ds.get("StudyDescription"), ds.get("SeriesDescription"), ds.get("ProtocolName"))
    return True if described & set(body_parts) else None


def _reject_reason(ds: Dataset, config: SelectionConfig) -> tuple[str | None, str | None]:
    """(reason, view): reason is ``None`` when ``ds`` is a usable frontal chest radiograph."""
    modality = str(ds.get("Modality", "")).upper()
    if modality not in config.modalities:
        return f"modality {modality or 'missing'} not in {list(config.modalities)}", None
    chest = is_chest(ds, config.body_parts)
    if chest is False:
        return f"body part {ds.get('BodyPartExamined') or 'per Anatomic Region'} is not chest", None
    if chest is None:
        return "body part not stated (no Body Part Examined, Anatomic Region or chest description)", None
    view = view_of(ds)
    if view == "LATERAL":
        return "lateral view", view
    if view is None and not config.allow_unknown_view:
        return "view position not stated", None
    if view is not None and view not in config.views:
        return f"view {view} not in {list(config.views)}", view
    return None, view


def _preference(ds: Dataset, view: str | None, config: SelectionConfig) -> tuple:
    view_rank = config.views.index(view) if view in config.views else len(config.views)
    for_processing = str(ds.get("PresentationIntentType", "")).upper() == "FOR PROCESSING"
    size = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    return view_rank, for_processing, -size, int(ds.get("InstanceNumber", 0) or 0), str(ds.get("SOPInstanceUID", ""))


def select_frontal_chest(headers: Sequence[Dataset], config: SelectionConfig = SelectionConfig()) -> Selection:
    """Rank the study's usable instances: configured view order, presentation before processing, larger first."""
    selection = Selection()
    for index, ds in enumerate(headers):
        reason, view = _reject_reason(ds, config)
        if view is not None:
            selection.views[index] = view
        if reason is None:
            selection.candidates.append(index)
        else:
            selection.rejected[index] = reason
    selection.candidates.sort(key=lambda i: _preference(headers[i], selection.views.get(i), config))
    return selection
