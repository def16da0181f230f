"""Grounding maps delivered as DICOM: the fractional SEG (dciodvfy-valid) and the deploy pipeline's setting."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless
from deployapp_dicom import make_dx, rg1_path

from monai_vecl.deploy.seg import SEGConfig, build_grounding_seg
from monai_vecl.deploy.sr import AlgorithmInfo, finding_concept

ALGORITHM = AlgorithmInfo("VECL zero-shot chest X-ray findings", "test 1", ("score_mode=pnc",))


def dciodvfy_errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (scripts/setup.sh --system installs dicom3tools)")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False, timeout=120)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def _maps(shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = np.exp(-(((yy - shape[0] * 0.7) ** 2 + (xx - shape[1] * 0.3) ** 2) / (2 * (shape[0] / 8) ** 2)))
    return {"Pleural Effusion": blob, "Support Devices": 1 - blob}  # a standard and a private (99VECL) code


@pytest.fixture(scope="module")
def cr_source():
    return pydicom.dcmread(rg1_path(), stop_before_pixels=True)


def test_seg_over_a_real_cr_validates_and_keeps_the_maps(cr_source, tmp_path):
    maps = _maps((cr_source.Rows, cr_source.Columns))
    seg = build_grounding_seg(cr_source, maps, ALGORITHM, sr_uid="1.2.3")
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    assert dciodvfy_errors(path) == []
    back = hd.seg.segread(path)
    assert back.StudyInstanceUID == cr_source.StudyInstanceUID and back.PatientID == cr_source.PatientID
    assert back.SegmentationType == "FRACTIONAL"
    refs = back.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert [r.ReferencedSOPInstanceUID for r in refs] == [cr_source.SOPInstanceUID]
    for number, (name, heat) in enumerate(maps.items(), 1):
        desc = back.get_segment_description(number)
        assert desc.segment_label == name and desc.segmented_property_type == finding_concept(name)
        stored = back.get_pixels_by_source_instance(
            [cr_source.SOPInstanceUID], segment_numbers=[number], combine_segments=False
        )[0, :, :, 0]
        np.testing.assert_allclose(stored, heat, atol=1 / 255 + 1e-6)
    assert back.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99VECL"


#: What two SEGs of the same maps may differ in: creation times and the UIDs highdicom draws at random.
PER_RUN = {"InstanceCreationTime", "ContentTime", "ContributingEquipmentSequence", "DimensionOrganizationSequence",
           "DimensionIndexSequence"}


@pytest.mark.parametrize("shape,segments", [((1955, 1841), 3), ((64, 48), 1)])
def test_fast_seg_encodes_exactly_what_plain_highdicom_does(cr_source, shape, segments):
    """The fast path (no range re-scan, no interleaved copy) stores the same pixels and attributes as highdicom's
    fully checked one, for maps with values outside [0, 1] (clipped) and one or several segments."""
    source = cr_source.copy()
    source.Rows, source.Columns = shape
    rng = np.random.default_rng(0)
    names = ["Pleural Effusion", "Support Devices", "Cardiomegaly"][:segments]
    maps = {name: rng.uniform(-0.2, 1.2, shape).astype(np.float32) for name in names}
    fast = build_grounding_seg(source, maps, ALGORITHM, sr_uid="1.2.3")
    plain = build_grounding_seg(source, maps, ALGORITHM, sr_uid="1.2.3", full_checks=True)
    assert fast.PixelData == plain.PixelData
    assert fast.SegmentsOverlap == plain.SegmentsOverlap == ("UNDEFINED" if segments > 1 else "NO")
    assert {e.keyword for e in fast} == {e.keyword for e in plain}
    for element in plain:
        if element.keyword not in PER_RUN | {"PixelData"}:
            assert fast[element.tag] == element, element.keyword
    assert fast.file_meta.TransferSyntaxUID == JPEGLSLossless  # the default: lossless, the quantised maps kept
    frames = fast.pixel_array.reshape(segments, *shape)
    np.testing.assert_array_equal(frames[0], np.round(np.clip(maps[names[0]], 0, 1) * 255).astype(np.uint8))


def test_seg_uid_is_deterministic_and_changes_with_its_sr(cr_source):
    maps = _maps((cr_source.Rows, cr_source.Columns))
    a = build_grounding_seg(cr_source, maps, ALGORITHM, sr_uid="1.2.3")
    b = build_grounding_seg(cr_source, maps, ALGORITHM, sr_uid="1.2.3")
    c = build_grounding_seg(cr_source, maps, ALGORITHM, sr_uid="1.2.4")
    assert a.SOPInstanceUID == b.SOPInstanceUID != c.SOPInstanceUID
    assert a.SeriesNumber == SEGConfig().series_number


def test_binary_option_writes_the_thresholded_map(cr_source, tmp_path):
    maps = _maps((cr_source.Rows, cr_source.Columns))
    seg = build_grounding_seg(cr_source, maps, ALGORITHM, SEGConfig(binary_threshold=0.5), sr_uid="1.2.3")
    seg.save_as(tmp_path / "bin.dcm")
    assert dciodvfy_errors(tmp_path / "bin.dcm") == []
    back = hd.seg.segread(tmp_path / "bin.dcm")
    assert back.SegmentationType == "BINARY"
    stored = back.get_pixels_by_source_instance([cr_source.SOPInstanceUID], segment_numbers=[1])[0, :, :, 0]
    np.testing.assert_array_equal(stored.astype(bool), maps["Pleural Effusion"] >= 0.5)
    with pytest.raises(ValueError, match="binary_threshold"):
        SEGConfig(binary_threshold=0)


def test_seg_refuses_a_map_of_the_wrong_size(cr_source):
    with pytest.raises(ValueError, match="source image"):
        build_grounding_seg(cr_source, {"Pleural Effusion": np.zeros((10, 10))}, ALGORITHM, sr_uid="1.2.3")
    with pytest.raises(ValueError, match="no grounding maps"):
        build_grounding_seg(cr_source, {}, ALGORITHM, sr_uid="1.2.3")


def _config(**grounding):
    return {"deploy": {"bundle_root": None, "device": "cpu", "findings": ["Pleural Effusion", "Cardiomegaly"],
                       "site_thresholds": {"Pleural Effusion": 0.0, "Cardiomegaly": 1.0}, "grounding": grounding}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("study") / "dx.dcm"
    return [make_dx(path, (rng.random((96, 80)) * 4095).astype(np.uint16), bits_stored=12, PixelSpacing=[0.5, 0.5])]


def test_pipeline_writes_a_seg_for_present_findings_only_and_can_turn_it_off(study, tmp_path):
    from monai_vecl.deploy.pipeline import PipelineConfig, StudyPipeline

    with pytest.warns(UserWarning, match="UNTRAINED"):
        on = StudyPipeline(_config(method="attention", seg={"series_number": 9977}))
    result = on.process(study)
    assert [f.name for f in result.findings if f.present] == ["Pleural Effusion"]  # threshold 0 vs 1
    seg = result.seg
    assert seg is not None and seg.SeriesNumber == 9977 and seg.NumberOfFrames == 1
    assert seg.SegmentSequence[0].SegmentLabel == "Pleural Effusion"
    assert seg.StudyInstanceUID == result.sr.StudyInstanceUID
    seg.save_as(tmp_path / "seg.dcm")
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert hd.seg.segread(tmp_path / "seg.dcm").number_of_segments == 1  # readable as a SEG again
    assert on.process(study).seg.SOPInstanceUID == seg.SOPInstanceUID  # a re-run makes the same object
    with pytest.warns(UserWarning, match="UNTRAINED"):
        off = StudyPipeline(_config(enabled=False))
    assert off.process(study).seg is None and off.grounder is None
    with pytest.raises(ValueError, match="grounding"):
        PipelineConfig.from_mapping(_config(method="heatmap"))
