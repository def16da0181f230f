"""One study in, one DICOM SR (or a logged reason for none) out: the deployment's core.

``StudyPipeline(config)`` loads the model once and encodes the prompts once. The trained MONAI
bundle is the source of truth for everything the model was trained and calibrated with
(:func:`load_bundle`: ``configs/inference.yaml`` → ``network_def`` with its preprocessing geometry
and intensity statistics, ``model_file``, ``class_names``, ``pos_template`` / ``neg_template``,
``score_mode``, ``thresholds_file``; with ``deploy.model: exported`` the same as the exported head
records them, checked against that file); ``deploy/config.yaml`` holds only site settings
(:class:`PipelineConfig`). Without ``bundle_root`` an untrained ``small`` network scores, for
wiring tests only (with a loud warning). ``process(paths)`` then reads the study's headers, selects
a frontal chest radiograph, converts it to display grayscale, preprocesses it with the network's
own geometry, scores the findings zero-shot and builds the SR (or, for a study it declines, a
notice SR).

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
import yaml
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from monai_vecl.config import check_choice, check_dataclass
from monai_vecl.deploy.config_file import read_config
from monai_vecl.data.dicom_image import NO_VOI_MODES, DicomImageError, dicom_to_gray01
from monai_vecl.data.preprocess import preprocess_gray
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
from monai_vecl.files import atomic_open, sha256_file
from monai_vecl.grounding import GroundingConfig, to_source_frame
from monai_vecl.inference.export import BUFFER, CONFIG_EXTRA_FILE, HeadContract
from monai_vecl.inference.zero_shot import (
    MODES,
    NEG_TEMPLATE,
    POS_TEMPLATE,
    ZeroShotClassifier,
    load_weights,
)
from monai_vecl.taxonomy import class_key
from monai_vecl.thresholds import FILE_NAME, ThresholdTable, load_checked

log = logging.getLogger(__name__)

ALGORITHM_NAME = "VECL zero-shot chest X-ray findings"
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
#: The keys of the ``deploy:`` section (``seg`` lives under ``grounding``).
SITE_KEYS = ("bundle_root", "model", "device", "findings", "site_thresholds", "no_voi", "selection", "sr", "grounding")
#: Former ``deploy:`` keys and the bundle keys that replace them: the model was trained and
#: calibrated with these, so a site cannot change them without retraining or recalibrating.
MOVED_TO_BUNDLE = {"model_file": "model_file", "score_mode": "score_mode", "prompts": "pos_template/neg_template",
                   "thresholds_file": "thresholds_file"}
#: ``configs/inference.yaml`` keys the deployment reads.
BUNDLE_KEYS = ("network_def", "model_file", "class_names", "pos_template", "neg_template", "score_mode")
#: ``deploy.model``: ``bundle`` scores with the network and its text encoder (prompts encoded at start-up);
#: ``exported`` with the TorchScript zero-shot head ``ckpt_export`` wrote (:data:`EXPORTED_FILE`, ckpt_export's
#: default place): prompt features baked in, no text encoder, no grounding maps (they need the fusion's attention).
MODELS = ("bundle", "exported")
EXPORTED_FILE = "models/model.ts"


@dataclass(frozen=True)
class PipelineConfig:
    """The ``deploy:`` section of ``deploy/config.yaml``: site settings only (see that file for each key).

    Every value is type-checked (:mod:`monai_vecl.config`), whether it comes from YAML or is passed
    directly: a ``'false'`` string, a quoted number or an unknown key fails naming the key.
    """

    bundle_root: Path | None = None
    model: str = "bundle"
    device: str = "auto"
    findings: tuple[str, ...] = ()
    site_thresholds: dict[str, float] = field(default_factory=dict)
    no_voi: str = "bit_depth"
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    seg: SEGConfig = field(default_factory=SEGConfig)

    def __post_init__(self) -> None:
        check_dataclass(self, "deploy")
        check_choice("deploy.no_voi", self.no_voi, NO_VOI_MODES)
        check_choice("deploy.model", self.model, MODELS)
        if self.model == "exported" and self.grounding.enabled:
            raise ValueError("deploy.model: exported scores with the exported head, which has no attention maps: "
                             "set deploy.grounding.enabled: false (or deploy.model: bundle)")
        if self.model == "exported" and self.bundle_root is None:
            raise ValueError(f"deploy.model: exported needs deploy.bundle_root (the head is the bundle's "
                             f"{EXPORTED_FILE})")
        resolve_device(self.device)
        for name, threshold in self.site_thresholds.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"deploy.site_thresholds: {name!r} must be in [0, 1], got {threshold!r}")
        for name in (*self.findings, *self.site_thresholds):
            finding_concept(name)  # unknown names fail here, at start-up, not on the first study

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> PipelineConfig:
        """From a ``deploy:`` mapping (or a whole document holding one); relative paths resolve against ``base_dir``."""
        data = dict(_mapping(data.get("deploy", data), "deploy"))
        moved = sorted(set(data) & set(MOVED_TO_BUNDLE))
        if moved:
            raise ValueError(
                f"deploy.{moved[0]} is not a site setting: the bundle's configs/inference.yaml sets "
                f"{MOVED_TO_BUNDLE[moved[0]]} (the weights were trained and the thresholds calibrated with it)"
            )
        unknown = sorted(set(data) - set(SITE_KEYS))
        if unknown:
            raise ValueError(f"unknown deploy option(s) {unknown}; known: {sorted(SITE_KEYS)}")
        values = {k: data[k] for k in ("model", "device", "no_voi") if k in data}
        if isinstance(data.get("findings"), list):
            values["findings"] = tuple(data["findings"])
        elif "findings" in data:
            values["findings"] = data["findings"]  # not a list: the type check names the key
        if data.get("site_thresholds") is not None:
            values["site_thresholds"] = data["site_thresholds"]
        bundle_root = data.get("bundle_root")
        if isinstance(bundle_root, (str, os.PathLike)):
            bundle_root = (Path(base_dir) / bundle_root).resolve()
        grounding = dict(_mapping(data.get("grounding"), "deploy.grounding"))
        return cls(
            bundle_root=bundle_root,
            selection=SelectionConfig.from_mapping(_mapping(data.get("selection"), "deploy.selection")),
            sr=SRConfig.from_mapping(_mapping(data.get("sr"), "deploy.sr")),
            seg=SEGConfig.from_mapping(_mapping(grounding.pop("seg", None), "deploy.grounding.seg")),
            grounding=GroundingConfig.from_mapping(grounding),
            **values,
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


def _mapping(data: Any, name: str) -> Mapping[str, Any]:
    """A YAML section: a mapping, or empty when absent."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise TypeError(f"{name} must be a mapping of options, got {data!r}")
    return data


