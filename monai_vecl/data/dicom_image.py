"""DICOM image → grayscale float image in [0, 1], as a radiologist's viewer would show it: the one DICOM
display reader (the deployment and any reader of DICOM images use it; it lives in the data layer so
that every layer above may).

The display pipeline of PS3.3 C.11 (modality LUT → VOI LUT / window → presentation) is applied
in that order, with pydicom's own transforms: ``apply_modality_lut`` (rescale slope/intercept or a
Modality LUT Sequence), then ``apply_voi_lut`` (a VOI LUT Sequence, else Window Center/Width with
the LINEAR, LINEAR_EXACT or SIGMOID function of C.11.2.1.2-3), whose output is scaled to [0, 1] by
the transform's own output range; MONOCHROME1 is inverted last so bright always means dense. What
pydicom leaves to the caller is done here: that range, an image without any VOI transform
(:data:`NO_VOI_MODES`) and the inversion. Compressed transfer syntaxes (JPEG 2000, JPEG-LS, RLE,
JPEG) are decoded by pydicom's pixel handlers (pylibjpeg, pyjpegls, gdcm from the ``deploy`` extra).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

#: What to do when an image carries no VOI transform: stretch the stored bit depth's full range
#: (keeps 8-bit exports identical to their PNG source) or the image's own min..max.
NO_VOI_MODES = ("bit_depth", "min_max")


class DicomImageError(ValueError):
    """The instance has no usable grayscale pixel data; the message says why."""


def decode_pixels(ds: Dataset) -> np.ndarray:
    """Stored pixel values [H, W] of a single-frame grayscale instance, decoded whatever the transfer syntax."""
    if "PixelData" not in ds:
        raise DicomImageError("instance has no Pixel Data (7FE0,0010)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if int(ds.get("SamplesPerPixel", 1)) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomImageError(f"expected a grayscale image (MONOCHROME1/2), got {photometric or 'no'} photometric")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomImageError(f"expected a single-frame image, got {ds.NumberOfFrames} frames")
    try:
        arr = ds.pixel_array
    except Exception as err:  # pydicom raises many types for truncated data or a missing codec
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise DicomImageError(f"cannot decode pixel data ({name}): {err}") from err
    if arr.ndim != 2:
        raise DicomImageError(f"expected a 2-D pixel array, got shape {arr.shape}")
    return arr


def _bit_depth_range(ds: Dataset) -> tuple[float, float]:
    """Modality-LUT output of the smallest and largest storable pixel values."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        stored = np.array([0, 2**bits - 1])
    out = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    return float(out.min()), float(out.max())


def _voi_to_unit(values: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    """pydicom's VOI transform ``index`` (the VOI LUT Sequence preferred, else the window) of modality values,
    scaled to [0, 1] by the transform's own output range.

    A window's range is what it gives below and above itself (the modality range of the stored bit
    depth); a LUT's is the span of the entries it holds, not its declared entry bit depth (vendors often
    declare 16 bits and fill 12).
    """
    if _has_value(ds, "VOILUTSequence"):
        descriptor = ds.VOILUTSequence[index].LUTDescriptor
        entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
        domain = np.arange(first, first + entries)
        values = np.rint(values).astype(np.int64)  # a LUT is indexed by integer input
    else:
        domain = np.array([-np.inf, np.inf])
    mapped = np.asarray(apply_voi_lut(values, ds, index), dtype=np.float64)
    ends = np.asarray(apply_voi_lut(domain, ds, index), dtype=np.float64)
    return _stretch(mapped, float(ends.min()), float(ends.max()))


def _voi_count(ds: Dataset) -> int:
    """How many VOI transforms ``ds`` offers (LUT items, else windows); 0 when it has none."""
    if _has_value(ds, "VOILUTSequence"):
        return len(ds.VOILUTSequence)
    if _has_value(ds, "WindowCenter") and _has_value(ds, "WindowWidth"):
        return ds["WindowCenter"].VM
    return 0


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:  # a constant image: nothing to show, map to black rather than divide by zero
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _has_value(ds: Dataset, keyword: str) -> bool:
    return keyword in ds and ds[keyword].value not in (None, "", b"", [])


def _display_values(ds: Dataset, stored: np.ndarray, voi_index: int, no_voi: str) -> np.ndarray:
    """Modality LUT then the VOI transform (or the ``no_voi`` stretch), in [0, 1] before any inversion."""
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    count = _voi_count(ds)
    if count:
        return _voi_to_unit(values, ds, min(voi_index, count - 1))  # past the last: the last one
    if no_voi == "bit_depth":
        return _stretch(values, *_bit_depth_range(ds))
    return _stretch(values, float(values.min()), float(values.max()))


def dicom_to_gray01(ds: Dataset, voi_index: int = 0, no_voi: str = "bit_depth") -> np.ndarray:
    """Display-ready grayscale image [H, W] float32 in [0, 1] (0 = black) from a DICOM instance.

    Args:
        ds: a single-frame MONOCHROME1/2 instance with pixel data.
        voi_index: which of several VOI LUTs / windows to use (the first is the modality's default).
        no_voi: scaling when there is no VOI transform, one of :data:`NO_VOI_MODES`.

    Raises:
        DicomImageError: no pixel data, colour or multi-frame data, an undecodable codec or truncated
            data, or an invalid VOI transform.
    """
    if no_voi not in NO_VOI_MODES:
        raise ValueError(f"no_voi must be one of {NO_VOI_MODES}, got {no_voi!r}")
    stored = decode_pixels(ds)
    try:
        out = _display_values(ds, stored, voi_index, no_voi)
    except DicomImageError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, NotImplementedError) as err:
        raise DicomImageError(f"invalid Modality LUT / VOI attributes: {type(err).__name__}: {err}") from err
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 1.0 - out
    return np.clip(out, 0.0, 1.0).astype(np.float32)
