"""One study in, one DICOM SR (or a logged reason for none) out: the deployment's core.

``StudyPipeline(config)`` loads the model once — from a trained MONAI bundle
(``configs/inference.yaml`` → ``network_def``, weights ``models/model.pt``, calibrated
thresholds ``models/thresholds.json``) or, without ``bundle_root``, an untrained ``small``
network for wiring tests only (with a loud warning) — and encodes the prompts once.
``process(paths)`` then reads the study's headers, selects a frontal chest radiograph, converts
it to display grayscale, preprocesses it exactly as in evaluation, scores the configured
findings with zero-shot PNC and builds the SR (or, for a study it declines, a notice SR).

Thresholds (see docs/deploy_app.md): a site threshold in ``deploy.site_thresholds`` wins; else
the bundle's calibrated threshold (:mod:`monai_vecl.thresholds`); a finding with neither is
reported by its score with no present/absent call. The SR names each threshold's source.
Both the MONAI Deploy app (``deploy/app.py``) and the DICOM gateway call it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import torch
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from monai_vecl.data.preprocess import preprocess_gray
from monai_vecl.deploy.config_file import read_config
from monai_vecl.deploy.dicom_image import NO_VOI_MODES, DicomImageError, dicom_to_gray01
from monai_vecl.deploy.seg import SEGConfig, build_grounding_seg
from monai_vecl.deploy.selection import SelectionConfig, select_frontal_chest
from monai_vecl.deploy.sr import (
    AlgorithmInfo,
    FindingScore,
    SRConfig,
    build_findings_sr,
    build_notice_sr,
    finding_concept,
)
from monai_vecl.evaluation.grounding import make_grounder
from monai_vecl.evaluation.zero_shot import MODES, ZeroShotClassifier
from monai_vecl.grounding import GroundingConfig, to_source_frame
from monai_vecl.thresholds import ThresholdTable, load_thresholds

log = logging.getLogger(__name__)

ALGORITHM_NAME = "VECL zero-shot chest X-ray findings"
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_KEYS = {
    "bundle_root",
    "model_file",
    "device",
    "score_mode",
    "prompts",
    "findings",
    "thresholds_file",
    "site_thresholds",
    "no_voi",
    "selection",
    "sr",
    "grounding",
}


@dataclass(frozen=True)
class PipelineConfig:
    """The ``deploy:`` section of ``deploy/config.yaml`` (see that file for each key's meaning)."""

    bundle_root: Path | None = None
    model_file: str = "models/model.pt"
    device: str = "auto"
    score_mode: str = "pnc"
    pos_template: str = "There is {}"
    neg_template: str = "There is no {}"
    findings: tuple[str, ...] = ()
    thresholds_file: str | None = "models/thresholds.json"
    site_thresholds: dict[str, float] = field(default_factory=dict)
    no_voi: str = "bit_depth"
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    seg: SEGConfig = field(default_factory=SEGConfig)

    def __post_init__(self) -> None:
        if self.score_mode not in MODES:
            raise ValueError(f"deploy.score_mode must be one of {MODES}, got {self.score_mode!r}")
        if self.no_voi not in NO_VOI_MODES:
            raise ValueError(f"deploy.no_voi must be one of {NO_VOI_MODES}, got {self.no_voi!r}")
        for name, threshold in self.site_thresholds.items():
            if not 0.0 <= float(threshold) <= 1.0:
                raise ValueError(f"deploy.site_thresholds: {name!r} must be in [0, 1], got {threshold!r}")
        for name in (*self.findings, *self.site_thresholds):
            finding_concept(name)  # unknown names fail here, at start-up, not on the first study

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> PipelineConfig:
        """From a ``deploy:`` mapping (or a whole document holding one); relative paths resolve against ``base_dir``."""
        data = dict(data.get("deploy", data) or {})
        unknown = set(data) - _KEYS
        if unknown:
            raise ValueError(f"unknown keys in deploy config: {sorted(unknown)} (known: {sorted(_KEYS)})")
        prompts = dict(data.get("prompts") or {})
        findings = data.get("findings") or ()
        if isinstance(findings, (str, Mapping)) or not isinstance(findings, Sequence):
            raise TypeError(
                "deploy.findings must be a list of class names (thresholds: the bundle's thresholds.json, "
                "per-site overrides in deploy.site_thresholds)"
            )
        site = data.get("site_thresholds") or {}
        if not isinstance(site, Mapping):
            raise TypeError("deploy.site_thresholds must map class names to thresholds")
        bundle_root = data.get("bundle_root")
        thresholds_file = data.get("thresholds_file", cls.thresholds_file)
        return cls(
            bundle_root=None if bundle_root is None else (Path(base_dir) / bundle_root).resolve(),
            model_file=str(data.get("model_file", cls.model_file)),
            device=str(data.get("device", cls.device)),
            score_mode=str(data.get("score_mode", cls.score_mode)),
            pos_template=str(prompts.get("positive", cls.pos_template)),
            neg_template=str(prompts.get("negative", cls.neg_template)),
            findings=tuple(str(name) for name in findings),
            thresholds_file=None if thresholds_file is None else str(thresholds_file),
            site_thresholds={str(k): float(v) for k, v in site.items()},
            no_voi=str(data.get("no_voi", cls.no_voi)),
            selection=SelectionConfig.from_mapping(data.get("selection")),
            sr=SRConfig.from_mapping(data.get("sr")),
            **_grounding_settings(data.get("grounding")),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> PipelineConfig:
        return cls.from_mapping(read_config(path, "deploy")["deploy"], base_dir=Path(path).parent)

    @classmethod
    def load(cls, source: PipelineConfig | Mapping[str, Any] | str | os.PathLike) -> PipelineConfig:
        if isinstance(source, cls):
            return source
        if isinstance(source, Mapping):
            return cls.from_mapping(source)
        return cls.from_yaml(source)


@dataclass
class StudyResult:
    """What one study gave: a findings SR; or, with ``skipped_reason``, a notice SR or ``sr=None``.

    ``rejected`` names every unused file; ``source_uid`` is the scored image's SOP Instance UID.
    """

    sr: Dataset | None
    skipped_reason: str | None = None
    seg: Dataset | None = None  # grounding maps of the findings called present (docs/deploy.md)
    scores: dict[str, float] = field(default_factory=dict)
    findings: list[FindingScore] = field(default_factory=list)
    source_path: Path | None = None
    source_uid: str | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def report_key(self) -> str:
        """Digest of what the report says (scored image, scores as written, thresholds, calls, or the skip reason).

        Two results with the same key make the same report: the gateway sends no new SR for it.
        """
        parts = [self.source_uid or "", self.skipped_reason or ""]
        parts += [f"{f.name}:{100.0 * f.score:.4f}:{f.threshold}:{f.present}" for f in self.findings]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Threshold:
    """The threshold a finding is called at (None: no call) and where it came from."""

    value: float | None
    source: str


def resolve_findings(config: PipelineConfig, bundle: Mapping[str, Any]) -> list[str]:
    """Class names to score: ``deploy.findings``, else the bundle's ``class_names``."""
    findings = list(config.findings or bundle.get("class_names", ()))
    if not findings:
        raise ValueError("no findings to score: set deploy.findings (or class_names in the bundle's inference.yaml)")
    for name in findings:
        finding_concept(name)
    unscored = set(config.site_thresholds) - set(findings)
    if unscored:
        raise ValueError(f"deploy.site_thresholds names findings that are not scored: {sorted(unscored)}")
    return findings


def load_calibration(config: PipelineConfig, model_sha256: str | None) -> ThresholdTable | None:
    """The bundle's calibrated thresholds, checked against the model and score mode; None when there are none.

    Thresholds calibrated for other weights or another score mode would be silently wrong, so
    either mismatch stops the start-up.
    """
    if config.bundle_root is None or config.thresholds_file is None:
        return None
    path = config.bundle_root / config.thresholds_file
    if not path.is_file():
        log.warning("no calibrated thresholds at %s: findings without a site threshold get no present/absent call",
                    path)
        return None
    table = load_thresholds(path)
    if table.score_mode != config.score_mode:
        raise ValueError(f"{path}: calibrated for score_mode {table.score_mode!r}, deploy uses {config.score_mode!r}")
    if table.model_sha256 and model_sha256 and table.model_sha256 != model_sha256:
        raise ValueError(
            f"{path}: calibrated for model sha256 {table.model_sha256[:16]}, bundle model is {model_sha256[:16]}: "
            "re-run the evaluation that writes the thresholds for these weights"
        )
    return table


def resolve_thresholds(findings: Sequence[str], table: ThresholdTable | None,
                       site: Mapping[str, float]) -> dict[str, Threshold]:
    """Per finding: the site threshold (wins), else the calibrated one, else none (score only)."""
    calibrated = f"calibrated: {table.rule} on {table.split} split" if table else ""
    if table and table.model_sha256:
        calibrated += f", model_sha256={table.model_sha256[:16]}"
    chosen = {}
    for name in findings:
        value = table.threshold(name) if table else None
        if name in site:
            note = f" over calibrated {value:g}" if value is not None else ""
            chosen[name] = Threshold(site[name], f"site override (deploy.site_thresholds){note}")
        elif value is not None:
            chosen[name] = Threshold(value, calibrated)
        else:
            chosen[name] = Threshold(None, "none calibrated: score only")
    return chosen


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle_model(bundle_root: Path, model_file: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Network and ``inference.yaml`` content of a trained bundle (weights: a plain state_dict)."""
    from monai.bundle import ConfigParser  # monai.bundle pulls in heavy optional modules; only load it here

    config_file = bundle_root / "configs" / "inference.yaml"
    weights = bundle_root / model_file
    for needed in (config_file, weights):
        if not needed.is_file():
            raise FileNotFoundError(
                f"bundle {bundle_root} lacks {needed.relative_to(bundle_root)} (train the bundle first)"
            )
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_root)
    model = parser.get_parsed_content("network_def")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), parser.get()


class StudyPipeline:
    """Loads the model once; :meth:`process` turns one study's DICOM files into an SR. Thread-safe."""

    def __init__(self, config: PipelineConfig | Mapping[str, Any] | str | os.PathLike):
        self.config = PipelineConfig.load(config)
        self.device = resolve_device(self.config.device)
        started = time.perf_counter()
        if self.config.bundle_root is None:
            from monai_vecl.networks import build_vecl

            message = (
                "deploy.bundle_root is not set: scoring with an UNTRAINED small VECL network. "
                "Its findings are meaningless; use this only to test the wiring."
            )
            warnings.warn(message, stacklevel=2)
            log.warning(message)
            with torch.random.fork_rng(devices=[]):  # seeded so wiring tests see the same scores every run
                torch.manual_seed(0)
                self.model, bundle = build_vecl("small").to(self.device).eval(), {}
            fingerprint, version = "untrained", "untrained small"
        else:
            self.model, bundle = load_bundle_model(self.config.bundle_root, self.config.model_file, self.device)
            fingerprint = _sha256(self.config.bundle_root / self.config.model_file)
            version = f"bundle {bundle.get('version') or _bundle_version(self.config.bundle_root)}"
        findings = resolve_findings(self.config, bundle)
        self.calibration = load_calibration(self.config, None if self.config.bundle_root is None else fingerprint)
        self.thresholds = resolve_thresholds(findings, self.calibration, self.config.site_thresholds)
        for name, chosen in self.thresholds.items():
            log.info("threshold %s: %s (%s)", name, "none" if chosen.value is None else f"{chosen.value:g}",
                     chosen.source)
        self.fingerprint = fingerprint
        self.classifier = ZeroShotClassifier(
            self.model, list(findings), pos_template=self.config.pos_template, neg_template=self.config.neg_template
        )
        self.classifier.prompt_features()
        grounding = self.config.grounding
        self.grounder = make_grounder(self.classifier, grounding, self.config.score_mode) if grounding.enabled else None
        self.algorithm = AlgorithmInfo(
            name=ALGORITHM_NAME,
            version=f"monai-vecl {_package_version()}, {version}",
            parameters=(
                f"score_mode={self.config.score_mode}",
                f"positive_prompt={self.config.pos_template}",
                f"negative_prompt={self.config.neg_template}",
                f"model_sha256={fingerprint[:16]}",
                "thresholds="
                + (self.calibration.describe() if self.calibration else "no calibrated thresholds file"),
            ),
        )
        self._lock = threading.Lock()
        self.load_seconds = time.perf_counter() - started
        log.info("model loaded in %.1f s on %s (%d findings)", self.load_seconds, self.device, len(findings))

    def read_headers(self, paths: Sequence[Path]) -> tuple[list[Path], list[Dataset], dict[str, str]]:
        """Headers of the readable instances; every other file gets a reason."""
        kept, headers, rejected = [], [], {}
        for path in paths:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError, EOFError) as err:
                rejected[str(path)] = f"not a readable DICOM file: {type(err).__name__}: {err}"
                continue
            missing = [k for k in _REQUIRED_UIDS if not ds.get(k)]
            if missing:
                rejected[str(path)] = f"missing {', '.join(missing)}"
                continue
            kept.append(path)
            headers.append(ds)
        studies = {str(ds.StudyInstanceUID) for ds in headers}
        if len(studies) > 1:
            raise ValueError(f"process() takes one study, got instances of {len(studies)} studies")
        return kept, headers, rejected

    def score(self, gray01: Any) -> list[FindingScore]:
        """Zero-shot scores of the configured findings for one display-grayscale image [H, W] in [0, 1]."""
        image = preprocess_gray(gray01, self.model.image_size, self.model.load_size)[None]
        with self._lock:
            scores = self.classifier.scores(image, mode=self.config.score_mode)[0]
        return [
            FindingScore(name, float(s), chosen.value, chosen.source)
            for (name, chosen), s in zip(self.thresholds.items(), scores)
        ]

    def ground(self, source: Dataset, gray01: Any, findings: Sequence[FindingScore]) -> Dataset | None:
        """SEG of the grounding maps of the findings called present; None if grounding is off or none is present."""
        present = [i for i, f in enumerate(findings) if f.present]
        if self.grounder is None or not present:
            return None
        image = preprocess_gray(gray01, self.model.image_size, self.model.load_size)[None]
        with self._lock:
            maps = self.grounder.maps(image, present)[0]
        maps = to_source_frame(maps, gray01.shape, self.model.load_size).numpy()
        return build_grounding_seg(source, {findings[i].name: m for i, m in zip(present, maps)}, self.algorithm,
                                   self.config.seg, self.fingerprint, self.config.grounding.method)

    def process(self, paths: Sequence[str | os.PathLike]) -> StudyResult:
        """Score one study (all paths share a StudyInstanceUID); never raises for bad instances, it reports them."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        paths = [Path(p) for p in paths]
        kept, headers, rejected = self.read_headers(paths)
        selection = select_frontal_chest(headers, self.config.selection)
        rejected.update({str(kept[i]): reason for i, reason in selection.rejected.items()})
        timings["select"] = time.perf_counter() - started
        source, source_path, gray = None, None, None
        for index in selection.candidates:
            try:
                source = pydicom.dcmread(kept[index])
                gray = dicom_to_gray01(source, no_voi=self.config.no_voi)
                source_path = kept[index]
                break
            except (DicomImageError, InvalidDicomError, OSError, ValueError, EOFError) as err:
                rejected[str(kept[index])] = f"unusable pixel data: {err}"
                source = None
        timings["load"] = time.perf_counter() - started - timings["select"]
        if source is None:
            if paths and not kept:
                reason = f"no readable DICOM instance among {len(paths)} files"
            else:
                reason = selection.reason or "no frontal chest image with usable pixel data"
            notice = None
            if self.config.sr.notice_for_skipped and headers:
                notice = build_notice_sr(headers, reason, self.algorithm, self.config.sr, fingerprint=self.fingerprint)
            log.info("no findings: %s (%d files, %d rejected; notice SR: %s)", reason, len(paths), len(rejected),
                     "yes" if notice is not None else "no")
            return StudyResult(sr=notice, skipped_reason=reason, rejected=rejected, timings=timings)
        mark = time.perf_counter()
        findings = self.score(gray)
        timings["score"] = time.perf_counter() - mark
        mark = time.perf_counter()
        del source.PixelData  # the SR copies header attributes only; do not keep megabytes alive
        sr = build_findings_sr(source, findings, self.algorithm, self.config.sr, fingerprint=self.fingerprint,
                               evaluated=headers)
        timings["sr"] = time.perf_counter() - mark
        mark = time.perf_counter()
        seg = self.ground(source, gray, findings)
        timings["seg"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started
        present = [f.name for f in findings if f.present]
        log.info(
            "SR built: %d findings scored, %d present, %d files unused, %.2f s",
            len(findings),
            len(present),
            len(rejected),
            timings["total"],
        )
        return StudyResult(
            sr=sr,
            seg=seg,
            scores={f.name: f.score for f in findings},
            findings=findings,
            source_path=source_path,
            source_uid=str(source.SOPInstanceUID),
            rejected=rejected,
            timings=timings,
        )


def _grounding_settings(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """``deploy.grounding`` (enabled, method, layers; ``seg:`` the SEG options) → PipelineConfig fields."""
    data = dict(data or {})
    seg = SEGConfig.from_mapping(data.pop("seg", None))
    return {"grounding": GroundingConfig.from_mapping(data), "seg": seg}


def _package_version() -> str:
    try:
        return importlib.metadata.version("monai-vecl")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "source"


def _bundle_version(bundle_root: Path) -> str:
    """``version`` from the bundle's ``configs/metadata.json`` if it has one."""
    metadata = bundle_root / "configs" / "metadata.json"
    if metadata.is_file():
        return str(json.loads(metadata.read_text()).get("version", "unversioned"))
    return "unversioned"


def group_by_study(paths: Sequence[str | os.PathLike]) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Files grouped by StudyInstanceUID (from headers only), and a reason for each file that is not DICOM."""
    studies: dict[str, list[Path]] = {}
    rejected: dict[str, str] = {}
    for path in map(Path, paths):
        try:
            uid = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get(
                "StudyInstanceUID"
            )
        except (InvalidDicomError, OSError, ValueError, EOFError) as err:
            rejected[str(path)] = f"not a readable DICOM file: {type(err).__name__}: {err}"
            continue
        if not uid:
            rejected[str(path)] = "missing StudyInstanceUID"
            continue
        studies.setdefault(str(uid), []).append(path)
    return studies, rejected


def save_sr(sr: Dataset, output_dir: str | os.PathLike) -> Path:
    """Write an SR as ``<SOPInstanceUID>.dcm`` (atomically: temp file, fsync, rename) and return its path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{sr.SOPInstanceUID}.dcm"
    tmp = path.with_suffix(".dcm.tmp")
    with open(tmp, "wb") as f:
        sr.save_as(f, enforce_file_format=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
