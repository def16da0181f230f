"""DICOM Segmentation of the grounding maps (highdicom): where the model found each reported finding.

One fractional segment (binary with ``binary_threshold``) per finding reported present, at the
source image's resolution, with the
source image referenced (Derivation Image / Source Image sequences), so a viewer lays it over that
image. Segment property type = the finding code of the SR (:func:`monai_vecl.deploy.sr.finding_concept`),
category "Morphologically abnormal structure", algorithm identification as in the SR. Segment
values are the grounding map scaled to [0, 1] per finding: a relative map of where the model
looks, not a calibrated probability (docs/deploy.md says how to read it). Patient and study
attributes come from the source, so the SEG files into the original study; its SOP Instance UID
derives from the UID of the SR it is sent with (:func:`seg_uid`), which is deterministic in what
the report says (source image, model, settings, scores), so a re-run reproduces the same SEG and
the app and the gateway name it alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from monai_vecl.config import check_choice, check_dataclass, check_fields
from monai_vecl.data.uids import deterministic_uid
from monai_vecl.deploy.sr import AlgorithmInfo, declare_private_scheme, finding_concept

CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
SECTION = "deploy.grounding.seg"
#: ``transfer_syntax`` choices of a FRACTIONAL SEG: both store the same pixel values; JPEG-LS lossless (CharLS
#: through pydicom, a highdicom dependency) makes a 9-segment full-size CR SEG ~18x smaller to spool and send
#: (docs/deploy.md has the figures).
TRANSFER_SYNTAXES = {"explicit_vr_little_endian": ExplicitVRLittleEndian, "jpeg_ls_lossless": JPEGLSLossless}


@dataclass(frozen=True)
class SEGConfig:
    """SEG options (the ``deploy.grounding.seg`` section of ``deploy/config.yaml``)."""

    series_number: int = 9902
    series_description: str = "VECL grounding maps (AI, unverified)"
    manufacturer: str = "monai-vecl"
    device_name: str = "VECL zero-shot CXR"
    max_fractional_value: int = 255
    # null: FRACTIONAL (the graded map); a value in (0, 1]: BINARY, map >= value, for viewers that
    # show binary segments only (OHIF, see docs/deploy.md)
    binary_threshold: float | None = None
    transfer_syntax: str = "jpeg_ls_lossless"

    def __post_init__(self) -> None:
        check_dataclass(self, SECTION)
        check_choice(f"{SECTION}.transfer_syntax", self.transfer_syntax, tuple(TRANSFER_SYNTAXES))
        if self.binary_threshold is not None and not 0 < self.binary_threshold <= 1:
            raise ValueError(f"{SECTION}.binary_threshold must be in (0, 1] or null, got {self.binary_threshold}")
        if not 1 <= self.max_fractional_value <= 255:
            raise ValueError(f"{SECTION}.max_fractional_value must be in [1, 255], got {self.max_fractional_value}")

    @classmethod
    def from_mapping(cls, data: Mapping | None) -> SEGConfig:
        data = dict(data or {})
        check_fields(cls, data, SECTION)
        return cls(**data)


def seg_uid(sr_uid: str) -> str:
    """SOP Instance UID of the grounding SEG sent with the SR ``sr_uid`` (versioned exactly as that SR is)."""
    return deterministic_uid("grounding-seg", sr_uid)


class _ClippedMapsSegmentation(hd.seg.Segmentation):
    """highdicom's Segmentation for FRACTIONAL maps :func:`build_grounding_seg` has already clipped to [0, 1].

    highdicom (pinned in pyproject.toml) checks a float array's range with ``np.unique``, a full sort of
    every pixel: half the SEG time for 9 full-size CR segments, and it cannot find anything in clipped
    maps. This skips that scan and answers what highdicom infers for such an array (overlap UNDEFINED
    for several fractional segments, NO for one); every other array goes through highdicom's checks.
    tests/test_grounding_seg.py holds the encoding equal to plain highdicom's.
    """

    @classmethod
    def _check_and_cast_pixel_array(
        cls, pixel_array: np.ndarray | hd.Volume, segment_numbers: np.ndarray,
        segmentation_type: str | hd.seg.SegmentationTypeValues, dtype: type,
    ) -> tuple[np.ndarray | hd.Volume, hd.seg.SegmentsOverlapValues]:
        fractional = hd.seg.SegmentationTypeValues(segmentation_type) == hd.seg.SegmentationTypeValues.FRACTIONAL
        if fractional and isinstance(pixel_array, np.ndarray) and pixel_array.dtype == np.float32 \
                and pixel_array.ndim == 4 and pixel_array.shape[-1] == len(segment_numbers):
            single = pixel_array.shape[-1] == 1
            return pixel_array, hd.seg.SegmentsOverlapValues.NO if single else hd.seg.SegmentsOverlapValues.UNDEFINED
        return super()._check_and_cast_pixel_array(pixel_array, segment_numbers, segmentation_type, dtype)


def build_grounding_seg(
    source: Dataset,
    maps: Mapping[str, np.ndarray],
    algorithm: AlgorithmInfo,
    config: SEGConfig = SEGConfig(),
    *,
    sr_uid: str,
    method: str = "attention",
    full_checks: bool = False,
) -> hd.seg.Segmentation:
    """A SEG over ``source``: one segment per entry of ``maps`` (finding name → [Rows, Columns] in [0, 1]),
    sent with the SR ``sr_uid`` (its UID is :func:`seg_uid` of that SR's).

    ``full_checks``: plain highdicom on a contiguous [1, Rows, Columns, segments] array, which re-scans the
    clipped maps' range: the former path, the reference tests/test_grounding_seg.py and
    ``bench/bench_gateway.py --mode breakdown`` compare the fast one with.
    """
    if not maps:
        raise ValueError("no grounding maps to write")
    shape = (int(source.Rows), int(source.Columns))
    names: Sequence[str] = list(maps)
    for name in names:
        if maps[name].shape != shape:
            raise ValueError(f"map of {name!r} is {maps[name].shape}, the source image is {shape}")
    # Stacked segment-first (one contiguous copy) and clipped in place; highdicom reads one segment at a time
    # from the [1, Rows, Columns, segments] view, so no interleaved copy is made.
    stack = np.stack([np.asarray(maps[n], np.float32) for n in names])
    np.clip(stack, 0, 1, out=stack)
    pixels = np.moveaxis(stack, 0, -1)[None]
    if full_checks:
        pixels = np.ascontiguousarray(pixels)
    binary = config.binary_threshold is not None
    if binary:
        pixels = (pixels >= config.binary_threshold).astype(np.uint8)
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version,
        parameters={"grounding_method": method, **dict(p.split("=", 1) for p in algorithm.parameters if "=" in p)},
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name[:64],
            segmented_property_category=CATEGORY,
            segmented_property_type=finding_concept(name),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id,
        )
        for i, name in enumerate(names)
    ]
    segmentation = hd.seg.Segmentation if full_checks else _ClippedMapsSegmentation
    seg = segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY if binary else hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=segments,
        series_instance_uid=deterministic_uid("seg-series", source.StudyInstanceUID, config.series_number),
        series_number=config.series_number,
        sop_instance_uid=seg_uid(sr_uid),
        instance_number=1,
        manufacturer=config.manufacturer,
        manufacturer_model_name=config.device_name,
        software_versions=algorithm.version[:64],
        device_serial_number=algorithm.name[:64],
        fractional_type=None if binary else hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=config.max_fractional_value,
        series_description=config.series_description,
        # 1-bit BINARY frames have no JPEG-LS form (highdicom refuses it): only the fractional SEG is compressed
        transfer_syntax_uid=ExplicitVRLittleEndian if binary else TRANSFER_SYNTAXES[config.transfer_syntax],
    )
    if "FrameOfReferenceUID" not in seg:
        # A projection radiograph: the SEG lies pixel for pixel on its source image. A copied spacing is
        # often invalid (CR with 0\0) and, lacking the slice thickness a 2-D image has not, makes readers
        # (highdicom's own) refuse the file, so none is written. Patient Orientation is then required.
        shared = seg.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared:
            del shared.PixelMeasuresSequence
        seg.PatientOrientation = source.get("PatientOrientation", "")
    declare_private_scheme(seg, names)
    return seg
