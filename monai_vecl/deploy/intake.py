"""Checks on an incoming C-STORE data set before the gateway spools it, mapped to DIMSE statuses.

Statuses follow DICOM PS3.4 Annex B (Storage Service Class) and PS3.7 Annex C:
0x0122 refused, SOP Class not supported; 0xA900 error, data set does not match SOP Class
(missing or truncated pixel data, missing UIDs); 0xC210 cannot understand (not decodable DICOM);
0xA700 refused, out of resources (the spool could not be written); 0xC211 (same "cannot
understand" family) for an unexpected failure while handling the instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC210
PROCESSING_FAILURE = 0xC211

# Transfer syntaxes whose codestreams end with an end-of-image/end-of-codestream marker (FFD9):
# JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000 families.
_MARKER_PREFIXES = ("1.2.840.10008.1.2.4.5", "1.2.840.10008.1.2.4.7", "1.2.840.10008.1.2.4.8", "1.2.840.10008.1.2.4.9")
_EOI = b"\xff\xd9"


class IntakeError(Exception):
    """An instance the gateway refuses; ``status`` is the DIMSE status to answer with."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        # Error Comment (0000,0902) is LO: at most 64 characters.
        self.comment = comment[:64]


@dataclass(frozen=True)
class Accepted:
    study_uid: str
    sop_uid: str
    sop_class_uid: str


def decode(encoded: bytes) -> Dataset:
    """Parse a C-STORE data set in DICOM file format (preamble + file meta + data set)."""
    try:
        ds = dcmread(BytesIO(encoded))
        # Parsing is lazy: touching every element surfaces a garbled body now, not in the app later.
        for _ in ds.iterall():
            pass
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError, OverflowError, NotImplementedError) as e:
        raise IntakeError(CANNOT_UNDERSTAND, f"not decodable DICOM: {type(e).__name__}") from e
    # Arbitrary bytes often parse as a few private elements; a data set without a SOP Class is not DICOM.
    if not ds.get("SOPClassUID"):
        raise IntakeError(CANNOT_UNDERSTAND, "not a DICOM data set (no SOP Class UID)")
    return ds


def _check_pixel_data(ds: Dataset, transfer_syntax: UID) -> None:
    if "PixelData" not in ds:
        raise IntakeError(DOES_NOT_MATCH_SOP_CLASS, "missing Pixel Data (7FE0,0010)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits, samples = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as e:
        raise IntakeError(DOES_NOT_MATCH_SOP_CLASS, "missing or invalid image pixel module") from e
    data = ds.PixelData
    if transfer_syntax.is_encapsulated:
        try:
            fragments = list(generate_fragments(data))
        except (ValueError, EOFError) as e:
            raise IntakeError(DOES_NOT_MATCH_SOP_CLASS, "truncated encapsulated Pixel Data") from e
        if not fragments or not any(fragments):
            raise IntakeError(DOES_NOT_MATCH_SOP_CLASS, "empty encapsulated Pixel Data")
        if str(transfer_syntax).startswith(_MARKER_PREFIXES) and not fragments[-1].rstrip(b"\x00").endswith(_EOI):
            raise IntakeError(DOES_NOT_MATCH_SOP_CLASS, "truncated compressed Pixel Data (no end marker)")
        return
    expected = (rows * cols * samples * frames * bits + 7) // 8
    if len(data) < expected:
        raise IntakeError(DOES_NOT_MATCH_SOP_CLASS, f"truncated Pixel Data ({len(data)} of {expected} bytes)")


def check_instance(ds: Dataset, command_sop_class: str, accepted_sop_classes: frozenset[str]) -> Accepted:
    """Raise :class:`IntakeError` unless ``ds`` is a complete image of an accepted SOP class."""
    if command_sop_class not in accepted_sop_classes:
        raise IntakeError(SOP_CLASS_NOT_SUPPORTED, f"SOP Class {command_sop_class} not accepted")
    if ds.get("SOPClassUID") != command_sop_class:
        raise IntakeError(DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from the C-STORE request")
    study_uid, sop_uid = ds.get("StudyInstanceUID"), ds.get("SOPInstanceUID")
    if not study_uid or not sop_uid:
        raise IntakeError(DOES_NOT_MATCH_SOP_CLASS, "missing Study or SOP Instance UID")
    _check_pixel_data(ds, ds.file_meta.TransferSyntaxUID)
    return Accepted(str(study_uid), str(sop_uid), str(command_sop_class))