@dataclass(frozen=True)
class BundleInference:
    """What the deployment takes from a trained bundle: the network (geometry and intensity statistics in
    its config and weights) or the exported head, the class names and prompts it scores, the score mode, the
    thresholds file and the input geometry."""

    network: torch.nn.Module  # the VECL network, or (``exported``) the TorchScript head: images -> scores [N, C]
    class_names: tuple[str, ...]
    pos_template: str
    neg_template: str
    score_mode: str
    model_sha256: str | None  # of the weights file: the model's identity, what the thresholds were calibrated for
    thresholds_file: Path | None
    version: str
    image_size: int
    load_size: int
    exported: bool = False


def load_bundle(bundle_root: Path, device: torch.device, exported: bool = False) -> BundleInference:
    """Read ``configs/inference.yaml`` with MONAI's ``ConfigParser`` and load the weights (:func:`load_weights`),
    or with ``exported`` the TorchScript head and the contract it records (:func:`load_exported`).

    A missing or mistyped key fails naming the key and the file. ``thresholds_file`` defaults to the calibration's
    place beside the weights (:data:`monai_vecl.thresholds.FILE_NAME`); the weights' file is the model's identity
    (its hash is what the thresholds were calibrated for).
    """
    config_file = bundle_root / "configs" / "inference.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"bundle {bundle_root} lacks configs/inference.yaml (train the bundle first)")
    if exported:
        return load_exported(bundle_root, device)
    from monai.bundle import ConfigParser  # imports all of MONAI (transformers included): only on this path

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_root)
    missing = [key for key in BUNDLE_KEYS if key not in parser]
    if missing:
        raise ValueError(f"{config_file}: the deployment needs {missing} (keys read: {list(BUNDLE_KEYS)})")
    values = {key: parser.get_parsed_content(key) for key in BUNDLE_KEYS if key != "network_def"}
    for key in ("model_file", "pos_template", "neg_template", "score_mode"):
        if not isinstance(values[key], str):
            raise TypeError(f"{config_file}: {key} must be a string, got {values[key]!r}")
    names = values["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{config_file}: class_names must be a non-empty list of names, got {names!r}")
    check_choice(f"{config_file}: score_mode", values["score_mode"], MODES)
    model_file = bundle_root / values["model_file"]
    if not model_file.is_file():
        raise FileNotFoundError(f"bundle {bundle_root} lacks its weights {model_file} (train the bundle first)")
    thresholds = parser.get_parsed_content("thresholds_file") if "thresholds_file" in parser else None
    network = load_weights(parser.get_parsed_content("network_def"), model_file).to(device)
    return BundleInference(
        network=network.eval(),
        class_names=tuple(names),
        pos_template=values["pos_template"],
        neg_template=values["neg_template"],
        score_mode=values["score_mode"],
        model_sha256=sha256_file(model_file),
        thresholds_file=model_file.with_name(FILE_NAME) if thresholds is None else bundle_root / thresholds,
        version=f"bundle {_bundle_version(bundle_root)}",
        image_size=network.config.image_size,
        load_size=network.config.load_size,
    )


