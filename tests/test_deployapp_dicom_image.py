"""DICOM → display grayscale: MONOCHROME1, rescale, windowing functions, VOI LUT, bit depth, codecs, bad input.

The expected values are written out from PS3.3 C.11 independently of the module (which uses pydicom's
transforms since the hand-written windowing was replaced): these tests are the regression guard."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from deployapp_dicom import make_dx, ramp, rg1_path
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, RLELossless

from monai_vecl.data.dicom_image import DicomImageError, decode_pixels, dicom_to_gray01


def _linear_window(v: np.ndarray, center: float, width: float) -> np.ndarray:
    # PS3.3 C.11.2.1.2.1, written out independently of the module under test
    out = (v - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(out, 0, 1)


def test_monochrome1_is_inverted_after_rescale_and_window(tmp_path):
    pixels = ramp()
    common = {
        "bits_stored": 12,
        "RescaleSlope": 2,
        "RescaleIntercept": -1000,
        "WindowCenter": 3000,
        "WindowWidth": 4000,
    }
    mono2 = dicom_to_gray01(pydicom.dcmread(make_dx(tmp_path / "m2.dcm", pixels, **common)))
    mono1 = dicom_to_gray01(pydicom.dcmread(make_dx(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", **common)))
    expected = _linear_window(pixels * 2.0 - 1000.0, 3000, 4000)
    np.testing.assert_allclose(mono2, expected, atol=1e-6)
    np.testing.assert_allclose(mono1, 1.0 - expected, atol=1e-6)
    assert mono2.dtype == np.float32 and mono2.min() == 0.0 and mono2.max() == 1.0


def test_rescale_moves_the_window_into_modality_units(tmp_path):
    # Stored 1000 with slope 0.5 and intercept 100 is modality value 600, the centre of a 600/201 window
    # (LINEAR: (600 - 599.5) / 200 + 0.5); read as stored values it would be far above the window.
    pixels = np.full((8, 8), 1000, dtype=np.uint16)
    pixels[0, 0], pixels[0, 1] = 0, 4000
    gray = dicom_to_gray01(
        pydicom.dcmread(
            make_dx(
                tmp_path / "r.dcm",
                pixels,
                bits_stored=12,
                RescaleSlope=0.5,
                RescaleIntercept=100,
                WindowCenter=600,
                WindowWidth=201,
            )
        )
    )
    assert gray[1, 1] == pytest.approx(0.5025, abs=1e-6)
    assert gray[0, 0] == 0.0 and gray[0, 1] == 1.0


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_window_functions_follow_the_standard(tmp_path, function):
    pixels = ramp(top=1023)
    gray = dicom_to_gray01(
        pydicom.dcmread(
            make_dx(
                tmp_path / "w.dcm", pixels, bits_stored=10, WindowCenter=512, WindowWidth=256, VOILUTFunction=function
            )
        )
    )
    v = pixels.astype(np.float64)
    if function == "SIGMOID":
        expected = 1 / (1 + np.exp(-4 * (v - 512) / 256))
    else:
        expected = np.clip((v - 512) / 256 + 0.5, 0, 1)
    np.testing.assert_allclose(gray, expected, atol=1e-6)


def test_second_window_is_used_when_asked(tmp_path):
    pixels = ramp(top=1023)
    ds = pydicom.dcmread(
        make_dx(tmp_path / "w2.dcm", pixels, bits_stored=10, WindowCenter=[512, 100], WindowWidth=[256, 50])
    )
    np.testing.assert_allclose(
        dicom_to_gray01(ds, voi_index=1), _linear_window(pixels.astype(float), 100, 50), atol=1e-6
    )


def test_voi_lut_sequence_is_preferred_and_scaled_by_its_range(tmp_path):
    pixels = ramp(top=255, dtype="uint16")
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.add_new("LUTData", "US", [4 * i for i in range(256)])  # declared 16-bit, only fills 0..1020
    ds = pydicom.dcmread(
        make_dx(tmp_path / "lut.dcm", pixels, bits_stored=8, WindowCenter=10, WindowWidth=2, VOILUTSequence=[item])
    )
    np.testing.assert_allclose(dicom_to_gray01(ds), pixels / 255.0, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 12, 15])
def test_no_voi_uses_the_stored_bit_depth(tmp_path, bits):
    top = 2**bits - 1
    pixels = ramp(top=top, dtype="uint8" if bits == 8 else "uint16")
    ds = pydicom.dcmread(make_dx(tmp_path / "b.dcm", pixels, bits_stored=bits))
    np.testing.assert_allclose(dicom_to_gray01(ds), pixels / top, atol=1e-6)
    half = pixels // 2  # an image using half the range stays half as bright, unless min_max is asked for
    ds = pydicom.dcmread(make_dx(tmp_path / "h.dcm", half, bits_stored=bits))
    assert dicom_to_gray01(ds).max() == pytest.approx(half.max() / top, abs=1e-6)
    assert dicom_to_gray01(ds, no_voi="min_max").max() == pytest.approx(1.0)


def test_real_cr_monochrome1_15bit_matches_the_display_formula():
    ds = pydicom.dcmread(rg1_path())
    assert (ds.PhotometricInterpretation, ds.BitsStored) == ("MONOCHROME1", 15)
    stored = ds.pixel_array.astype(np.float64)
    expected = 1.0 - _linear_window(stored, float(ds.WindowCenter), float(ds.WindowWidth))
    gray = dicom_to_gray01(ds)
    np.testing.assert_allclose(gray, expected, atol=1e-6)
    # Inversion: lungs (air, low attenuation) must be darker than the mediastinum in the middle column.
    h, w = gray.shape
    lung, mediastinum = (
        gray[h // 3 : h // 2, w // 5 : w // 3].mean(),
        gray[h // 3 : h // 2, w // 2 - 40 : w // 2 + 40].mean(),
    )
    assert lung < mediastinum


def test_jpeg2000_variants_decode_like_the_uncompressed_original():
    reference = dicom_to_gray01(pydicom.dcmread(rg1_path("RG1_UNCR.dcm")))
    lossless = dicom_to_gray01(pydicom.dcmread(rg1_path("RG1_J2KR.dcm")))
    lossy = dicom_to_gray01(pydicom.dcmread(rg1_path("RG1_J2KI.dcm")))
    np.testing.assert_array_equal(lossless, reference)
    assert 0 < np.abs(lossy - reference).mean() < 0.01


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless])
def test_rle_and_jpeg_ls_decode_exactly(tmp_path, syntax):
    pixels = ramp(top=4095)
    plain = dicom_to_gray01(pydicom.dcmread(make_dx(tmp_path / "p.dcm", pixels, bits_stored=12)))
    ds = pydicom.dcmread(make_dx(tmp_path / "c.dcm", pixels, bits_stored=12, compress=syntax))
    assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(dicom_to_gray01(ds), plain)


def test_bad_pixel_data_gives_clear_errors(tmp_path):
    path = make_dx(tmp_path / "ok.dcm", ramp(), bits_stored=12)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    with pytest.raises(DicomImageError, match="no Pixel Data"):
        decode_pixels(ds)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    with pytest.raises(DicomImageError, match="cannot decode"):
        dicom_to_gray01(ds)
    rgb = pydicom.dcmread(path)
    rgb.PhotometricInterpretation, rgb.SamplesPerPixel = "RGB", 3
    with pytest.raises(DicomImageError, match="grayscale"):
        dicom_to_gray01(rgb)
    multi = pydicom.dcmread(path)
    multi.NumberOfFrames = 2
    with pytest.raises(DicomImageError, match="single-frame"):
        dicom_to_gray01(multi)
    narrow = pydicom.dcmread(make_dx(tmp_path / "n.dcm", ramp(), bits_stored=12, WindowCenter=100, WindowWidth=0.5))
    with pytest.raises(DicomImageError, match="Window Width must be greater than or equal to 1"):
        dicom_to_gray01(narrow)


def test_bits_above_bits_stored_are_ignored_and_signed_values_sign_extended(tmp_path):
    noisy = ramp(top=4095) | 0xF000  # overlay/garbage in the 4 unused high bits
    ds = pydicom.dcmread(make_dx(tmp_path / "hb.dcm", noisy, bits_stored=12))
    np.testing.assert_allclose(dicom_to_gray01(ds), ramp(top=4095) / 4095, atol=1e-6)
    signed = np.array([[0xFFF, 0x800, 0x7FF, 0]], dtype=np.uint16).view(np.int16)  # 12-bit -1, -2048, 2047, 0
    ds = pydicom.dcmread(make_dx(tmp_path / "s.dcm", signed, bits_stored=12, signed=True))
    np.testing.assert_allclose(dicom_to_gray01(ds)[0], (np.array([-1, -2048, 2047, 0]) + 2048) / 4095, atol=1e-6)


def test_empty_window_falls_back_and_broken_voi_lut_is_reported(tmp_path):
    pixels = ramp(top=4095)
    empty = pydicom.dcmread(make_dx(tmp_path / "e.dcm", pixels, bits_stored=12, WindowCenter="", WindowWidth=""))
    np.testing.assert_allclose(dicom_to_gray01(empty), pixels / 4095, atol=1e-6)
    item = Dataset()
    item.LUTDescriptor = [16, 0, 9]  # 9 bits per entry is not allowed (PS3.3 C.11.2.1.1)
    item.add_new("LUTData", "US", list(range(16)))
    broken = pydicom.dcmread(make_dx(tmp_path / "v.dcm", pixels, bits_stored=12, VOILUTSequence=[item]))
    with pytest.raises(DicomImageError, match="VOI"):
        dicom_to_gray01(broken)


def test_a_window_index_past_the_last_uses_the_last_and_a_linear_width_of_one_is_a_threshold(tmp_path):
    pixels = ramp(top=1023)
    ds = pydicom.dcmread(
        make_dx(tmp_path / "w3.dcm", pixels, bits_stored=10, WindowCenter=[512, 100], WindowWidth=[256, 50])
    )
    np.testing.assert_array_equal(dicom_to_gray01(ds, voi_index=5), dicom_to_gray01(ds, voi_index=1))
    hard = pydicom.dcmread(make_dx(tmp_path / "t.dcm", pixels, bits_stored=10, WindowCenter=300, WindowWidth=1))
    # C.11.2.1.2.1 with width 1: x <= c - 0.5 is black, above is white
    np.testing.assert_array_equal(dicom_to_gray01(hard), (pixels > 299.5).astype(np.float32))
