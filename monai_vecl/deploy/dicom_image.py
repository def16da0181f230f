"""DICOM image → grayscale float image in [0, 1], as a radiologist's viewer would show it.

The display pipeline of PS3.3 C.11 (modality LUT → VOI LUT / window → presentation) is applied
in that order: rescale slope/intercept (or a Modality LUT Sequence), then the first VOI transform
(a VOI LUT Sequence, else Window Center/Width with the LINEAR, LINEAR_EXACT or SIGMOID function
of C.11.2.1.2-3), and MONOCHROME1 is inverted last so bright always means dense. Compressed
transfer syntaxes (JPEG 2000, JPEG-LS, RLE, JPEG) are decoded by pydicom's pixel handlers
(pylibjpeg, pyjpegls, gdcm from the ``deploy`` extra).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi

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


def window_to_unit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window Center/Width transform (PS3.3 C.11.2.1.2 and C.11.2.1.3) with output in [0, 1]."""
    function = function.upper()
    if function == "SIGMOID":
        if width <= 0:
            raise DicomImageError(f"SIGMOID window width must be > 0, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR":
        if width < 1:
            raise DicomImageError(f"LINEAR window width must be >= 1, got {width}")
        center, width = center - 0.5, width - 1.0
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise DicomImageError(f"LINEAR_EXACT window width must be > 0, got {width}")
    else:
        raise DicomImageError(f"unsupported VOI LUT Function {function!r}")
    if width == 0:  # LINEAR with width 1 is a hard threshold at the centre
        return (values > center).astype(np.float64)
    return np.clip((values - center) / width + 0.5, 0.0, 1.0)


def _multi_value(ds: Dataset, keyword: str, index: int) -> float:
    elem = ds[keyword]
    value = elem.value[min(index, elem.VM - 1)] if elem.VM > 1 else elem.value
    return float(value)


def _bit_depth_range(ds: Dataset) -> tuple[float, float]:
    """Modality-LUT output of the smallest and largest storable pixel values."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        stored = np.array([0, 2**bits - 1])
    out = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    return float(out.min()), float(out.max())


def _apply_voi_lut_to_unit(values: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    """VOI LUT Sequence item ``index`` applied to modality values, scaled by the LUT's own output range.

    The LUT's actual range rather than its declared entry bit depth: vendors often declare 16 bits and fill 12.
    """
    descriptor = ds.VOILUTSequence[index].LUTDescriptor
    entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
    table = np.asarray(apply_voi(np.arange(first, first + entries), ds, index), dtype=np.float64)
    mapped = np.asarray(apply_voi(np.rint(values).astype(np.int64), ds, index), dtype=np.float64)
    return _stretch(mapped, float(table.min()), float(table.max()))


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:  # a constant image: nothing to show, map to black rather than divide by zero
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _has_value(ds: Dataset, keyword: str) -> bool:
    return keyword in ds and ds[keyword].value not in (None, "", b"", [])


def _display_values(ds: Dataset, stored: np.ndarray, voi_index: int, no_voi: str) -> np.ndarray:
    """Modality LUT then the VOI transform (or the ``no_voi`` stretch), in [0, 1] before any inversion."""
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if _has_value(ds, "VOILUTSequence"):
        return _apply_voi_lut_to_unit(values, ds, min(voi_index, len(ds.VOILUTSequence) - 1))
    if _has_value(ds, "WindowCenter") and _has_value(ds, "WindowWidth"):
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        center, width = _multi_value(ds, "WindowCenter", voi_index), _multi_value(ds, "WindowWidth", voi_index)
        return window_to_unit(values, center, width, function)
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