def load_exported(bundle_root: Path, device: torch.device) -> BundleInference:
    """The head ``ckpt_export`` wrote to :data:`EXPORTED_FILE` and its contract (:mod:`monai_vecl.inference.export`),
    read with ``torch.jit.load`` alone: no ``ConfigParser``, no network code, no text encoder.

    The bundle stays the source of truth: the ``configs/inference.yaml`` the head was exported from (its
    ``inference.json``) must be the bundle's as it is now, else the export is stale and refused. The weights'
    identity is the digest the contract records for the file the head's weights came from (not a hash of
    ``model.pt`` now: the head scores with those weights, and the thresholds must be calibrated for them).
    """
    path = bundle_root / EXPORTED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no exported head {path}: run the bundle README's ckpt_export command (deploy.model: "
                                "exported)")
    extra = {CONFIG_EXTRA_FILE: ""}
    head = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    config_file = bundle_root / "configs" / "inference.yaml"
    exported_config = json.loads(extra[CONFIG_EXTRA_FILE] or "{}")
    config = yaml.safe_load(config_file.read_text()) or {}  # ckpt_export stored it as yaml.safe_load read it
    if exported_config != config:
        changed = sorted(k for k in {*exported_config, *config} if exported_config.get(k) != config.get(k))
        raise ValueError(f"{path} is stale: it was exported from another {config_file} (keys that differ: {changed}); "
                         "export the head again (the bundle README's ckpt_export command)")
    contract = HeadContract.from_buffer(getattr(head, BUFFER, None), str(path))
    if contract.model_sha256 is None:
        raise ValueError(f"{path} records no weights digest (its export_head has no model_file): export the head "
                         "again with the bundle's configs/inference.yaml")
    return BundleInference(
        network=head.eval(),
        class_names=contract.class_names,
        pos_template=contract.pos_template,
        neg_template=contract.neg_template,
        score_mode=contract.score_mode,
        model_sha256=contract.model_sha256,
        thresholds_file=path.parent / contract.thresholds_file,
        version=f"bundle {_bundle_version(bundle_root)}",
        image_size=contract.image_size,
        load_size=contract.load_size,
        exported=True,
    )


def untrained_bundle(device: torch.device) -> BundleInference:
    """A seeded untrained ``small`` network with the default prompts, for wiring tests only (no classes, no thresholds)."""
    from monai_vecl.networks import build_vecl

    with torch.random.fork_rng(devices=[]):  # seeded so wiring tests see the same scores every run
        torch.manual_seed(0)
        network = build_vecl("small").to(device).eval()
    return BundleInference(network, (), POS_TEMPLATE, NEG_TEMPLATE, MODES[0], None, None, "untrained small",
                           network.config.image_size, network.config.load_size)


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


def resolve_findings(config: PipelineConfig, class_names: Sequence[str]) -> list[str]:
    """Class names to score, as the bundle names them: ``deploy.findings`` (a subset of the bundle's
    ``class_names``, matched by :func:`monai_vecl.taxonomy.class_key`), else all of them."""
    findings = list(config.findings or class_names)
    if not findings:
        raise ValueError("no findings to score: the bundle's inference.yaml names no class_names (or, without a "
                         "bundle, set deploy.findings)")
    if class_names:
        matched = {name: class_key(name, class_names) for name in findings}
        outside = [name for name, key in matched.items() if key is None]
        if outside:
            raise ValueError(f"deploy.findings names classes the bundle does not score: {outside} "
                             f"(its class_names: {list(class_names)})")
        findings = list(dict.fromkeys(matched.values()))
    for name in findings:
        finding_concept(name)
    unscored = sorted(name for name in config.site_thresholds if class_key(name, findings) is None)
    if unscored:
        raise ValueError(f"deploy.site_thresholds names findings that are not scored: {unscored}")
    return findings


def load_calibration(bundle: BundleInference) -> ThresholdTable | None:
    """The bundle's calibrated thresholds, checked against the model and score mode; None when there are none.

    Thresholds calibrated for other weights or another score mode would be silently wrong, so
    either mismatch stops the start-up.
    """
    path = bundle.thresholds_file
    if path is None:
        return None
    model_name = (f"the weights {EXPORTED_FILE} was exported from (export it again if the weights changed)"
                  if bundle.exported else "bundle model")
    table = load_checked(path, bundle.score_mode, bundle.model_sha256, scorer="the bundle", model_name=model_name)
    if table is None:
        log.warning("no calibrated thresholds at %s: findings without a site threshold get no present/absent call",
                    path)
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
        site_key = class_key(name, site)
        if site_key is not None:
            note = f" over calibrated {value:g}" if value is not None else ""
            chosen[name] = Threshold(site[site_key], f"site override (deploy.site_thresholds){note}")
        elif value is not None:
            chosen[name] = Threshold(value, calibrated)
        else:
            chosen[name] = Threshold(None, "none calibrated: score only")
    return chosen


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks the GPU when there is one, else the CPU; a name torch does not know fails naming the key."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"deploy.device must be auto or a torch device (cpu, cuda, cuda:1), got {name!r}") from err


def _grounding_parameter(config: PipelineConfig) -> str:
    """How the SEG sent with the SR is made; part of the SR's settings (and so of its UID)."""
    grounding, seg = config.grounding, config.seg
    if not grounding.enabled:
        return "grounding=off"
    kind = "fractional" if seg.binary_threshold is None else f"binary>={seg.binary_threshold:g}"
    return f"grounding={grounding.method}/{grounding.layers}/{kind}"


class StudyPipeline:
    """Loads the model once; :meth:`process` turns one study's DICOM files into an SR. Thread-safe."""

    def __init__(self, config: PipelineConfig | Mapping[str, Any] | str | os.PathLike):
        self.config = PipelineConfig.load(config)
        self.device = resolve_device(self.config.device)
        started = time.perf_counter()
        if self.config.bundle_root is None:
            message = (
                "deploy.bundle_root is not set: scoring with an UNTRAINED small VECL network. "
                "Its findings are meaningless; use this only to test the wiring."
            )
            warnings.warn(message, stacklevel=2)
            log.warning(message)
            self.bundle = untrained_bundle(self.device)
        else:
            self.bundle = load_bundle(self.config.bundle_root, self.device, exported=self.config.model == "exported")
        fingerprint = self.bundle.model_sha256 or "untrained"
        self.model = self.bundle.network
        findings = resolve_findings(self.config, self.bundle.class_names)
        self.calibration = load_calibration(self.bundle)
        self.thresholds = resolve_thresholds(findings, self.calibration, self.config.site_thresholds)
        for name, chosen in self.thresholds.items():
            log.info("threshold %s: %s (%s)", name, "none" if chosen.value is None else f"{chosen.value:g}",
                     chosen.source)
        self.fingerprint = fingerprint
        self.classifier = None
        if self.bundle.exported:  # the head scores all of the bundle's classes, these are the reported columns
            self.columns = [self.bundle.class_names.index(name) for name in findings]
        else:
            self.classifier = ZeroShotClassifier(self.model, list(findings), pos_template=self.bundle.pos_template,
                                                 neg_template=self.bundle.neg_template)
            self.classifier.prompt_features()
        grounding = self.config.grounding
        self.grounder = None
        if grounding.enabled:
            # imported only here: the evaluation layer pulls in scikit-learn (seconds of start-up) for its metrics
            from monai_vecl.evaluation.grounding import make_grounder

            self.grounder = make_grounder(self.classifier, grounding, self.bundle.score_mode)
        self.algorithm = AlgorithmInfo(
            name=ALGORITHM_NAME,
            version=f"monai-vecl {_package_version()}, {self.bundle.version}",
            parameters=(
                f"score_mode={self.bundle.score_mode}",
                f"positive_prompt={self.bundle.pos_template}",
                f"negative_prompt={self.bundle.neg_template}",
                f"model_sha256={fingerprint[:16]}",
                "thresholds="
                + (self.calibration.describe() if self.calibration else "no calibrated thresholds file"),
                _grounding_parameter(self.config),
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
        image = preprocess_gray(gray01, self.bundle.image_size, self.bundle.load_size)[None]
        with self._lock:
            if self.classifier is None:
                # without the profiling executor: its first runs re-optimise the traced graph (tenths of a second to
                # seconds of the cold start on 2 CPU cores, measured) for the same warm time there
                with torch.no_grad(), torch.jit.optimized_execution(False):
                    scores = self.model(image.to(self.device))[0, self.columns].cpu()
            else:
                scores = self.classifier.scores(image, mode=self.bundle.score_mode)[0]
        return [
            FindingScore(name, float(s), chosen.value, chosen.source)
            for (name, chosen), s in zip(self.thresholds.items(), scores)
        ]

    def ground(self, source: Dataset, gray01: Any, findings: Sequence[FindingScore], sr_uid: str) -> Dataset | None:
        """SEG of the grounding maps of the findings called present, sent with the SR ``sr_uid``; None if grounding
        is off or none is present."""
        present = [i for i, f in enumerate(findings) if f.present]
        if self.grounder is None or not present:
            return None
        image = preprocess_gray(gray01, self.bundle.image_size, self.bundle.load_size)[None]
        with self._lock:
            maps = self.grounder.maps(image, present)[0]
        maps = to_source_frame(maps, gray01.shape, self.bundle.load_size).numpy()
        return build_grounding_seg(source, {findings[i].name: m for i, m in zip(present, maps)}, self.algorithm,
                                   self.config.seg, sr_uid=sr_uid, method=self.config.grounding.method)

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
        seg = self.ground(source, gray, findings, str(sr.SOPInstanceUID))
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
    """Write an SR (or SEG) as ``<SOPInstanceUID>.dcm`` atomically (:mod:`monai_vecl.files`) and return its path."""
    path = Path(output_dir) / f"{sr.SOPInstanceUID}.dcm"
    with atomic_open(path) as f:
        sr.save_as(f, enforce_file_format=True)
    return path
